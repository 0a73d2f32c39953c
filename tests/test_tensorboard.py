"""`vaekit train --tensorboard DIR`: scalars every epoch, image grids every few (issue 16)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from vaekit.cli import main

pytest.importorskip("tensorboard")


def test_training_writes_scalars_and_grids_tensorboard_reads(tmp_path, npy_data):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = tmp_path / "tb"
    res = CliRunner().invoke(
        main,
        [
            "train", "--data", str(npy_data), "--epochs", "5", "--out", str(tmp_path / "run"),
            "--set", "model.hidden=[32]", "--set", "model.latent_dim=4", "--quiet",
            "--tensorboard", str(board),
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    events = EventAccumulator(str(board), size_guidance={"images": 0, "scalars": 0}).Reload()
    tags = events.Tags()
    assert {"train_loss", "test_elbo", "train_kl"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("train_loss")] == [1, 2, 3, 4, 5]
    assert {"samples", "reconstructions"} <= set(tags["images"])
    assert [e.step for e in events.Images("samples")] == [1, 5]
    first = events.Images("samples")[0]
    assert first.width > 20 and first.height > 20
