"""Checkpoints round-trip exactly; damaged or foreign ones are refused clearly."""

import json

import pytest
import torch
from safetensors.torch import save_file

from tests.conftest import tiny_model
from vaekit.checkpoint import TrainingState, load_checkpoint, save_checkpoint
from vaekit.config import Config
from vaekit.errors import CheckpointError
from vaekit.fileio import atomic_save


def _saved(tmp_path, model=None):
    model = model or tiny_model()
    cfg = Config(model=model.config)
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, model, cfg, TrainingState(epoch=3, step=30))
    return path, model


def test_round_trip_same_outputs(tmp_path):
    path, model = _saved(tmp_path)
    loaded, cfg, state = load_checkpoint(tmp_path)
    z = torch.randn(5, model.latent_dim)
    assert torch.equal(model.decoder(z), loaded.decoder(z))
    assert state.epoch == 3 and state.step == 30 and cfg.model == model.config


def test_wrong_model_refused(tmp_path):
    path, model = _saved(tmp_path)
    other = tiny_model(hidden=(48,))
    # A checkpoint whose config describes one model but whose weights are another's.
    from safetensors import safe_open

    meta = safe_open(str(path), "pt").metadata()
    tensors = {f"model.{k}": v for k, v in other.state_dict().items()}
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(path)


def test_truncated_and_flipped_files_refused(tmp_path):
    path, _ = _saved(tmp_path)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(path)
    flipped = bytearray(blob)
    flipped[-5] ^= 0xFF  # inside the last tensor's bytes
    path.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="fingerprint"):
        load_checkpoint(path)


def test_foreign_safetensors_and_missing_file(tmp_path):
    p = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(p), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="not a vaekit checkpoint"):
        load_checkpoint(p)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nothing-here.safetensors")


def test_config_that_cannot_build_a_model(tmp_path):
    path, _ = _saved(tmp_path)
    from safetensors import safe_open

    f = safe_open(str(path), "pt")
    meta = f.metadata()
    cfg = json.loads(meta["config"])
    cfg["model"]["arch"] = "transformer"
    meta["config"] = json.dumps(cfg)
    save_file({k: f.get_tensor(k) for k in f.keys()}, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match="cannot build"):
        load_checkpoint(path)


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path, _ = _saved(tmp_path)
    before = path.read_bytes()

    def failing_writer(tmp):
        tmp.write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_save(path, failing_writer)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.safetensors"]


def test_outputs_get_the_permissions_a_plain_write_gives(tmp_path):
    import os

    from vaekit.fileio import atomic_write_bytes

    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
        os.umask(0o077)
        atomic_write_bytes(tmp_path / "b.bin", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.bin").stat().st_mode & 0o777 == 0o600
