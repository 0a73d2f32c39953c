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


def cpu_flags() -> str:
    """The CPU's vector-unit flags that decide matmul speed (AVX2, AVX-512, bf16, AMX)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                keep = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "fma")
                return " ".join(f for f in line.split(":", 1)[1].split() if f in keep)
    except OSError:
        pass
    return platform.machine()


def git_commit() -> str:
    """The commit the numbers were measured at (with '+dirty' for uncommitted changes)."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            # rows appended by an earlier benchmark of the same chain are not code changes
            [
                "git",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ".",
                ":!benchmarks/results",
            ],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return sha + ("+dirty" if dirty else "")


# Read when the script starts: a long run's row names the code it ran, not what was
# committed while it ran.
GIT_COMMIT = git_commit()


def command() -> str:
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def append_result(name: str, row: dict) -> Path:
    """Append one JSON row to benchmarks/results/NAME.jsonl (the record BENCHMARKS.md quotes)."""
    RESULTS.mkdir(exist_ok=True)
    row = {**row, "cpu_flags": cpu_flags(), "git_commit": GIT_COMMIT}
    path = RESULTS / f"{name}.jsonl"
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
    return path
