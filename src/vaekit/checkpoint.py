"""Checkpoints: one safetensors file holding weights, optimizer state and RNG state.

No pickle anywhere. The file's metadata carries a format tag, the full config as JSON and
the training position, so a checkpoint describes itself and is written atomically.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from vaekit.config import Config
from vaekit.errors import CheckpointError, VaekitError
from vaekit.fileio import atomic_save
from vaekit.models import LatentVariableModel, build_model

FORMAT = "vaekit-checkpoint"
FORMAT_VERSION = "1"
CHECKPOINT_NAME = "checkpoint.safetensors"


@dataclass
class TrainingState:
    """Where a run stands: the next epoch to run, steps taken, and RNG/optimizer state.
    `raw_weights`: with a weight average (`train.ema`) the model saved is the average, and
    these are the weights the optimizer moves, which resume continues from."""

    epoch: int = 0
    step: int = 0
    optimizer: dict[str, Any] | None = None
    rng: dict[str, torch.Tensor] = field(default_factory=dict)
    raw_weights: dict[str, torch.Tensor] | None = None


def checkpoint_path(run: str | Path) -> Path:
    """Accept a run folder or a checkpoint file."""
    run = Path(run)
    return run / CHECKPOINT_NAME if run.is_dir() else run


def weights_fingerprint(model: LatentVariableModel) -> str:
    """SHA-256 over the weights' names, shapes and bytes: identifies a trained model."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(
    path: str | Path, model: LatentVariableModel, config: Config, state: TrainingState
) -> None:
    """Write weights + optimizer + RNG state (+ the raw weights under a weight average)
    atomically to `path`."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_meta: dict[str, Any] = {}
    if state.optimizer is not None:
        opt_meta["param_groups"] = state.optimizer["param_groups"]
        scalars: dict[str, Any] = {}
        for idx, slots in state.optimizer["state"].items():
            for name, v in slots.items():
                if torch.is_tensor(v):
                    tensors[f"optim.{idx}.{name}"] = v.detach().cpu().contiguous()
                else:
                    scalars[f"{idx}.{name}"] = v
        opt_meta["scalars"] = scalars
    for name, t in state.rng.items():
        tensors[f"rng.{name}"] = t.cpu().contiguous()
    for name, t in (state.raw_weights or {}).items():
        tensors[f"raw.{name}"] = t.detach().cpu().contiguous()
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config.to_json(),
        "epoch": str(state.epoch),
        "step": str(state.step),
        "optimizer": json.dumps(opt_meta),
        "fingerprint": weights_fingerprint(model),
    }
    atomic_save(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def _open(path: Path):
    if not path.is_file():
        hint = (
            " (is this a run folder made by `vaekit train`?)"
            if path.name == CHECKPOINT_NAME
            else ""
        )
        raise CheckpointError(f"no checkpoint at {path}{hint}")
    try:
        f = safe_open(str(path), framework="pt")
        meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for damaged headers
        raise CheckpointError(f"{path}: damaged or not a safetensors checkpoint ({e})") from e
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a vaekit checkpoint (no '{FORMAT}' tag)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {meta.get('format_version')} is not supported "
            f"by this vaekit (expects {FORMAT_VERSION})"
        )
    return f, meta


def _config(path: Path, meta: dict[str, str]) -> Config:
    try:
        return Config.from_dict(json.loads(meta["config"]))
    except (KeyError, ValueError, TypeError, VaekitError) as e:
        raise CheckpointError(f"{path}: its config cannot build a model ({e})") from e


def checkpoint_config(run: str | Path) -> Config:
    """The config a checkpoint was trained with, read from its metadata alone."""
    path = checkpoint_path(run)
    return _config(path, _open(path)[1])


def load_checkpoint(
    run: str | Path, map_location: str = "cpu", with_state: bool = False
) -> tuple[LatentVariableModel, Config, TrainingState]:
    """Rebuild the model from a checkpoint (and, if asked, the optimizer/RNG state)."""
    path = checkpoint_path(run)
    f, meta = _open(path)
    config = _config(path, meta)
    try:
        model = build_model(config.model)
    except (KeyError, ValueError, TypeError, VaekitError) as e:
        raise CheckpointError(f"{path}: its config cannot build a model ({e})") from e
    try:
        weights = {k[6:]: f.get_tensor(k) for k in f.keys() if k.startswith("model.")}
    except Exception as e:
        raise CheckpointError(f"{path}: damaged checkpoint, weights unreadable ({e})") from e
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0:3]
        raise CheckpointError(
            f"{path}: weights do not fit the model its config describes: {' '.join(first)}"
        ) from e
    if weights_fingerprint(model) != meta.get("fingerprint"):
        raise CheckpointError(f"{path}: weights fingerprint mismatch: the file is damaged")
    model.to(map_location)
    state = TrainingState(epoch=int(meta.get("epoch", 0)), step=int(meta.get("step", 0)))
    if with_state:
        opt_meta = json.loads(meta.get("optimizer", "{}"))
        if opt_meta:
            slots: dict[int, dict[str, Any]] = {}
            for k in f.keys():
                if k.startswith("optim."):
                    _, idx, name = k.split(".", 2)
                    slots.setdefault(int(idx), {})[name] = f.get_tensor(k)
            for k, v in opt_meta.get("scalars", {}).items():
                idx, name = k.split(".", 1)
                slots.setdefault(int(idx), {})[name] = v
            state.optimizer = {"state": slots, "param_groups": opt_meta["param_groups"]}
        state.rng = {k[4:]: f.get_tensor(k) for k in f.keys() if k.startswith("rng.")}
        raw = {k[4:]: f.get_tensor(k) for k in f.keys() if k.startswith("raw.")}
        state.raw_weights = raw or None
    model.eval()
    return model, config, state
