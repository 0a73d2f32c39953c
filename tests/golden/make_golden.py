"""Write the golden files in tests/golden/ (run once per format version; the files are
checked in and `tests/test_golden.py` decodes them on every run).

    PYTHONPATH=src python tests/golden/make_golden.py OUT_DIR TAG

TAG names the vaekit version that writes them (e.g. v0.1-format2). Each model is tiny (8x8
images, a few thousand weights) and starts from a fixed seed; its checkpoint is saved, so
the weights do not depend on the torch version that reads them.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
from pathlib import Path

import numpy as np
import torch

from vaekit.checkpoint import TrainingState, save_checkpoint
from vaekit.coding.files import compress
from vaekit.config import Config, ModelConfig


def images(n: int = 24, size: int = 8) -> np.ndarray:
    """Bars and squares (uint8 (N, 1, size, size)), from numpy's stable PCG64 stream."""
    rng = np.random.default_rng(2026)
    out = np.zeros((n, 1, size, size), dtype=np.uint8)
    for i in range(n):
        r, c = rng.integers(0, size - 4, 2)
        out[i, 0, r : r + 4, c : c + (2 if i % 2 else 4)] = rng.integers(120, 256)
    return out


def model_config(pixels: str, prior: str, family: str = "vae", arch: str = "mlp") -> ModelConfig:
    fields = inspect.signature(ModelConfig).parameters
    kw = dict(latent_dim=4, hidden=[32], image_shape=[1, 8, 8], n_mix=2)
    if family != "vae":  # vaekit >= 0.3: hierarchies
        kw.update(family=family, latent_groups=[2, 3], group_width=16)
    if arch != "mlp":  # vaekit >= 0.6: a convolutional hierarchy (exact convolutions)
        kw.update(arch=arch, channels=4, blocks=1)
    if "pixels" in fields:  # vaekit >= 0.2 keeps the pixel mode in the model
        kw.update(pixels=pixels, prior=prior, prior_components=8)
    else:
        kw["likelihood"] = {"static-binary": "bernoulli", "8bit": "logistic-mixture"}[pixels]
    return ModelConfig(**kw)


def build(cfg: Config):
    try:
        from vaekit.models import build_model
    except ImportError:  # vaekit 0.1
        from vaekit.models import VAE as build_model
    return build_model(cfg.model)


def main(out: Path, tag: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    imgs = images()
    np.save(out / "images.npy", imgs)
    fields = inspect.signature(ModelConfig).parameters
    cases = [("static-binary", "standard-normal", "vae"), ("8bit", "standard-normal", "vae")]
    if "pixels" in fields:
        cases.append(("static-binary", "vamp", "vae"))
    if "latent_groups" in fields:
        cases += [
            ("static-binary", "standard-normal", "hvae"),
            ("8bit", "standard-normal", "bitswap"),
        ]
    if "latent_groups" in fields and "arch" in fields:
        cases.append(("static-binary", "standard-normal", "hvae-conv"))
    particles = {}
    if "particles" in inspect.signature(compress).parameters:  # importance-weighted bits-back
        cases.append(("static-binary", "standard-normal", "hvae-k4"))
        particles["hvae-k4"] = 4
        if "arch" in fields:  # vaekit >= 0.6: a conv hierarchy with particles
            cases.append(("static-binary", "standard-normal", "hvae-conv-k4"))
            particles["hvae-conv-k4"] = 4
    for pixels, prior, case in cases:
        family = case.split("-")[0]
        arch = "conv" if "-conv" in case else "mlp"
        name = f"{tag}-{pixels}-{prior}" + ("" if case == "vae" else f"-{case}")
        cfg = Config(model_config(pixels, prior, family, arch))
        if "pixels" not in inspect.signature(ModelConfig).parameters:
            cfg.train.pixels = pixels
        torch.manual_seed(7)
        model = build(cfg).eval()
        save_checkpoint(out / f"{name}.safetensors", model, cfg, TrainingState())
        data = imgs if pixels == "8bit" else (imgs > 0).astype(np.uint8)
        extra = {"particles": particles[case]} if case in particles else {}
        blob = compress(model, data, **extra)
        (out / f"{name}.vkz").write_bytes(blob)
        print(name, len(blob), hashlib.sha256(blob).hexdigest()[:16])


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
