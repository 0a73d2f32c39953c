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
