"""A run folder: the one place that names every file a run holds, and opens a run with its
model, config and data.

```
RUN/
  checkpoint.safetensors   weights, optimizer and RNG state, config (vaekit.checkpoint)
  config.json              the run's full config, for people
  metrics.jsonl            one row per epoch
  report.html              `vaekit report`
  sampler-gmm.json         the ex-post mixture sampler, fitted on first use
  detector.json, score_reference.json, background.*, intensity.*   `vaekit fit-scores`
```
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vaekit.checkpoint import CHECKPOINT_NAME, load_checkpoint
from vaekit.config import Config
from vaekit.data import Dataset, load_dataset
from vaekit.data.splits import Splits, image_options, load_splits
from vaekit.fileio import atomic_write_text
from vaekit.models import LatentVariableModel


class RunFolder:
    """The files of one run, by name. `RunFolder(path) / RunFolder.METRICS` is a path."""

    CHECKPOINT = CHECKPOINT_NAME
    CONFIG = "config.json"
    METRICS = "metrics.jsonl"
    REPORT = "report.html"
    SAMPLER_GMM = "sampler-gmm.json"
    DETECTOR = "detector.json"
    SCORE_REFERENCE = "score_reference.json"
    BACKGROUND = "background.safetensors"
    BACKGROUND_SPEC = "background.json"
    INTENSITY = "intensity.safetensors"
    INTENSITY_SPEC = "intensity.json"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def open(
        self, data_dir: str | None = None, limit: int | None = None, map_location: str = "cpu"
    ) -> OpenRun:
        """The run's model and config; `data_dir` and `limit` replace the config's own."""
        model, config, _ = load_checkpoint(self.path, map_location=map_location)
        config.train.data_dir = data_dir or config.train.data_dir
        config.train.limit = limit if limit is not None else config.train.limit
        return OpenRun(self, model, config)

    def write_config(self, config: Config) -> None:
        """config.json: the run's full config, for people (the checkpoint holds its own)."""
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self / self.CONFIG, config.to_json())

    def append_metrics(self, row: dict[str, Any]) -> None:
        """One JSON object per epoch, appended."""
        with open(self / self.METRICS, "a") as f:
            f.write(json.dumps(row) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        """The rows of metrics.jsonl ([] when there is none)."""
        path = self / self.METRICS
        if not path.exists():
            return []
        return [json.loads(r) for r in path.read_text().splitlines() if r.strip()]

    def truncate_metrics(self, epochs_done: int) -> None:
        """Drop rows past the checkpoint, so a resumed run neither loses nor doubles an epoch."""
        path = self / self.METRICS
        if path.exists():
            rows = [r for r in path.read_text().splitlines() if r.strip()]
            keep = [r for r in rows if json.loads(r).get("epoch", 0) <= epochs_done]
            atomic_write_text(path, "".join(r + "\n" for r in keep))


@dataclass
class OpenRun:
    """A run opened for use: its folder, trained model and config."""

    folder: RunFolder
    model: LatentVariableModel
    config: Config

    def splits(self, device: torch.device | str = "cpu") -> Splits:
        """The configured data's train and test splits, prepared for the run's pixel mode."""
        return load_splits(self.config, torch.device(device))

    def dataset(self) -> Dataset:
        """The configured data set as stored (uint8 images, labels where it has them)."""
        t = self.config.train
        return load_dataset(t.data, t.data_dir, image_options(self.config))


def collapse_note(row: dict[str, Any]) -> str | None:
    """A warning for an epoch's metrics row that shows posterior collapse (no active latent
    unit, or a test KL under 0.1 nats): every sample is then the same mean image."""
    if row.get("test_active_units", 1) > 0 and row.get("test_kl", 1.0) >= 0.1:
        return None
    return (
        f"posterior collapse: {row.get('test_active_units')} active latent units and a test KL "
        f"of {row.get('test_kl', 0.0):.3f} nats after the last epoch, so the decoder ignores z "
        "and every sample is the same mean image. Train longer, or try "
        "--set train.kl_warmup_epochs=10 or --set train.free_bits=0.1"
    )
