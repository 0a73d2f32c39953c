"""The training loop: start (or resume) a run, then one epoch after another until the
epochs or the time budget end."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from vaekit import distributed
from vaekit.config import Config
from vaekit.data import Dataset
from vaekit.models import LatentVariableModel
from vaekit.training.epoch import finish_epoch, run_epoch
from vaekit.training.schedules import TimeBudget
from vaekit.training.start import start_run
from vaekit.training.step import Stepper


def train(
    config: Config | None,
    run_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    total_epochs: int | None = None,
    dataset: Dataset | None = None,
    on_epoch: Callable[[dict[str, Any], LatentVariableModel], None] | None = None,
) -> Path:
    """Train (or resume) a run in `run_dir`; returns the run folder. `dataset` replaces the
    configured data source with in-memory arrays (as the anomaly detector does).
    `on_epoch(metrics_row, model)` runs on rank 0 after each epoch's checkpoint is written.

    Under torchrun every process calls this: each rank trains on its shard of every epoch
    through DistributedDataParallel, and rank 0 alone logs and writes checkpoints.
    """
    run_dir = Path(run_dir)
    run = start_run(config, run_dir, resume, total_epochs, dataset)
    progress = progress and run.world.is_main
    stepper = Stepper(run.model, run.config, run.state, run.device, run.world.active, run_dir)
    t = run.config.train
    budget = TimeBudget(t.time_budget_s, run.folder.read_metrics() if resume else [])
    for epoch in range(run.state.epoch, t.epochs):
        if not budget.begin_epoch(run.step, run.steps_per_epoch):
            if progress:
                tqdm.write(
                    f"stopping at the time budget (train.time_budget_s = {t.time_budget_s:g}): "
                    f"{budget.epoch_start[0]:,.0f} s spent in {epoch} of {t.epochs} epochs, "
                    "and another would end past it"
                )
            break
        totals = run_epoch(run, stepper, epoch, budget, progress)
        if run.world.is_main:
            row = finish_epoch(run, stepper, epoch, totals, budget.spent(), progress)
            if on_epoch is not None:
                on_epoch(row, stepper.evaluated)
        distributed.barrier()
    return run_dir
