"""Starting a run, new or resumed: its model, config, training position and data."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from vaekit import distributed
from vaekit.checkpoint import CHECKPOINT_NAME, TrainingState, checkpoint_config, load_checkpoint
from vaekit.config import Config, validate
from vaekit.data import Dataset
from vaekit.data.splits import Splits, load_splits, sample_values
from vaekit.device import resolve_device, set_rng_state
from vaekit.errors import VaekitError
from vaekit.models import LatentVariableModel, build_model
from vaekit.run import RunFolder


def _start(
    config: Config, run_dir: Path, resume: bool, device: torch.device, dataset: Dataset | None
) -> tuple[LatentVariableModel, Config, TrainingState, Splits]:
    """The model, its config and training position, and the prepared data splits."""
    state = TrainingState()
    if resume:
        model, config, state = load_checkpoint(run_dir, map_location=str(device), with_state=True)
    elif (run_dir / CHECKPOINT_NAME).exists():
        raise VaekitError(f"{run_dir} already holds a run: pass --resume, or choose another --out")
    torch.manual_seed(config.train.seed)
    splits = load_splits(config, device, dataset)
    if resume:
        if list(model.config.image_shape) != splits.image_shape:
            raise VaekitError(f"{run_dir}: the data's image shape differs from the checkpoint's")
        return model, config, state, splits
    config.model.image_shape = splits.image_shape
    try:
        model = build_model(config.model).to(device)
    except ValueError as e:  # an unknown architecture, activation, prior or pixel mode
        raise VaekitError(f"model config: {e}") from e
    values = sample_values(splits.train, config.model.pixels, config.train.seed)
    model.init_from_data(values.to(device), output_bias=config.train.init_output_bias)
    return model, config, state, splits


SMALL_RUN_STEPS = 1000  # fewer optimizer steps than this rarely trains a VAE of these sizes


def _data_notes(n_train: int, steps_per_epoch: int, epochs: int) -> list[str]:
    """A warning when the data and epochs give too few optimizer steps for the model to learn."""
    steps = steps_per_epoch * epochs
    if steps >= SMALL_RUN_STEPS:
        return []
    need = math.ceil(SMALL_RUN_STEPS / max(1, steps_per_epoch))
    return [
        f"only {n_train} training images: {steps} optimizer steps in all ({epochs} epochs of "
        f"{steps_per_epoch}); a VAE usually needs a few thousand. Try --epochs {need}, or a "
        f"smaller batch (--set train.batch_size=32)"
    ]


# settings a resumed run may be given anew without a warning: more epochs, and the image
# shape that a new run's config leaves at its default and the data sets
_RESUME_MAY_DIFFER = frozenset({"epochs", "image_shape"})


def _resume_notes(given: Config | None, run: Config) -> list[str]:
    """A warning naming the settings of `given` that differ from the resumed run's own."""
    if given is None:
        return []
    a, b = given.to_dict(), run.to_dict()
    differ = [
        f"{section}.{k}"
        for section in ("model", "train")
        for k in a[section]
        if a[section][k] != b[section].get(k) and k not in _RESUME_MAY_DIFFER
    ]
    if not differ:
        return []
    return [
        "resume continues with the run's own settings; these given settings differ and were "
        f"ignored: {', '.join(differ)}. Start a new run (another --out) to change them"
    ]


@dataclass
class Start:
    """A run ready for its first (or next) epoch."""

    run_dir: Path
    folder: RunFolder
    config: Config
    model: LatentVariableModel
    state: TrainingState
    splits: Splits
    world: distributed.World
    device: torch.device
    data_gen: torch.Generator
    batch: int
    steps_per_epoch: int
    total_steps: int
    step: int
    notes: list[str] = field(default_factory=list)


def _total_epochs(config: Config, state: TrainingState, total: int | None, run_dir: Path) -> None:
    if total is None:
        return
    if total < state.epoch:
        raise VaekitError(
            f"{run_dir} has trained {state.epoch} epochs already; --epochs {total} "
            f"would not extend it (give a total of at least {state.epoch})"
        )
    config.train.epochs = total


def _seed(model, config: Config, state: TrainingState, world, device, resume: bool):
    """Seed the noise (different on every rank) and the data order (the same on every rank:
    each takes a strided shard of one permutation); a resumed run restores both."""
    t = config.train
    if device.type == "cpu":
        # oneDNN's convolutions run faster on channels-last weights (benchmarks/conv_layout.py
        # times both layouts); the saved tensors are contiguous either way, and a
        # matrix-only model is unchanged.
        model.to(memory_format=torch.channels_last)
    data_gen = torch.Generator(device="cpu").manual_seed(t.seed)
    torch.manual_seed(t.seed + world.rank)
    if resume:
        if not world.active:
            set_rng_state(state.rng, device)
        if "data" in state.rng:
            data_gen.set_state(state.rng["data"])
    return data_gen


def start_run(
    config: Config | None,
    run_dir: Path,
    resume: bool,
    total_epochs: int | None,
    dataset: Dataset | None,
) -> Start:
    """Validate, pick the device, build or load the model, write config.json, seed."""
    if config is None and not resume:
        raise VaekitError("a new run needs a config (vaekit.preset(...) or a Config)")
    if config is not None:
        validate(config)  # a bad setting is one clear line, before anything is written
    given = config
    if resume:  # the run's own config decides threads and device
        config = checkpoint_config(run_dir)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    world, device = distributed.init(resolve_device(config.train.device))
    model, config, state, splits = _start(config, run_dir, resume, device, dataset)
    notes = _resume_notes(given, config) if resume else []
    _total_epochs(config, state, total_epochs, run_dir)
    folder = RunFolder(run_dir)
    if world.is_main:
        if resume:
            folder.truncate_metrics(state.epoch)
        folder.write_config(config)
    distributed.barrier()
    data_gen = _seed(model, config, state, world, device, resume)
    t = config.train
    shard = len(splits.train) // world.size
    b = min(t.batch_size, shard)
    steps = shard // b  # drop the ragged last batch: equal-size steps on every rank
    if not resume:
        notes += _data_notes(len(splits.train), steps, t.epochs)
    for note in notes if world.is_main else []:
        tqdm.write(f"warning: {note}", file=sys.stderr)
    return Start(
        run_dir,
        folder,
        config,
        model,
        state,
        splits,
        world,
        device,
        data_gen,
        b,
        steps,
        steps * t.epochs,
        state.step,
        notes,
    )
