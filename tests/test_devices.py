"""Device policy: exact resume needs every RNG the run draws from, CUDA's included."""

import json

import pytest
import torch

from tests.conftest import tiny_config
from vaekit.device import rng_state, set_rng_state
from vaekit.training import train


def test_rng_state_holds_the_cuda_generator_on_cuda(monkeypatch):
    fake = torch.arange(16, dtype=torch.uint8)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device=None: fake)
    got = {}
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, device=None: got.update(s=s))
    state = rng_state(torch.device("cuda"))
    assert torch.equal(state["cuda"], fake) and "cuda" not in rng_state(torch.device("cpu"))
    set_rng_state(state, torch.device("cuda"))
    assert torch.equal(got["s"], fake)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.xfail(
    reason="known limitation: resume on CUDA is not yet exact (measured failing on an H100, "
    "torch 2.11+cu130, 2026-11-27, also under torch.use_deterministic_algorithms); strict, so "
    "the day it passes the suite says so and this mark must go",
    strict=True,
)
def test_resume_is_exact_on_cuda(tmp_path, npy_data):

    def cfg(epochs):
        c = tiny_config(npy_data, epochs=epochs)
        c.train.device, c.train.bf16 = "cuda", False
        return c

    full = train(cfg(3), tmp_path / "full", progress=False)
    part = train(cfg(2), tmp_path / "part", progress=False)
    train(cfg(3), part, resume=True, progress=False, total_epochs=3)
    rows = [
        [json.loads(r)["train_loss"] for r in (run / "metrics.jsonl").read_text().splitlines()]
        for run in (full, part)
    ]
    assert rows[0] == pytest.approx(rows[1], rel=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("family", ["vae", "hvae"])
@pytest.mark.parametrize("pixels", ["static-binary", "8bit"])
def test_a_file_written_on_one_device_decodes_on_the_other(family, pixels):
    """Encode on the CPU and decode on CUDA, and the other way round (issue 14): with
    exact arithmetic (format 5) both devices write the same bytes. (The float coder of
    vaekit <= 0.3 failed this both ways on an H100, torch 2.11+cu130, 2026-11-27; the exact
    coder failed the 8-bit cases on an H200 until division by a number was made IEEE on
    CUDA, and passed all four there after it, 2026-11-27 12:36 UTC.)"""
    from tests.conftest import tiny_model
    from tests.test_hierarchical import hvae

    shape = (1, 12, 12)
    cpu = (
        tiny_model(pixels, shape=shape, hidden=(64,))
        if family == "vae"
        else hvae(pixels, shape=shape)
    )
    _same_bytes_on_both_devices(cpu, pixels, n=300, seed=0)


def _same_bytes_on_both_devices(cpu_model, pixels: str, n: int, seed: int, particles: int = 1):
    """Random images coded on the CPU and on CUDA give one file, which each device decodes."""
    import copy

    import numpy as np

    from vaekit.coding.files import compress, decompress

    gpu_model = copy.deepcopy(cpu_model).cuda()
    shape = tuple(cpu_model.config.image_shape)
    rng = np.random.default_rng(seed)
    if pixels == "8bit":
        images = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    else:
        images = (rng.random((n, *shape)) < 0.3).astype(np.uint8)
    from_cpu = compress(cpu_model, images, particles=particles)
    from_gpu = compress(gpu_model, images, particles=particles)
    assert from_cpu == from_gpu
    assert np.array_equal(decompress(gpu_model, from_cpu), images)
    assert np.array_equal(decompress(cpu_model, from_gpu), images)


def _conv_hvae(pixels: str, shape: tuple[int, int, int]):
    """A tiny hvae-conv: residual conv encoder/decoder, layer-normalised features."""
    from vaekit.config import ModelConfig
    from vaekit.models.hierarchical import HierarchicalVAE

    torch.manual_seed(0)
    cfg = ModelConfig(
        family="hvae",
        arch="conv",
        channels=4,
        blocks=1,
        feature_norm=True,
        pixels=pixels,
        latent_groups=[2, 3],
        group_width=16,
        hidden=[32],
        image_shape=list(shape),
        n_mix=2,
    )
    model = HierarchicalVAE(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(
    "arch, pixels, particles",
    [("conv", "static-binary", 1), ("conv", "8bit", 1), ("mlp", "static-binary", 4)],
)
def test_conv_and_importance_weighted_files_decode_on_the_other_device(arch, pixels, particles):
    """The conv hierarchy (the GPU preset's networks: convolutions, transposed convolutions,
    layer norm) and importance-weighted bits-back (format 6's particle ramp) write the same
    bytes on both devices, and each decodes the other's file."""
    from tests.test_hierarchical import hvae

    shape = (1, 12, 12)
    cpu = _conv_hvae(pixels, shape) if arch == "conv" else hvae(pixels, shape=shape)
    _same_bytes_on_both_devices(cpu, pixels, n=120, seed=1, particles=particles)
