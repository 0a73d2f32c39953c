"""One epoch of a run: its updates with a progress bar, then (on rank 0) its metrics row,
the metrics file and the checkpoint."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from vaekit import distributed
from vaekit.checkpoint import TrainingState, checkpoint_path, save_checkpoint
from vaekit.device import rng_state
from vaekit.errors import TrainingDiverged
from vaekit.evaluation import evaluate
from vaekit.registry import OBJECTIVES
from vaekit.run import collapse_note
from vaekit.training.batches import epoch_batches
from vaekit.training.schedules import kl_weight, learning_rate
from vaekit.training.start import Start
from vaekit.training.step import Stepper


@dataclass
class EpochTotals:
    """What one epoch's updates leave: the mean loss, bound, reconstruction and KL over
    every rank, the skipped updates, its seconds, and the last learning rate and beta."""

    means: list[float]
    skipped: int
    seconds: float
    lr: float
    beta: float


def _bar(run: Start, epoch: int, progress: bool):
    t = run.config.train
    return tqdm(
        range(run.steps_per_epoch),
        desc=f"epoch {epoch + 1}/{t.epochs}",
        unit="step",
        disable=not progress,
        leave=False,
        mininterval=0.5,
    )


def run_epoch(run: Start, stepper: Stepper, epoch: int, budget, progress: bool) -> EpochTotals:
    """The epoch's updates; `run.step` advances with them."""
    t, model, world, device = run.config.train, run.model, run.world, run.device
    model.train()
    batches = epoch_batches(
        run.splits.train, t, world, run.data_gen, run.batch, run.steps_per_epoch, epoch, device
    )
    # loss, bound, reconstruction, kl: summed on the device, read once per epoch
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    skipped = torch.zeros((), dtype=torch.int64, device=device)
    t0 = time.perf_counter()
    bar = _bar(run, epoch, progress)
    guard = stepper.guard
    for i, raw in zip(bar, batches, strict=False):
        x = model.pixels.values(raw, train=True)
        lr = learning_rate(run.config, run.step, run.total_steps, budget.fraction(run.step))
        stepper.set_lr(lr)
        beta = kl_weight(run.config, run.step, run.steps_per_epoch)
        loss, bound, rec, kl, skip = stepper(x, beta, epoch, run.step)
        skipped += skip
        run.step += 1
        parts = [loss.detach(), bound.detach().mean()]
        if rec is not None:
            parts += [rec.detach().mean(), kl.detach().mean()]
        sums[: len(parts)] += torch.stack(parts).to(sums)
        if guard.due(i):
            guard.check(guard.flag, epoch, run.step)
        if progress and (i % 20 == 0 or i == run.steps_per_epoch - 1):
            shown = (sums / (i + 1)).tolist()
            bar.set_postfix(
                loss=f"{shown[0]:.2f}",
                rec=f"{shown[2]:.2f}",
                kl=f"{shown[3]:.2f}",
                elbo=f"{shown[1]:.2f}",
                img_s=f"{(i + 1) * run.batch * world.size / (time.perf_counter() - t0):.0f}",
                refresh=False,
            )
    bar.close()
    seconds = time.perf_counter() - t0
    guard.check(guard.flag, epoch, run.step)
    if t.grad_skip is not None and int(skipped) == run.steps_per_epoch:
        raise TrainingDiverged(
            f"every update of epoch {epoch + 1} was skipped: the gradient norm stayed above "
            f"train.grad_skip = {t.grad_skip:g}, so the weights can no longer change; the "
            f"last good checkpoint in {run.run_dir} is kept. Try a lower --set train.lr=... "
            "or a higher train.grad_skip"
        )
    means = (distributed.all_reduce_(sums.cpu()) / (world.size * run.steps_per_epoch)).tolist()
    return EpochTotals(means, int(skipped), seconds, lr, beta)


def metrics_row(run: Start, stepper: Stepper, epoch: int, totals: EpochTotals) -> dict[str, Any]:
    """The epoch's metrics row, with the test split's ELBO (one sample per image)."""
    t = run.config.train
    # a monitor, not a score: one seeded stream is enough (per-example streams cost ~0.3 s)
    test = evaluate(
        stepper.evaluated,
        run.splits.test[: t.monitor_images],
        k=0,
        batch_size=t.eval_batch_size,
        seed=t.seed,
        shard=False,
        example_noise=False,
    )
    means, images = totals.means, run.steps_per_epoch * run.batch * run.world.size
    row = {
        "epoch": epoch + 1,
        "step": run.step,
        "lr": totals.lr,
        "beta": totals.beta,
        "train_loss": means[0],
        "train_bound": means[1],
        "train_reconstruction": means[2],
        "train_kl": means[3],
        "test_elbo": test["elbo"],
        "test_reconstruction": test["reconstruction"],
        "test_kl": test["kl"],
        "test_active_units": test["active_units"],
        "images_per_s": images / totals.seconds,
        "train_seconds": totals.seconds,
        "world_size": run.world.size,
        "autocast": "bf16" if stepper.bf16 else None,
    }
    if bound_name := OBJECTIVES.get(t.objective).bound_name(t.iw_k):
        row["train_bound_name"] = bound_name
    if t.ema:
        row["test_weights"] = f"ema-{t.ema:g}"  # the training columns are the raw weights'
    return row


def finish_epoch(
    run: Start, stepper: Stepper, epoch: int, totals: EpochTotals, elapsed: float, progress: bool
) -> dict[str, Any]:
    """Rank 0's end of an epoch: the metrics row appended, then the checkpoint written."""
    t = run.config.train
    row = metrics_row(run, stepper, epoch, totals)
    if epoch + 1 == t.epochs and (collapse := collapse_note(row)):
        run.notes.append(collapse)
        tqdm.write(f"warning: {collapse}", file=sys.stderr)
    if t.grad_skip is not None:
        row["skipped_steps"] = totals.skipped
    row["elapsed_seconds"] = elapsed  # the run's wall time: steps and monitor
    if run.notes:
        row["warnings"], run.notes = run.notes, []
    # Metrics first: a crash before the checkpoint lands only repeats this epoch on resume,
    # and resume drops rows past the checkpoint, so no epoch is lost or doubled.
    run.folder.append_metrics(row)
    rng = {**rng_state(run.device), "data": run.data_gen.get_state()}
    raw = None if stepper.ema is None else run.model.state_dict()
    state = TrainingState(epoch + 1, run.step, stepper.opt.state_dict(), rng, raw)
    save_checkpoint(checkpoint_path(run.run_dir), stepper.evaluated, run.config, state)
    if progress:
        tqdm.write(
            f"epoch {epoch + 1:3d}  train loss {row['train_loss']:8.3f}  "
            f"test elbo {row['test_elbo']:8.3f}  (rec {row['test_reconstruction']:8.3f}, "
            f"kl {row['test_kl']:6.3f}, AU {row['test_active_units']})  "
            f"{row['images_per_s']:,.0f} img/s"
        )
    return row
