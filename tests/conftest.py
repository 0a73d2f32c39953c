"""Shared fixtures: tiny models and synthetic data so most tests need no dataset on disk."""

from __future__ import annotations

import os

# Before scipy is imported anywhere: scikit-learn's estimator checks then also run the case
# that turns array-API dispatch on with NumPy inputs (otherwise they skip it).
os.environ.setdefault("SCIPY_ARRAY_API", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from vaekit.config import Config, ModelConfig, TrainConfig  # noqa: E402
from vaekit.models import VAE  # noqa: E402

torch.set_num_threads(2)


def tiny_model(
    pixels: str = "static-binary",
    latent_dim: int = 4,
    shape=(1, 6, 6),
    hidden=(32,),
    arch: str = "mlp",
    seed: int = 0,
) -> VAE:
    torch.manual_seed(seed)
    cfg = ModelConfig(
        arch=arch,
        latent_dim=latent_dim,
        hidden=list(hidden),
        channels=8,
        pixels=pixels,
        image_shape=list(shape),
        n_mix=3,
    )
    return VAE(cfg).eval()


def synthetic_digits(n: int = 400, size: int = 12, seed: int = 0) -> np.ndarray:
    """Blobs of two kinds (bars and squares) as uint8 (N, size, size): learnable structure."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, size, size), dtype=np.uint8)
    for i in range(n):
        r, c = rng.integers(1, size - 5, 2)
        if i % 2:
            out[i, r : r + 5, c : c + 2] = 255
        else:
            out[i, r : r + 4, c : c + 4] = 200
    return out


@pytest.fixture
def npy_data(tmp_path):
    path = tmp_path / "blobs.npy"
    np.save(path, synthetic_digits())
    return path


def tiny_config(data: str, pixels: str = "dynamic-binary", epochs: int = 2) -> Config:
    return Config(
        ModelConfig(hidden=[64], latent_dim=4, pixels=pixels),
        TrainConfig(
            data=str(data),
            epochs=epochs,
            batch_size=32,
            lr=3e-3,
            lr_final=1e-3,
            seed=0,
            eval_batch_size=64,
        ),
    )
