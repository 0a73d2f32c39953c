"""`AnomalyDetector`: train a model on normal data and flag what it finds surprising, with
scikit-learn's outlier-detector conventions. The score kinds are in `vaekit.anomaly.scores`,
the input kinds in `vaekit.anomaly.inputs`; the pixel mode is the fitted model's own.

A detector loaded from a plain `vaekit train` run folder fits the parts its score needs (the
local models, the combined score's reference) on the run's training data when first asked,
in memory: scoring never writes into the run folder. `fit_parts()` then `keep_parts()` (the
`vaekit fit-scores RUN` command) fits them once and keeps them beside the checkpoint, where
later loads read them back.
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.utils.validation import check_is_fitted

from vaekit.anomaly.background import LocalPixelModel, fit_local_model
from vaekit.anomaly.calibration import fit_reference
from vaekit.anomaly.inputs import (
    DEFAULT_IMAGE_PIXELS,
    INPUT_KINDS,
    Images,
    InputKind,
    input_kind_of,
)
from vaekit.anomaly.scores import (
    SCORE_ALIASES,
    SCORE_KINDS,
    ScoreInputs,
    ScoreKind,
    combined_views,
    upper_tailed,
    view_scores,
)
from vaekit.checkpoint import CHECKPOINT_NAME, TrainingState, load_checkpoint, save_checkpoint
from vaekit.config import apply_overrides, preset
from vaekit.data.sources import Dataset
from vaekit.data.splits import load_splits
from vaekit.device import may_use_cuda
from vaekit.errors import DataError, VaekitError
from vaekit.fileio import atomic_write_bytes, atomic_write_text
from vaekit.run import RunFolder

DETECTOR_FILE = RunFolder.DETECTOR
BACKGROUND_FILE, BACKGROUND_SPEC_FILE = RunFolder.BACKGROUND, RunFolder.BACKGROUND_SPEC
INTENSITY_FILE, INTENSITY_SPEC_FILE = RunFolder.INTENSITY, RunFolder.INTENSITY_SPEC
REFERENCE_FILE = RunFolder.SCORE_REFERENCE
# Normal examples whose scores the combined score is calibrated on: held out of training
# (up to this many, and at most a tenth of the data), since the model rates its own training
# examples as more normal than new ones.
REFERENCE_IMAGES = 2000
INTENSITY_FIT_IMAGES = 12000  # the local intensity model learns from at most this many
# The VAE trains for the preset's epochs or this many updates, whichever is longer: 20,000
# images get 90 epochs instead of 30 (shear 0.885 -> 0.902, every corruption >= 0.90 in
# benchmarks/anomaly.py --corruptions), one digit of MNIST about 300 (validation digits in
# benchmarks/anomaly_selection.py no worse than at 100); 54,000 images or more train as before.
MIN_UPDATES = 25200


def write_scores(path: Path, scores: np.ndarray, labels=None, indices=None) -> None:
    """A CSV of index,score_bits[,label] rows (all examples, or those in `indices`)."""
    idx = range(len(scores)) if indices is None else indices
    rows = ["index,score_bits" + (",label" if labels is not None else "")]
    for i in idx:
        rows.append(f"{i},{scores[i]:.4f}" + (f",{labels[i]}" if labels is not None else ""))
    atomic_write_text(path, "\n".join(rows) + "\n")


class _RenamedParameters(type):
    """Accepts `score=` (the old name of `score_kind`) with a FutureWarning. An attribute or
    parameter named `score` would shadow scikit-learn's `score` method, so the old name is
    translated before the constructor sees it."""

    def __call__(cls, *args: Any, **kwargs: Any):
        if "score" in kwargs:
            warnings.warn(
                "AnomalyDetector(score=...) is deprecated: use score_kind=... (`score` "
                "shadowed scikit-learn's score method)",
                FutureWarning,
                stacklevel=2,
            )
            kwargs.setdefault("score_kind", kwargs.pop("score"))
        return super().__call__(*args, **kwargs)


class AnomalyDetector(OutlierMixin, BaseEstimator, metaclass=_RenamedParameters):
    """A VAE anomaly detector with scikit-learn's outlier-detector interface.

    `fit(X)` trains a VAE on normal data X: images (N, H, W) / (N, C, H, W) as uint8 or
    floats in [0, 1], or tabular rows (N, D) (standardized, Gaussian decoder).
    `score_samples` is minus the score in bits (higher = more normal); `predict` gives +1 for
    inliers and -1 for outliers against a threshold set from `contamination` on the training
    data, or by `calibrate(X_normal, quantile)` on held-out normal data.
    `score_kind="auto"` (the default) is `combined`: every score kind the data allows, each
    as a tail probability under normal examples held out of training (up to
    REFERENCE_IMAGES, a tenth of X at most), combined by Fisher's method within two views
    (the VAE's kinds; the local intensity model's) and by the smaller view p-value across
    them, calibrated again (`anomaly.calibration`). Other kinds fit only what they need. The VAE
    trains for the preset's epochs or MIN_UPDATES updates, whichever is longer, unless
    `epochs` (or a `train.epochs=` override) says otherwise. `pixels` is the pixel mode the
    model is trained with (images only; default dynamic-binary). Scoring runs on the device
    the VAE trained on.
    `intensity_epochs` is the local intensity model's training length (at least 200 updates
    on small data): 15 by default, about as long as 5 epochs of vaekit 0.5's 256-way model.
    The old name of `score_kind`, `score`, still works and warns.
    """

    # the fitted parts, by the name score kinds use for them (`ScoreKind.background`, ...)
    PARTS = ("background", "intensity", "reference")

    def __init__(
        self,
        preset: str = "anomaly",
        score_kind: str = "auto",
        k: int = 100,
        pixels: str | None = None,
        epochs: int | None = None,
        contamination: float = 0.1,
        seed: int = 0,
        overrides: tuple[str, ...] = (),
        progress: bool = False,
        intensity_epochs: int = 15,
    ):
        self.preset = preset
        self.score_kind = score_kind
        self.k = k
        self.pixels = pixels
        self.epochs = epochs
        self.contamination = contamination
        self.seed = seed
        self.overrides = overrides
        self.progress = progress
        self.intensity_epochs = intensity_epochs

    # ---- input handling ------------------------------------------------------------------

    def _input(self) -> InputKind:
        return INPUT_KINDS.get(self.input_kind_)()

    def _prepare(self, X: Any, fitting: bool) -> torch.Tensor:
        """Validate X (scikit-learn's checks, then ours) and turn it into model inputs."""
        kind = input_kind_of(X)
        if fitting:
            self.input_kind_ = kind
        elif kind != self.input_kind_:
            raise DataError(
                f"the detector was fitted on {self.input_kind_}; X has shape {np.shape(X)}"
            )
        return self._input().prepare(self, X, fitting)

    def _ratio_applies(self) -> bool:
        return self._input().single_channel(self) and self.model_.pixels.binary

    def _intensity_applies(self) -> bool:
        return self._input().single_channel(self)

    def _applies(self, part: str) -> bool:
        """Whether `part` exists for this detector's data and model (the local models are
        for single-channel images; the background model for binary ones)."""
        applies = {"background": self._ratio_applies, "intensity": self._intensity_applies}
        return applies.get(part, lambda: True)()

    def _score_kind(self, score: str | None = None) -> str:
        """The score in use: `score`, else the detector's, with "auto" resolved."""
        score = score or self.score_kind
        return SCORE_ALIASES.get(score, score)

    def _kind(self, score: str | None = None) -> ScoreKind:
        try:
            return SCORE_KINDS.get(self._score_kind(score))()
        except ValueError as e:
            choices = ", ".join((*SCORE_ALIASES, *SCORE_KINDS))
            raise VaekitError(
                f"unknown score {score or self.score_kind!r}; choose from {choices}"
            ) from e

    def _training_pixels(self) -> str:
        """The pixel mode the model is trained with (then it is the model's own)."""
        return self._input().pixels or self.pixels or DEFAULT_IMAGE_PIXELS

    # ---- scikit-learn interface ----------------------------------------------------------

    def fit(self, X: Any, y: Any = None) -> AnomalyDetector:
        """Train the VAE on (normal) X and set the threshold from `contamination`."""
        kind = self._kind()
        if not 0.0 < self.contamination < 0.5:
            raise VaekitError("contamination must be in (0, 0.5)")
        data = self._prepare(X, fitting=True)
        if len(data) < 2:
            raise DataError("need at least 2 examples to fit")
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(data))
        held_out = order[:0]
        if kind.reference and len(data) >= 20:
            held_out = order[: min(REFERENCE_IMAGES, len(data) // 10)]
        device = self._train_model(data, np.sort(order[len(held_out) :]), order[len(held_out) :])
        fitted = data[np.sort(order[len(held_out) :])]
        self.background_ = self.intensity_ = self.reference_ = None
        self._fit_local_parts(kind, fitted, device)
        if kind.reference:
            # held-out normal examples; with fewer than 20 the training ones stand in
            normal = data[held_out] if len(held_out) else data[:REFERENCE_IMAGES]
            self.reference_ = self._fit_reference(normal)
        self.offset_ = float(np.percentile(self.score_samples(X), 100 * self.contamination))
        return self

    def _train_model(self, data: torch.Tensor, fit_idx: np.ndarray, order: np.ndarray) -> str:
        """Train the VAE on `data[fit_idx]`, watching a tenth of it; returns its device."""
        from vaekit.training import resolve_device, train

        cfg = apply_overrides(preset(self.preset), list(self.overrides))
        cfg.model.pixels = self._training_pixels()
        cfg.train.seed = self.seed
        cfg.train.data = "<in-memory>"
        if self.epochs is not None:
            cfg.train.epochs = self.epochs
        watch = order[: max(1, len(fit_idx) // 10)]
        cfg.train.batch_size = min(cfg.train.batch_size, len(fit_idx))
        if self.epochs is None and not any(o.startswith("train.epochs=") for o in self.overrides):
            # small data: more epochs than the preset's, up to MIN_UPDATES updates
            per_epoch = math.ceil(len(fit_idx) / cfg.train.batch_size)
            cfg.train.epochs = max(cfg.train.epochs, math.ceil(MIN_UPDATES / per_epoch))
        arrays = data.numpy()
        with tempfile.TemporaryDirectory(prefix="vaekit-detector-") as tmp:
            train(
                cfg,
                tmp,
                progress=self.progress,
                dataset=Dataset("fit", arrays[fit_idx], arrays[watch]),
            )
            # Score where it trained: a GPU-trained conv detector is slow to score on a CPU.
            device = str(resolve_device(cfg.train.device))
            self.model_, self.config_, _ = load_checkpoint(tmp, map_location=device)
            self.training_metrics_ = RunFolder(tmp).read_metrics()
        return device

    def _fit_local_parts(self, kind: ScoreKind, images: torch.Tensor, device: str) -> None:
        """Fit the local models `kind` needs on `images`; a strict kind whose model does not
        apply to this data is refused, the combined score leaves it out."""
        name = self._score_kind()
        if kind.background:
            if self._ratio_applies():
                self.background_ = self._fit_background(images, device)
            elif kind.strict:
                raise VaekitError(
                    f"the {name} score needs single-channel images with binary pixels; this "
                    f"detector has {self.input_kind_} data and {self.model_.pixels.name} pixels"
                )
        if kind.intensity:
            if self._intensity_applies():
                self.intensity_ = self._fit_intensity(images, device)
            elif kind.strict:
                raise VaekitError(
                    f"the {name} score needs single-channel images; this detector has "
                    f"{self.input_kind_} data shaped {tuple(images.shape[1:])}"
                )

    def _fit_background(self, images: torch.Tensor, device: str = "cpu") -> LocalPixelModel:
        """The ratio score's local background model, on binarized `images`."""
        return fit_local_model(
            images, self.model_.pixels, seed=self.seed, device=device, progress=self.progress
        )

    def _fit_intensity(self, images: torch.Tensor, device: str = "cpu") -> LocalPixelModel:
        """The local intensity model of the `local` scores, on up to INTENSITY_FIT_IMAGES."""
        if len(images) > INTENSITY_FIT_IMAGES:
            g = torch.Generator().manual_seed(self.seed)
            images = images[torch.randperm(len(images), generator=g)[:INTENSITY_FIT_IMAGES]]
        # 256 outputs per pixel need more updates than a small data set's 5 epochs give
        return fit_local_model(
            images,
            None,
            epochs=self.intensity_epochs,
            seed=self.seed,
            device=device,
            progress=self.progress,
            min_steps=200,
        )

    def _inputs(self, data: torch.Tensor, kind: ScoreKind | None = None) -> ScoreInputs:
        """The score inputs of the detector's inputs `data`; a fitted part that is missing is
        given as a callable that fits it when a kind first asks (plain run folders)."""
        # Scored in float64: float32 matmuls round differently for different batch sizes,
        # and an example's score must not depend on the examples scored beside it.
        model = copy.deepcopy(self.model_).double()
        parts = {p: self._part_or_fit(p) if self._applies(p) else None for p in self.PARTS}
        return ScoreInputs(
            model,
            self.model_.pixels.prepare(data, train=False),
            self.k,
            self.seed,
            images=data if self._input().has_images else None,
            levels=kind is not None and kind.levels,
            **parts,
        )

    def _part_or_fit(self, part: str) -> Any:
        value = getattr(self, f"{part}_", None)
        if value is not None:
            return value
        if getattr(self, "run_dir_", None) is None:
            return None
        return lambda: self._fit_part(part)

    def _fit_part(self, part: str, note: bool = True) -> Any:
        """Fit a missing part on the run's training data, in memory (said on stderr)."""
        t0 = time.perf_counter()
        train = self._run_training_images()
        value = {
            "background": self._fit_background,
            "intensity": self._fit_intensity,
            "reference": self._fit_reference_on_run,
        }[part](train)
        setattr(self, f"{part}_", value)
        self.fitted_now_ = [*getattr(self, "fitted_now_", []), part]
        if self.progress and note:
            print(
                f"note: fitted the score's {part} on the run's training data in memory "
                f"({time.perf_counter() - t0:.0f} s); `vaekit fit-scores {self.run_dir_}` "
                "keeps it in the run folder",
                file=sys.stderr,
            )
        return value

    def _fit_reference_on_run(self, train: torch.Tensor) -> dict[str, Any]:
        """The reference on up to REFERENCE_IMAGES of a run's training images."""
        g = torch.Generator().manual_seed(self.seed)
        return self._fit_reference(
            train[torch.randperm(len(train), generator=g)[:REFERENCE_IMAGES]]
        )

    def _fit_reference(self, normal: torch.Tensor) -> dict[str, Any]:
        """The quantiles of each combined kind's scores on normal examples (`calibration`)."""
        scores = view_scores(self._inputs(normal))
        return fit_reference(scores, upper=upper_tailed(), views=combined_views())

    def view_scores(self, X: Any) -> dict[str, np.ndarray]:
        """The scores (bits) of every kind the combined score combines that applies here."""
        check_is_fitted(self, "model_")
        return view_scores(self._inputs(self._prepare(X, fitting=False)))

    def anomaly_score(self, X: Any, score: str | None = None) -> np.ndarray:
        """Scores in bits, higher = more anomalous (`score` overrides the detector's)."""
        check_is_fitted(self, "model_")
        kind = self._kind(score)
        name = self._score_kind(score)
        if kind.intensity and kind.strict and not self._intensity_applies():
            raise VaekitError(f"the {name} score needs single-channel images")
        if problem := kind.problem(self.model_):
            raise VaekitError(problem)
        return self._inputs(self._prepare(X, fitting=False), kind).score(name)

    def fit_parts(self, score: str | None = None) -> list[str]:
        """Fit, on the run's training data, every part the score needs that this detector
        lacks (a detector loaded from a plain run folder); returns what it fitted."""
        kind, before = self._kind(score), list(getattr(self, "fitted_now_", []))
        for part in self.PARTS:
            if (
                getattr(kind, part)
                and self._applies(part)
                and getattr(self, f"{part}_", None) is None
            ):
                if getattr(self, "run_dir_", None) is None:
                    raise VaekitError(
                        "only a detector loaded from a run folder fits its parts later"
                    )
                self._fit_part(part, note=False)
        return getattr(self, "fitted_now_", [])[len(before) :]

    def keep_parts(self, run_dir: str | Path | None = None) -> list[Path]:
        """Write the fitted parts into the run folder (each atomically), where `load` reads
        them back; returns the files written."""
        folder = Path(run_dir if run_dir is not None else self.run_dir_)
        written = []
        for model, weights, spec in (
            (getattr(self, "background_", None), BACKGROUND_FILE, BACKGROUND_SPEC_FILE),
            (getattr(self, "intensity_", None), INTENSITY_FILE, INTENSITY_SPEC_FILE),
        ):
            if model is not None:
                _save_local_model(folder, model, weights, spec)
                written += [folder / weights, folder / spec]
        if getattr(self, "reference_", None) is not None:
            atomic_write_text(folder / REFERENCE_FILE, json.dumps(self.reference_))
            written.append(folder / REFERENCE_FILE)
        return written

    def _run_training_images(self) -> torch.Tensor:
        """A plain run folder's training split, read once: the background model, the
        intensity model and the reference all learn from it."""
        if getattr(self, "_run_train", None) is None:
            self._run_train = load_splits(self.config_, torch.device("cpu")).train
        return self._run_train

    def score_samples(self, X: Any) -> np.ndarray:
        """Minus the anomaly score in bits: higher means more normal (scikit-learn's sign)."""
        return -self.anomaly_score(X)

    def decision_function(self, X: Any) -> np.ndarray:
        """score_samples shifted by the threshold: negative for outliers."""
        check_is_fitted(self, "offset_")
        return self.score_samples(X) - self.offset_

    def predict(self, X: Any) -> np.ndarray:
        """+1 for inliers, -1 for outliers."""
        return np.where(self.decision_function(X) >= 0, 1, -1)

    def calibrate(self, X_normal: Any, quantile: float = 0.95) -> AnomalyDetector:
        """Set the threshold so that a fraction `quantile` of held-out normal data is inlier."""
        if not 0.0 < quantile < 1.0:
            raise VaekitError("quantile must be in (0, 1)")
        self.offset_ = float(np.quantile(self.score_samples(X_normal), 1.0 - quantile))
        return self

    def set_threshold_by_contamination(self, scores: np.ndarray, contamination: float) -> float:
        """Set the threshold so that a fraction `contamination` of these anomaly scores (bits)
        lies above it; returns the threshold in bits."""
        if not 0.0 < contamination < 1.0:
            raise VaekitError("contamination must be in (0, 1)")
        self.offset_ = -float(np.quantile(scores, 1.0 - contamination))
        return -self.offset_

    @property
    def threshold_bits(self) -> float:
        """Anomaly scores above this many bits are flagged."""
        check_is_fitted(self, "offset_")
        return -self.offset_

    def flag(self, scores: np.ndarray) -> np.ndarray:
        """Which anomaly scores (bits, from `anomaly_score`) lie above the threshold."""
        return np.asarray(scores) > self.threshold_bits

    # ---- persistence ---------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the run folder (checkpoint, config, metrics) plus detector.json to `path`."""
        check_is_fitted(self, "model_")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_checkpoint(
            path / CHECKPOINT_NAME,
            self.model_,
            self.config_,
            TrainingState(epoch=self.config_.train.epochs),
        )
        RunFolder(path).write_config(self.config_)
        state = {
            "params": self.get_params(),
            "input_kind": self.input_kind_,
            "offset": self.offset_,
            "n_features_in": self.n_features_in_,
            **self._input().save(self),
        }
        bg = getattr(self, "background_", None)
        if bg is not None:
            state["background"] = _save_local_model(path, bg, BACKGROUND_FILE)
        intensity = getattr(self, "intensity_", None)
        if intensity is not None:
            state["intensity"] = _save_local_model(path, intensity, INTENSITY_FILE)
        if getattr(self, "reference_", None) is not None:
            state["score_reference"] = self.reference_
        atomic_write_text(path / DETECTOR_FILE, json.dumps(state, indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> AnomalyDetector:
        """Load a detector saved by `save` (or a plain `vaekit train` run folder)."""
        path = Path(path)
        model, cfg, _ = load_checkpoint(path / CHECKPOINT_NAME)
        if may_use_cuda(cfg.train.device) and torch.cuda.is_available():
            model = model.cuda()
        f = path / DETECTOR_FILE
        if f.exists():
            state = json.loads(f.read_text())
            params = dict(state["params"])
            if "score_kind" not in params:  # detector.json written before the rename
                params["score_kind"] = params.pop("score", "auto")
            det = cls(**{**params, "overrides": tuple(params["overrides"])})
            det.input_kind_, det.offset_ = state["input_kind"], state["offset"]
            det.n_features_in_ = state["n_features_in"]
            det._input().load(det, state)
            det.reference_ = state.get("score_reference")
            det.background_ = det.intensity_ = None
            if "background" in state:
                det.background_ = _load_local_model(path / BACKGROUND_FILE, state["background"])
            if "intensity" in state:
                det.intensity_ = _load_local_model(path / INTENSITY_FILE, state["intensity"])
            if det.score_kind in SCORE_ALIASES and det.reference_ is None:
                # fitted by vaekit 0.4, whose "auto" was the ratio (binary single-channel
                # images) or the surprise: it keeps scoring as it was fitted and thresholded
                det.model_ = model
                det.score_kind = "ratio" if det._ratio_applies() else "surprise"
        else:
            det = cls(pixels=cfg.model.pixels)
            if not model.pixels.images:
                raise VaekitError(
                    f"{path}: a tabular run needs its detector.json (the feature "
                    f"standardization); fit it with vaekit.AnomalyDetector"
                )
            det.input_kind_ = INPUT_KINDS.name_of(Images)
            det.image_shape_ = list(cfg.model.image_shape)
            det.n_features_in_ = int(np.prod(det.image_shape_))
            # kept beside the checkpoint by `keep_parts` (`vaekit fit-scores`), if ever
            det.background_ = _load_kept(path, BACKGROUND_FILE, BACKGROUND_SPEC_FILE)
            det.intensity_ = _load_kept(path, INTENSITY_FILE, INTENSITY_SPEC_FILE)
            ref = path / REFERENCE_FILE
            det.reference_ = json.loads(ref.read_text()) if ref.exists() else None
            det.run_dir_ = path
        det.model_, det.config_ = model, cfg
        return det


def _save_local_model(
    folder: Path, model: LocalPixelModel, weights: str, spec_file: str | None = None
) -> dict[str, int]:
    """Write a local model's weights (and its shape, to `spec_file` if given) into
    `folder`, each atomically; returns the shape."""
    from safetensors.torch import save

    spec = {"kernel": model.kernel, "width": model.width, "depth": model.depth}
    spec.update(levels=model.levels, mixture=model.mixture)
    atomic_write_bytes(folder / weights, save(model.state_dict()))
    if spec_file is not None:
        atomic_write_text(folder / spec_file, json.dumps(spec))
    return spec


def _load_local_model(path: Path, spec: dict[str, int]) -> LocalPixelModel:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        model = LocalPixelModel(
            spec["kernel"],
            spec["width"],
            spec["depth"],
            spec.get("levels", 2),
            spec.get("mixture", 0),  # intensity models kept by vaekit 0.5 have a softmax
        )
        model.load_state_dict(load_file(str(path)))
    except (OSError, SafetensorError, RuntimeError, KeyError, TypeError) as e:
        raise VaekitError(f"{path}: cannot load the detector's local pixel model: {e}") from e
    return model.eval()


def _load_kept(folder: Path, weights: str, spec_file: str) -> LocalPixelModel | None:
    """A local model kept in a plain run folder by an earlier call, if there is one."""
    spec = folder / spec_file
    if spec.exists() and (folder / weights).exists():
        return _load_local_model(folder / weights, json.loads(spec.read_text()))
    return None


# inspect.signature(AnomalyDetector) would otherwise report the metaclass's (*args, **kwargs).
AnomalyDetector.__signature__ = inspect.signature(AnomalyDetector.__init__).replace(
    parameters=list(inspect.signature(AnomalyDetector.__init__).parameters.values())[1:]
)
