"""`AnomalyDetector`: train a model on normal data and flag what it finds surprising, with
scikit-learn's outlier-detector conventions. The scores themselves are in
`vaekit.anomaly.scores`; the pixel mode is the fitted model's own.
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.sparse import issparse
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from vaekit.anomaly.background import LocalPixelModel, fit_local_model
from vaekit.anomaly.calibration import combined_score, fit_reference
from vaekit.anomaly.scores import (
    COMBINED_VIEWS,
    DETECTOR_SCORES,
    LOCAL_SCORES,
    UPPER_TAILED,
    all_scores,
    anomaly_scores,
    local_scores,
)
from vaekit.checkpoint import CHECKPOINT_NAME, TrainingState, load_checkpoint, save_checkpoint
from vaekit.config import apply_overrides, preset
from vaekit.data.sources import Dataset, to_uint8
from vaekit.data.splits import load_splits
from vaekit.errors import DataError, VaekitError
from vaekit.fileio import atomic_write_bytes, atomic_write_text
from vaekit.run import RunFolder

DETECTOR_FILE = "detector.json"
BACKGROUND_FILE = "background.safetensors"
BACKGROUND_SPEC_FILE = "background.json"
INTENSITY_FILE = "intensity.safetensors"
INTENSITY_SPEC_FILE = "intensity.json"
REFERENCE_FILE = "score_reference.json"
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

    def _prepare(self, X: Any, fitting: bool) -> torch.Tensor:
        """Validate X (scikit-learn's checks, then ours) and turn it into model inputs."""
        images = not issparse(X) and np.asarray(X).ndim in (3, 4)
        if not fitting and (self.input_kind_ == "images") != images:
            raise DataError(
                f"the detector was fitted on {self.input_kind_}; X has shape {np.shape(X)}"
            )
        if images:
            X = check_array(
                X,
                allow_nd=True,
                dtype="numeric",
                ensure_all_finite=False,
                ensure_min_samples=2 if fitting else 1,
            )
            return self._prepare_images(X, fitting)
        X = validate_data(
            self,
            X,
            reset=fitting,
            dtype="numeric",
            ensure_all_finite=False,
            ensure_min_samples=2 if fitting else 1,
        )
        X = X.astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
        if bad.size:
            raise DataError(f"rows {bad[:10].tolist()} of X contain NaN or infinite values")
        if fitting:
            self.input_kind_ = "tabular"
            self.mean_ = X.mean(0)
            self.scale_ = np.maximum(X.std(0), 1e-6)
        z = ((X - self.mean_) / self.scale_).astype(np.float32)
        return torch.from_numpy(z[:, None, None, :].copy())

    def _prepare_images(self, X: np.ndarray, fitting: bool) -> torch.Tensor:
        images = to_uint8(X if X.ndim == 4 else X[:, None], "X")
        if fitting:
            self.input_kind_ = "images"
            self.image_shape_ = list(images.shape[1:])
            self.n_features_in_ = int(np.prod(images.shape[1:]))
        elif list(images.shape[1:]) != self.image_shape_:
            raise DataError(
                f"images shaped {images.shape[1:]} do not match the "
                f"{tuple(self.image_shape_)} the detector was fitted on"
            )
        # a copy where the input is read-only (np.frombuffer): torch warns on such arrays
        return torch.from_numpy(np.array(images, copy=not images.flags.writeable, order="C"))

    def _ratio_applies(self) -> bool:
        return (
            self.input_kind_ == "images" and self.image_shape_[0] == 1 and self.model_.pixels.binary
        )

    def _intensity_applies(self) -> bool:
        return self.input_kind_ == "images" and self.image_shape_[0] == 1

    def _configured_kind(self) -> str:
        return self.score_kind

    def _score_kind(self, score: str | None = None) -> str:
        """The score in use: `score`, else the detector's, with "auto" resolved."""
        score = score or self._configured_kind()
        return "combined" if score == "auto" else score

    def _training_pixels(self) -> str:
        """The pixel mode the model is trained with (then it is the model's own)."""
        if self.input_kind_ == "tabular":
            return "tabular"
        return self.pixels or "dynamic-binary"

    # ---- scikit-learn interface ----------------------------------------------------------

    def fit(self, X: Any, y: Any = None) -> AnomalyDetector:
        """Train the VAE on (normal) X and set the threshold from `contamination`."""
        from vaekit.training import resolve_device, train

        kind = self._configured_kind()
        if kind not in (*DETECTOR_SCORES, "auto"):
            choices = ", ".join(("auto", *DETECTOR_SCORES))
            raise VaekitError(f"unknown score {kind!r}; choose from {choices}")
        if not 0.0 < self.contamination < 0.5:
            raise VaekitError("contamination must be in (0, 0.5)")
        data = self._prepare(X, fitting=True)
        if len(data) < 2:
            raise DataError("need at least 2 examples to fit")
        cfg = apply_overrides(preset(self.preset), list(self.overrides))
        cfg.model.pixels = self._training_pixels()
        cfg.train.seed = self.seed
        cfg.train.data = "<in-memory>"
        if self.epochs is not None:
            cfg.train.epochs = self.epochs
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(data))
        held_out = order[:0]
        if self._score_kind() == "combined" and len(data) >= 20:
            held_out = order[: min(REFERENCE_IMAGES, len(data) // 10)]
        fit_idx = np.sort(order[len(held_out) :])
        watch = order[len(held_out) :][: max(1, len(fit_idx) // 10)]
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
        kind = self._score_kind()
        fitted = data[fit_idx]
        self.background_ = self.intensity_ = None
        if self._ratio_applies() and kind in ("ratio", "combined"):
            self.background_ = fit_local_model(
                fitted, self.model_.pixels, seed=self.seed, device=device, progress=self.progress
            )
        elif kind == "ratio":
            raise VaekitError(
                "the ratio score needs single-channel images with binary pixels; this detector "
                f"has {self.input_kind_} data and {self.model_.pixels.name} pixels"
            )
        if self._intensity_applies() and kind in (*LOCAL_SCORES, "combined"):
            self.intensity_ = self._fit_intensity(fitted, device)
        elif kind in LOCAL_SCORES:
            raise VaekitError(
                f"the {kind} score needs single-channel images; this detector has "
                f"{self.input_kind_} data shaped {tuple(data.shape[1:])}"
            )
        self.reference_ = None
        if kind == "combined":
            # held-out normal examples; with fewer than 20 the training ones stand in
            normal = data[held_out] if len(held_out) else data[:REFERENCE_IMAGES]
            self.reference_ = self._fit_reference(normal)
        self.offset_ = float(np.percentile(self.score_samples(X), 100 * self.contamination))
        return self

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

    def _every_kind(self, data: torch.Tensor) -> dict[str, np.ndarray]:
        """Every score kind this model and data allow (bits), from the detector's inputs."""
        prepared = self.model_.pixels.prepare(data, train=False)
        scores = all_scores(
            copy.deepcopy(self.model_).double(),
            prepared,
            self.k,
            self.seed,
            complexity=self.model_.pixels.images,
            background=self._background() if self._ratio_applies() else None,
        )
        if self._intensity_applies() and (
            getattr(self, "intensity_", None) is not None
            or getattr(self, "run_dir_", None) is not None
        ):  # (a detector fitted by vaekit 0.4 has none, and its reference no local kinds)
            scores.update(local_scores(self._intensity(), data))
        return scores

    def _fit_reference(self, normal: torch.Tensor) -> dict[str, Any]:
        """The quantiles of each combined kind's scores on normal examples (`calibration`)."""
        scores = self._every_kind(normal)
        return fit_reference(scores, upper=UPPER_TAILED, views=COMBINED_VIEWS)

    def _reference(self) -> dict[str, Any]:
        """The combined score's reference; for a plain `vaekit train` run, measured once on
        up to REFERENCE_IMAGES of its training images and kept in the run folder."""
        if getattr(self, "reference_", None) is None:
            if getattr(self, "run_dir_", None) is None:
                raise VaekitError(
                    "the combined score needs reference scores of normal data, measured when "
                    "a detector is fitted with score_kind='combined'; refit it with that"
                )
            train = self._run_training_images()
            g = torch.Generator().manual_seed(self.seed)
            pick = torch.randperm(len(train), generator=g)[:REFERENCE_IMAGES]
            self.reference_ = self._fit_reference(train[pick])
            run = getattr(self, "run_dir_", None)
            if run is not None:
                atomic_write_text(run / REFERENCE_FILE, json.dumps(self.reference_))
        return self.reference_

    def anomaly_score(self, X: Any, score: str | None = None) -> np.ndarray:
        """Scores in bits, higher = more anomalous (`score` overrides the detector's)."""
        check_is_fitted(self, "model_")
        kind = self._score_kind(score)
        if kind == "combined":
            return combined_score(
                self._every_kind(self._prepare(X, fitting=False)), self._reference()
            )
        if kind in LOCAL_SCORES:
            if not self._intensity_applies():
                raise VaekitError(f"the {kind} score needs single-channel images")
            return local_scores(self._intensity(), self._prepare(X, fitting=False))[kind]
        prepared = self.model_.pixels.prepare(self._prepare(X, fitting=False), train=False)
        # Scored in float64: float32 matmuls round differently for different batch sizes,
        # and an example's score must not depend on the examples scored beside it.
        return anomaly_scores(
            copy.deepcopy(self.model_).double(),
            prepared,
            kind,
            self.k,
            self.seed,
            background=self._background() if kind == "ratio" else None,
        )

    def _background(self) -> LocalPixelModel | None:
        """The background model; for a plain `vaekit train` run, fitted once on its training
        data (the run's config says where that is), with a progress bar, and saved in the
        run folder (atomically) so that later calls load it."""
        if getattr(self, "background_", None) is None and self._ratio_applies():
            self.background_ = fit_local_model(
                self._run_training_images(),
                self.model_.pixels,
                seed=self.seed,
                progress=self.progress,
            )
            self._keep_in_run(self.background_, BACKGROUND_FILE, BACKGROUND_SPEC_FILE)
        return self.background_

    def _intensity(self) -> LocalPixelModel:
        """The local intensity model, fitted once for a plain run folder as `_background`."""
        if getattr(self, "intensity_", None) is None:
            if getattr(self, "run_dir_", None) is None:
                raise VaekitError(
                    "this detector has no local intensity model (it was fitted for another "
                    "score kind, or by vaekit 0.4); refit it with score_kind='combined'"
                )
            self.intensity_ = self._fit_intensity(self._run_training_images())
            self._keep_in_run(self.intensity_, INTENSITY_FILE, INTENSITY_SPEC_FILE)
        return self.intensity_

    def _run_training_images(self) -> torch.Tensor:
        """A plain run folder's training split, read once: the background model, the
        intensity model and the reference all learn from it on a first `vaekit score`."""
        if getattr(self, "_run_train", None) is None:
            self._run_train = load_splits(self.config_, torch.device("cpu")).train
        return self._run_train

    def _keep_in_run(self, model: LocalPixelModel, weights: str, spec: str) -> None:
        run = getattr(self, "run_dir_", None)
        if run is not None:
            _save_local_model(run, model, weights, spec)

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
        atomic_write_text(path / "config.json", self.config_.to_json())
        state = {
            "params": self.get_params(),
            "input_kind": self.input_kind_,
            "offset": self.offset_,
            "n_features_in": self.n_features_in_,
        }
        if self.input_kind_ == "tabular":
            state.update(mean=self.mean_.tolist(), scale=self.scale_.tolist())
        else:
            state["image_shape"] = self.image_shape_
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
        if cfg.train.device in ("cuda", "auto") and torch.cuda.is_available():
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
            if det.input_kind_ == "tabular":
                det.mean_, det.scale_ = np.array(state["mean"]), np.array(state["scale"])
            else:
                det.image_shape_ = state["image_shape"]
            det.reference_ = state.get("score_reference")
            det.background_ = det.intensity_ = None
            if "background" in state:
                det.background_ = _load_local_model(path / BACKGROUND_FILE, state["background"])
            if "intensity" in state:
                det.intensity_ = _load_local_model(path / INTENSITY_FILE, state["intensity"])
            if det.score_kind == "auto" and det.reference_ is None:
                # fitted by vaekit 0.4, whose "auto" was the ratio (binary single-channel
                # images) or the surprise: it keeps scoring as it was fitted and thresholded
                det.model_ = model
                det.score_kind = "ratio" if det._ratio_applies() else "surprise"
        else:
            det = cls(pixels=cfg.model.pixels)
            det.input_kind_ = "images" if model.pixels.images else "tabular"
            if det.input_kind_ == "tabular":
                raise VaekitError(
                    f"{path}: a tabular run needs its detector.json (the feature "
                    f"standardization); fit it with vaekit.AnomalyDetector"
                )
            det.image_shape_ = list(cfg.model.image_shape)
            det.n_features_in_ = int(np.prod(det.image_shape_))
            # fitted on the run's training data the first time the ratio is asked for, and
            # kept beside the checkpoint from then on
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
