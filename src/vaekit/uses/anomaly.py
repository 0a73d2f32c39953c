"""Anomaly detection: a VAE's surprise -log p(x) and related scores, in bits per example.

Scores (higher = more anomalous, in bits):
- surprise: -log2 p(x), importance-sampled with K samples from q(z|x);
- elbo: -ELBO / ln 2 (K-sample reconstruction, analytic KL);
- reconstruction: -E_q[log p(x|z)] / ln 2;
- complexity: surprise minus the input's length under a generic lossless coder (PNG), the
  correction of Serrà et al. (2020) for likelihoods that favour simple inputs from other
  domains;
- ratio: surprise minus the surprise of a local background model fitted to the same data
  (`uses.background`): a likelihood ratio (Ren et al. 2019; Schirrmeister et al. 2020) that
  cancels what local pixel statistics explain and keeps what the VAE's global model adds.
  For single-channel binary-pixel images; `score="auto"` picks it there, else surprise.

`AnomalyDetector` wraps training and scoring in scikit-learn's outlier-detector conventions.
"""

from __future__ import annotations

import io
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from scipy.sparse import issparse
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from vaekit.checkpoint import CHECKPOINT_NAME, TrainingState, load_checkpoint, save_checkpoint
from vaekit.config import apply_overrides, preset
from vaekit.data.pixels import BINARY_MODES, prepare_split, to_values
from vaekit.data.sources import Dataset, to_uint8
from vaekit.errors import DataError, VaekitError
from vaekit.evaluation import per_example
from vaekit.fileio import atomic_write_bytes, atomic_write_text
from vaekit.model import VAE
from vaekit.uses.background import LocalPixelModel, fit_local_model, local_log_prob

SCORES = ("surprise", "elbo", "reconstruction", "complexity", "ratio")
DETECTOR_FILE = "detector.json"
BACKGROUND_FILE = "background.safetensors"
_LN2 = math.log(2.0)


def png_bits(images: np.ndarray) -> np.ndarray:
    """Length in bits of each uint8 image (N, C, H, W) as an optimized PNG."""
    out = np.empty(len(images))
    for i, im in enumerate(images):
        arr = im[0] if im.shape[0] == 1 else im.transpose(1, 2, 0)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG", optimize=True)
        out[i] = 8 * buf.tell()
    return out


def all_scores(
    model: VAE,
    values: torch.Tensor,
    pixels: str,
    k: int = 100,
    seed: int = 0,
    batch_size: int = 200,
    complexity: bool = True,
    background: LocalPixelModel | None = None,
) -> dict[str, np.ndarray]:
    """Every score kind (bits, higher = more anomalous) from one importance-sampling pass;
    `complexity=False` skips the PNG encoding that only the complexity score needs, and the
    ratio score is there when a `background` model is given."""
    was_training = model.training
    terms = per_example(model, values, pixels, k=k, batch_size=batch_size, seed=seed)
    model.train(was_training)
    out = {
        "surprise": (-terms["log_px"] / _LN2).cpu().numpy(),
        "elbo": (-terms["elbo"] / _LN2).cpu().numpy(),
        "reconstruction": (-terms["reconstruction"] / _LN2).cpu().numpy(),
    }
    if complexity and pixels != "tabular":
        shown = values.cpu().numpy()
        if pixels in BINARY_MODES:
            shown = shown * 255
        out["complexity"] = out["surprise"] - png_bits(np.rint(shown).astype(np.uint8))
    if background is not None:
        x = to_values(values, pixels, train=False).cpu()
        out["ratio"] = out["surprise"] + (local_log_prob(background, x) / _LN2).numpy()
    return out


def anomaly_scores(
    model: VAE,
    values: torch.Tensor,
    pixels: str,
    score: str = "surprise",
    k: int = 100,
    seed: int = 0,
    batch_size: int = 200,
    background: LocalPixelModel | None = None,
) -> np.ndarray:
    """One score kind in bits (higher = more anomalous) for prepared inputs."""
    if score not in SCORES:
        raise VaekitError(f"unknown score {score!r}; choose from {', '.join(SCORES)}")
    if score == "complexity" and pixels == "tabular":
        raise VaekitError("the complexity score needs images (a PNG length); use surprise")
    if score == "ratio" and background is None:
        raise VaekitError(
            "the ratio score needs a background model: it exists for single-channel images "
            "with binary pixels fitted by vaekit.AnomalyDetector; use surprise otherwise"
        )
    scores = all_scores(
        model,
        values,
        pixels,
        k,
        seed,
        batch_size,
        complexity=score == "complexity",
        background=background if score == "ratio" else None,
    )
    return scores[score]


