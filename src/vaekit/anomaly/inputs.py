"""What a detector is fitted on: images or table rows, each a kind registered by the name
detector.json stores (`input_kind`). A kind validates and prepares X, names the pixel mode
the model trains with, and saves what it learned from the data."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.sparse import issparse
from sklearn.utils.validation import check_array, validate_data
from typing_extensions import override

from vaekit.data.sources import to_uint8
from vaekit.errors import DataError
from vaekit.registry import Registry

DEFAULT_IMAGE_PIXELS = "dynamic-binary"


class InputKind:
    """How a detector reads one kind of X. Its fitted state lives on the detector."""

    pixels: str | None = None  # the pixel mode the model trains with (None: the detector's)
    has_images = False  # whether inputs are images (the local models read them)

    @staticmethod
    def matches(X: Any) -> bool:  # pragma: no cover
        """Whether X is of this kind (decides the kind when fitting)."""
        raise NotImplementedError

    def prepare(self, det: Any, X: Any, fitting: bool) -> torch.Tensor:  # pragma: no cover
        """Validated model inputs from X; `fitting` learns the state `save` writes."""
        raise NotImplementedError

    def single_channel(self, det: Any) -> bool:
        """Whether the inputs are single-channel images (the local models' domain)."""
        return False

    def save(self, det: Any) -> dict[str, Any]:  # pragma: no cover
        """What `load` needs, for detector.json."""
        raise NotImplementedError

    def load(self, det: Any, state: dict[str, Any]) -> None:  # pragma: no cover
        """Restore what `save` wrote onto the detector."""
        raise NotImplementedError


INPUT_KINDS: Registry[type[InputKind]] = Registry("input kind")


@INPUT_KINDS.register("images")
class Images(InputKind):
    """Images (N, H, W) or (N, C, H, W), uint8 or floats in [0, 1]."""

    has_images = True

    @override
    @staticmethod
    def matches(X):
        return not issparse(X) and np.asarray(X).ndim in (3, 4)

    @override
    def prepare(self, det, X, fitting):
        X = check_array(
            X,
            allow_nd=True,
            dtype="numeric",
            ensure_all_finite=False,
            ensure_min_samples=2 if fitting else 1,
        )
        images = to_uint8(X if X.ndim == 4 else X[:, None], "X")
        if fitting:
            det.image_shape_ = list(images.shape[1:])
            det.n_features_in_ = int(np.prod(images.shape[1:]))
        elif list(images.shape[1:]) != det.image_shape_:
            raise DataError(
                f"images shaped {images.shape[1:]} do not match the "
                f"{tuple(det.image_shape_)} the detector was fitted on"
            )
        # a copy where the input is read-only (np.frombuffer): torch warns on such arrays
        return torch.from_numpy(np.array(images, copy=not images.flags.writeable, order="C"))

    @override
    def single_channel(self, det):
        return det.image_shape_[0] == 1

    @override
    def save(self, det):
        return {"image_shape": det.image_shape_}

    @override
    def load(self, det, state):
        det.image_shape_ = state["image_shape"]


@INPUT_KINDS.register("tabular")
class Table(InputKind):
    """Rows (N, D) of numbers, standardized per column; a Gaussian decoder."""

    pixels = "tabular"

    @override
    @staticmethod
    def matches(X):
        return not Images.matches(X)

    @override
    def prepare(self, det, X, fitting):
        X = validate_data(
            det,
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
            det.mean_ = X.mean(0)
            det.scale_ = np.maximum(X.std(0), 1e-6)
        z = ((X - det.mean_) / det.scale_).astype(np.float32)
        return torch.from_numpy(z[:, None, None, :].copy())

    @override
    def save(self, det):
        return {"mean": det.mean_.tolist(), "scale": det.scale_.tolist()}

    @override
    def load(self, det, state):
        det.mean_, det.scale_ = np.array(state["mean"]), np.array(state["scale"])


def input_kind_of(X: Any) -> str:
    """The name of the kind X is."""
    return next(name for name, kind in INPUT_KINDS.items() if kind.matches(X))
