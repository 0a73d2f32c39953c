"""Training from memory-mapped .npy shards through a DataLoader."""

import json

import numpy as np
import pytest

from tests.conftest import synthetic_digits, tiny_config
from vaekit.checkpoint import load_checkpoint
from vaekit.data.streaming import NpyShards, open_shards
from vaekit.errors import DataError
from vaekit.training import train


@pytest.fixture
def shard_folder(tmp_path):
    data = synthetic_digits(600, 12)
    for i, part in enumerate(np.array_split(data, 4)):
        np.save(tmp_path / f"part-{i:03d}.npy", part)
    return tmp_path


def test_shards_are_memory_mapped_and_indexed_in_order(shard_folder):
    train, test = open_shards(shard_folder)
    assert len(train) == 450 and len(test) == 150 and train.image_shape == (1, 12, 12)
    full = np.concatenate([np.load(p) for p in sorted(shard_folder.glob("*.npy"))[:3]])
    for i in (0, 149, 150, 449):
        assert np.array_equal(train[i].numpy()[0], full[i])
    assert all(isinstance(a, np.memmap) for a in train._arrays)


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_training_lowers_the_loss(tmp_path, shard_folder, workers):
    cfg = tiny_config(shard_folder, epochs=4)
    cfg.train.stream, cfg.train.workers = True, workers
    run = train(cfg, tmp_path / f"run{workers}", progress=False)
    m = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert m[-1]["train_loss"] < m[0]["train_loss"] - 5
    assert m[0]["step"] == 450 // 32
    model, cfg, _ = load_checkpoint(run)
    assert cfg.model.image_shape == [1, 12, 12]


def test_bad_shards(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((4, 8, 8), np.uint8))
    np.save(tmp_path / "b.npy", np.zeros((4, 9, 8), np.uint8))
    with pytest.raises(DataError, match="disagree"):
        open_shards(tmp_path)
    np.save(tmp_path / "c.npy", np.zeros((4, 8, 8), np.float32))
    with pytest.raises(DataError, match="uint8"):
        NpyShards([tmp_path / "c.npy"])
    (tmp_path / "d.npy").write_bytes(b"garbage")
    with pytest.raises(DataError, match="d.npy"):
        NpyShards([tmp_path / "d.npy"])


def test_the_bias_start_reads_its_sample_through_streamed_shards(shard_folder):
    """The output-bias start reads its image sample through the shards when streaming."""
    import torch

    from vaekit.data.splits import sample_values

    shards, _ = open_shards(shard_folder)
    values = sample_values(shards, "expected-binary", seed=0, n=len(shards))
    mean, std = values.mean(0), values.std(0, correction=0)
    full = np.concatenate([np.load(p) for p in sorted(shard_folder.glob("*.npy"))[:3]])
    expected = torch.from_numpy(full[:, None]).float() / 255
    torch.testing.assert_close(mean, expected.mean(0))
    torch.testing.assert_close(std, expected.std(0, correction=0))
