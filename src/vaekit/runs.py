"""The files of a run folder besides the checkpoint: config.json and metrics.jsonl."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vaekit.config import Config
from vaekit.fileio import atomic_write_text

METRICS_NAME = "metrics.jsonl"
CONFIG_NAME = "config.json"


def write_config(run_dir: Path, config: Config) -> None:
    """config.json: the run's full config, for people (the checkpoint holds its own copy)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / CONFIG_NAME, config.to_json())


def append_metrics(run_dir: Path, row: dict[str, Any]) -> None:
    """One JSON object per epoch, appended."""
    with open(run_dir / METRICS_NAME, "a") as f:
        f.write(json.dumps(row) + "\n")


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of metrics.jsonl ([] when there is none)."""
    path = run_dir / METRICS_NAME
    if not path.exists():
        return []
    return [json.loads(r) for r in path.read_text().splitlines() if r.strip()]


def truncate_metrics(run_dir: Path, epochs_done: int) -> None:
    """Drop rows past the checkpoint, so a resumed run neither loses nor doubles an epoch."""
    path = run_dir / METRICS_NAME
    if path.exists():
        rows = [r for r in path.read_text().splitlines() if r.strip()]
        keep = [r for r in rows if json.loads(r).get("epoch", 0) <= epochs_done]
        atomic_write_text(path, "".join(r + "\n" for r in keep))


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