class AnomalyDetector(OutlierMixin, BaseEstimator):
    """A VAE anomaly detector with scikit-learn's outlier-detector interface.

    `fit(X)` trains a VAE on normal data X: images (N, H, W) / (N, C, H, W) as uint8 or
    floats in [0, 1], or tabular rows (N, D) (standardized, Gaussian decoder).
    `score_samples` is minus the score in bits (higher = more normal); `predict` gives +1 for
    inliers and -1 for outliers against a threshold set from `contamination` on the training
    data, or by `calibrate(X_normal, quantile)` on held-out normal data.
    `score="auto"` (the default) is the likelihood ratio against a local background model
    for single-channel binary-pixel images and the surprise otherwise; a fitted detector
    says which in `_score_kind()`. Scoring runs on the device the VAE trained on.
    """

    def __init__(
        self,
        preset: str = "anomaly",
        score: str = "auto",
        k: int = 100,
        pixels: str | None = None,
        epochs: int | None = None,
        contamination: float = 0.1,
        seed: int = 0,
        overrides: tuple[str, ...] = (),
        progress: bool = False,
    ):
        self.preset = preset
        self.score = score
        self.k = k
        self.pixels = pixels
        self.epochs = epochs
        self.contamination = contamination
        self.seed = seed
        self.overrides = overrides
        self.progress = progress

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
        return torch.from_numpy(np.ascontiguousarray(images))

    def _ratio_applies(self) -> bool:
        return (
            self.input_kind_ == "images"
            and self.image_shape_[0] == 1
            and self._pixels() in BINARY_MODES
        )

    def _score_kind(self, score: str | None = None) -> str:
        """The score in use: `score`, else the detector's, with "auto" resolved."""
        score = score or self.score
        if score == "auto":
            return "ratio" if self._ratio_applies() else "surprise"
        return score

    def _pixels(self) -> str:
        if self.input_kind_ == "tabular":
            return "tabular"
        return self.pixels or "dynamic-binary"

    # ---- scikit-learn interface ----------------------------------------------------------

    def fit(self, X: Any, y: Any = None) -> AnomalyDetector:
        """Train the VAE on (normal) X and set the threshold from `contamination`."""
        from vaekit.training import resolve_device, train

        if self.score not in (*SCORES, "auto"):
            choices = ", ".join(("auto", *SCORES))
            raise VaekitError(f"unknown score {self.score!r}; choose from {choices}")
        if not 0.0 < self.contamination < 0.5:
            raise VaekitError("contamination must be in (0, 0.5)")
        data = self._prepare(X, fitting=True)
        if len(data) < 2:
            raise DataError("need at least 2 examples to fit")
        cfg = apply_overrides(preset(self.preset), list(self.overrides))
        cfg.train.pixels = self._pixels()
        cfg.train.seed = self.seed
        cfg.train.data = "<in-memory>"
        if self.epochs is not None:
            cfg.train.epochs = self.epochs
        cfg.train.batch_size = min(cfg.train.batch_size, len(data))
        rng = np.random.default_rng(self.seed)
        watch = rng.permutation(len(data))[: max(1, len(data) // 10)]
        arrays = data.numpy()
        with tempfile.TemporaryDirectory(prefix="vaekit-detector-") as tmp:
            train(cfg, tmp, progress=self.progress, dataset=Dataset("fit", arrays, arrays[watch]))
            # Score where it trained: a GPU-trained conv detector is slow to score on a CPU.
            device = str(resolve_device(cfg.train.device))
            self.model_, self.config_, _ = load_checkpoint(tmp, map_location=device)
            lines = (Path(tmp) / "metrics.jsonl").read_text().splitlines()
            self.training_metrics_ = [json.loads(r) for r in lines]
        self.background_ = None
        if self._ratio_applies():
            self.background_ = fit_local_model(data, self._pixels(), seed=self.seed, device=device)
        elif self._score_kind() == "ratio":
            raise VaekitError(
                "the ratio score needs single-channel images with binary pixels; "
                f"this detector has {self.input_kind_} data and {self._pixels()} pixels"
            )
        self.offset_ = float(np.percentile(self.score_samples(X), 100 * self.contamination))
        return self

    def anomaly_score(self, X: Any, score: str | None = None) -> np.ndarray:
        """Scores in bits, higher = more anomalous (`score` overrides the detector's)."""
        check_is_fitted(self, "model_")
        values = prepare_split(self._prepare(X, fitting=False), self._pixels(), train=False)
        kind = self._score_kind(score)
        return anomaly_scores(
            self.model_,
            values,
            self._pixels(),
            kind,
            self.k,
            self.seed,
            background=self._background() if kind == "ratio" else None,
        )

    def _background(self) -> LocalPixelModel | None:
        """The background model; for a plain `vaekit train` run, fitted now on its training
        data (the run's config says where that is)."""
        if getattr(self, "background_", None) is None and self._ratio_applies():
            from vaekit.training import load_splits

            train = load_splits(self.config_, torch.device("cpu")).train
            self.background_ = fit_local_model(train, self._pixels(), seed=self.seed)
        return self.background_

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
            from safetensors.torch import save

            state["background"] = {"kernel": bg.kernel, "width": bg.width, "depth": bg.depth}
            atomic_write_bytes(path / BACKGROUND_FILE, save(bg.state_dict()))
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
            det = cls(**{**state["params"], "overrides": tuple(state["params"]["overrides"])})
            det.input_kind_, det.offset_ = state["input_kind"], state["offset"]
            det.n_features_in_ = state["n_features_in"]
            if det.input_kind_ == "tabular":
                det.mean_, det.scale_ = np.array(state["mean"]), np.array(state["scale"])
            else:
                det.image_shape_ = state["image_shape"]
            det.background_ = None
            if "background" in state:
                det.background_ = _load_background(path / BACKGROUND_FILE, state["background"])
        else:
            det = cls(pixels=cfg.train.pixels)
            det.input_kind_ = "tabular" if cfg.train.pixels == "tabular" else "images"
            if det.input_kind_ == "tabular":
                raise VaekitError(
                    f"{path}: a tabular run needs its detector.json (the feature "
                    f"standardization); fit it with vaekit.AnomalyDetector"
                )
            det.image_shape_ = list(cfg.model.image_shape)
            det.n_features_in_ = int(np.prod(det.image_shape_))
            det.background_ = None  # fitted on the run's training data if the ratio is asked for
        det.model_, det.config_ = model, cfg
        return det


def _load_background(path: Path, spec: dict[str, int]) -> LocalPixelModel:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        model = LocalPixelModel(spec["kernel"], spec["width"], spec["depth"])
        model.load_state_dict(load_file(str(path)))
    except (OSError, SafetensorError, RuntimeError, KeyError, TypeError) as e:
        raise VaekitError(f"{path}: cannot load the detector's background model: {e}") from e
    return model.eval()
