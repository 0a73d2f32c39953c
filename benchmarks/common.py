"""Shared helpers for benchmark scripts: machine description and result rows."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shlex
import sys
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def machine() -> str:
    """A short description of where the numbers were measured."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (
        f"{cpu}, {os.cpu_count()} cores{gpu}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )


def command() -> str:
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def append_result(name: str, row: dict) -> Path:
    """Append one JSON row to benchmarks/results/NAME.jsonl (the record BENCHMARKS.md quotes)."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.jsonl"
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
    return path
