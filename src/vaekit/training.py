"""Training loop: in-memory uint8 data sliced into batches on the device, Adam with cosine
decay, KL warm-up and free bits, a NaN guard, an optional weight average, per-epoch test
ELBO, atomic checkpoints and exact resume. The model is any `LatentVariableModel`; the loss
is `objectives.TrainingObjective`.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm.auto import tqdm

from vaekit import distributed
from vaekit.checkpoint import (
    CHECKPOINT_NAME,
    TrainingState,
    checkpoint_config,
    checkpoint_path,
    load_checkpoint,
    save_checkpoint,
)
from vaekit.config import Config, validate
from vaekit.data import Dataset
from vaekit.data.splits import Splits, load_splits, sample_values
from vaekit.data.streaming import NpyShards
from vaekit.device import autocast, resolve_device, rng_state, set_rng_state
from vaekit.errors import TrainingDiverged, VaekitError
from vaekit.evaluation import evaluate
from vaekit.models import LatentVariableModel, build_model
from vaekit.objectives import TrainingObjective
from vaekit.runs import (
    append_metrics,
    collapse_note,
    read_metrics,
    truncate_metrics,
    write_config,
)


def learning_rate(config: Config, step: int, total_steps: int, time_fraction: float = 0.0) -> float:
    """Cosine decay from lr to lr_final over the whole run, after a linear ramp from 0 over
    the first `lr_warmup_steps` (Adam's first updates move every weight by about lr at once,
    which a deep unnormalised convolutional stack does not survive at full rate). The run's
    progress is the larger of its fraction of steps and `time_fraction`, its fraction of a
    time budget (`TimeBudget`)."""
    t = config.train
    frac = min(1.0, max(step / max(1, total_steps), time_fraction))
    lr = t.lr_final + 0.5 * (t.lr - t.lr_final) * (1.0 + math.cos(math.pi * frac))
    if step < t.lr_warmup_steps:
        lr *= (step + 1) / t.lr_warmup_steps
    return lr


_clock = time.perf_counter  # TimeBudget's clock (a test gives it a fake one)


class TimeBudget:
    """A run's wall-clock budget (`train.time_budget_s`): the learning rate decays over the
    budget when the budget ends before the epochs do, and an epoch that would end past the
    budget is not started (the first epoch always runs). Time counts every epoch of the run,
    steps and monitor, across resumes (each metrics row's `elapsed_seconds`). The clock is
    read at epoch starts only and all-reduced, and within an epoch time is extrapolated from
    the last epoch's pace, so every rank follows the same schedule. A budgeted run is not
    bit-reproducible: its learning rates depend on the machine's speed."""

    def __init__(self, budget_s: float | None, rows: list[dict[str, Any]]):
        self.budget = budget_s
        done = [r for r in rows if "elapsed_seconds" in r]
        self.spent_before = done[-1]["elapsed_seconds"] if done else 0.0
        self.clock = _clock()
        # (seconds, step) at the last epoch start: the pace comes from two of them
        self.last: tuple[float, int] | None = None
        if done:
            prev = done[-2] if len(done) > 1 else {"elapsed_seconds": 0.0, "step": 0}
            self.last = (prev["elapsed_seconds"], prev["step"])
        self.per_step: float | None = None
        self.epoch_start = (self.spent_before, 0)

    def spent(self) -> float:
        """Seconds the run has trained, this process and earlier ones."""
        return self.spent_before + _clock() - self.clock

    def begin_epoch(self, step: int, steps: int) -> bool:
        """Agree on the time spent at this epoch's start; False when an epoch of `steps`
        steps would end past the budget."""
        if self.budget is None:
            return True
        now = distributed.all_reduce_(torch.tensor([self.spent()], dtype=torch.float64), "max")
        spent = float(now[0])
        if self.last is not None and step > self.last[1]:
            self.per_step = (spent - self.last[0]) / (step - self.last[1])
        self.last = self.epoch_start = (spent, step)
        if self.per_step is None:
            return spent < self.budget
        return spent + self.per_step * steps <= self.budget

    def fraction(self, step: int) -> float:
        """The budget's fraction spent by `step` (0 without a budget)."""
        if self.budget is None:
            return 0.0
        spent, start = self.epoch_start
        return (spent + (self.per_step or 0.0) * (step - start)) / self.budget


def kl_weight(config: Config, step: int, steps_per_epoch: int) -> float:
    """beta, ramped linearly from 0 over `kl_warmup_epochs`."""
    t = config.train
    if t.kl_warmup_epochs <= 0:
        return t.beta
    return t.beta * min(1.0, step / (t.kl_warmup_epochs * steps_per_epoch))


def make_optimizer(model: nn.Module, config: Config, device: torch.device) -> torch.optim.Adam:
    """Adam; the fused kernel where available (on CPU it is ~5x faster than the default)."""
    t = config.train
    try:
        return torch.optim.Adam(
            model.parameters(),
            lr=t.lr,
            weight_decay=t.weight_decay,
            fused=device.type in ("cpu", "cuda"),
        )
    except (RuntimeError, TypeError):
        return torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)


def _match_layouts(opt: torch.optim.Optimizer) -> None:
    """Give each restored moment its parameter's memory layout: the saved moments are
    contiguous, and fused Adam, which walks a channels-last weight and its moments as one
    buffer, drifts when their layouts differ (a conv run's resume was not exact)."""
    for p, st in opt.state.items():
        for name, v in st.items():
            if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                st[name] = torch.empty_like(p, dtype=v.dtype).copy_(v)


def weight_average(
    model: LatentVariableModel, decay: float, state: TrainingState
) -> AveragedModel | None:
    """An exponential moving average of `model`'s weights (None when `decay` is 0). On
    resume the checkpoint's model is the average and `state.raw_weights` the optimizer's
    weights: the average starts from the former, the model goes back to the latter."""
    if not decay:
        return None
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    if state.raw_weights is not None:
        model.load_state_dict(state.raw_weights)
        ema.n_averaged.fill_(1)  # an average under way: the next update blends, not copies
    return ema


def _epoch_batches(
    train: torch.Tensor | NpyShards,
    t,
    world,
    data_gen: torch.Generator,
    b: int,
    steps: int,
    epoch: int,
    device: torch.device,
):
    """This rank's uint8 batches for one epoch: slices of an in-memory tensor through a
    permutation, or streamed shards through a DataLoader with workers."""
    n = len(train)
    if isinstance(train, NpyShards):
        if world.active:
            sampler = DistributedSampler(train, world.size, world.rank, seed=t.seed, drop_last=True)
            sampler.set_epoch(epoch)
        else:
            sampler = RandomSampler(train, generator=data_gen)
        loader = DataLoader(
            train,
            batch_size=b,
            sampler=sampler,
            drop_last=True,
            num_workers=t.workers,
            persistent_workers=False,
        )
        for batch in loader:
            yield batch.to(device, non_blocking=True)
        return
    shard = n // world.size
    perm = torch.randperm(n, generator=data_gen)[world.rank : shard * world.size : world.size]
    perm = perm.to(device)
    for i in range(steps):
        yield train[perm[i * b : (i + 1) * b]]


def _clip_gradients(
    params: list[torch.Tensor], max_norm: float | None, scale_always: bool
) -> torch.Tensor:
    """Clip the total gradient norm to `max_norm` (None: only measure it); returns the norm.

    On a CPU the norm is on the host already, so the rescaling pass (one kernel per
    parameter) runs only when the norm is over the limit; on accelerators it always runs,
    as a look at the norm would stall the device queue.
    """
    if not hasattr(torch.nn.utils, "get_total_norm"):  # torch < 2.6
        return torch.nn.utils.clip_grad_norm_(params, max_norm or math.inf)
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads)
    if max_norm is not None and (scale_always or norm.item() > max_norm):
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return norm


class DivergenceGuard:
    """Stops training when the loss or gradient norm stops being finite, without letting a
    bad step touch the weights, so the last good checkpoint (and the model) stay valid.

    Fused Adam skips a step on the device when told to (`found_inf`), so the host only
    has to look every `interval` steps: on a GPU a per-step look would stall the queue.
    Other optimizers are checked before every step.
    """

    def __init__(self, opt: torch.optim.Optimizer, device: torch.device, run_dir: Path):
        self.skips_on_device = bool(opt.defaults.get("fused"))
        self.interval = 1 if device.type == "cpu" else 50
        self.flag = torch.zeros((), dtype=torch.bool, device=device)
        self.run_dir = run_dir

    def record(self, bad: torch.Tensor) -> None:
        self.flag |= bad

    def due(self, i: int) -> bool:
        return (i + 1) % self.interval == 0

    def check(self, bad: torch.Tensor, epoch: int, step: int) -> None:
        if bool(bad):
            late = "" if self.interval == 1 else f" (or up to {self.interval} steps before)"
            raise TrainingDiverged(
                f"the loss or its gradient stopped being finite at epoch {epoch + 1}, step {step}"
                f"{late}"
                f"; the last good checkpoint in {self.run_dir} is kept. Try a lower "
                "--set train.lr=..."
            )


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
    progress = progress and world.is_main
    model, config, state, splits = _start(config, run_dir, resume, device, dataset)
    notes = _resume_notes(given, config) if resume else []
    t = config.train
    if total_epochs is not None:
        if total_epochs < state.epoch:
            raise VaekitError(
                f"{run_dir} has trained {state.epoch} epochs already; --epochs {total_epochs} "
                f"would not extend it (give a total of at least {state.epoch})"
            )
        t.epochs = total_epochs
    if world.is_main:
        if resume:
            truncate_metrics(run_dir, state.epoch)
        write_config(run_dir, config)
    distributed.barrier()

    if device.type == "cpu":
        # oneDNN's convolutions run faster on channels-last weights (benchmarks/conv_layout.py
        # times both layouts); the saved tensors are contiguous either way, and a
        # matrix-only model is unchanged.
        model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, config, device)
    # The same permutation on every rank (each takes a strided shard of it); different noise.
    data_gen = torch.Generator(device="cpu").manual_seed(t.seed)
    torch.manual_seed(t.seed + world.rank)
    if resume:
        if state.optimizer is not None:
            opt.load_state_dict(state.optimizer)
            _match_layouts(opt)
        if not world.active:
            set_rng_state(state.rng, device)
        if "data" in state.rng:
            data_gen.set_state(state.rng["data"])
    guard = DivergenceGuard(opt, device, run_dir)
    ema = weight_average(model, t.ema, state)
    # what is evaluated each epoch, saved and handed to `on_epoch`: the average, if any
    evaluated = model if ema is None else ema.module
    params = [p for p in model.parameters() if p.requires_grad]
    step_fn: nn.Module = TrainingObjective(model, t.objective, t.iw_k)
    if world.active:
        step_fn = DistributedDataParallel(step_fn)
    if t.compile:
        step_fn = torch.compile(step_fn)
    # beta enters the step as a device tensor: a Python float that changes at every step of
    # a KL warm-up would make torch.compile trace the step again.
    beta_t = torch.zeros((), device=device)
    cast, bf16 = autocast(config, device)

    shard = len(splits.train) // world.size
    b = min(t.batch_size, shard)
    steps_per_epoch = shard // b  # drop the ragged last batch: equal-size steps on every rank
    total_steps = steps_per_epoch * t.epochs
    if not resume:
        notes += _data_notes(len(splits.train), steps_per_epoch, t.epochs)
    for note in notes if world.is_main else []:
        tqdm.write(f"warning: {note}", file=sys.stderr)
    step = state.step
    budget = TimeBudget(t.time_budget_s, read_metrics(run_dir) if resume else [])
    for epoch in range(state.epoch, t.epochs):
        if not budget.begin_epoch(step, steps_per_epoch):
            if progress:
                tqdm.write(
                    f"stopping at the time budget (train.time_budget_s = {t.time_budget_s:g}): "
                    f"{budget.epoch_start[0]:,.0f} s spent in {epoch} of {t.epochs} epochs, "
                    "and another would end past it"
                )
            break
        model.train()
        batches = _epoch_batches(
            splits.train, t, world, data_gen, b, steps_per_epoch, epoch, device
        )
        # loss, bound, reconstruction, kl: summed on the device, read once per epoch
        sums = torch.zeros(4, dtype=torch.float64, device=device)
        skipped = torch.zeros((), dtype=torch.int64, device=device)
        t0 = time.perf_counter()
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"epoch {epoch + 1}/{t.epochs}",
            unit="step",
            disable=not progress,
            leave=False,
            mininterval=0.5,
        )
        for i, raw in zip(bar, batches, strict=False):
            x = model.pixels.values(raw, train=True)
            lr = learning_rate(config, step, total_steps, budget.fraction(step))
            for g in opt.param_groups:
                g["lr"] = lr
            beta = kl_weight(config, step, steps_per_epoch)
            beta_t.fill_(beta)
            with cast:
                loss, bound, rec, kl = step_fn(x, beta_t, t.free_bits)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            # DDP has all-reduced the gradients, so every rank sees the same norm: a NaN on
            # any rank is a NaN on all, and they all stop together without an extra collective.
            gnorm = _clip_gradients(params, t.grad_clip, scale_always=device.type != "cpu")
            bad = ~(torch.isfinite(gnorm) & torch.isfinite(loss.detach()))
            # A finite gradient far above the usual norm (a rare bad batch in a deep
            # hierarchy) skips the update instead of stopping the run (NVAE, VDVAE).
            skip = bad if t.grad_skip is None else bad | (gnorm > t.grad_skip)
            if guard.skips_on_device:
                opt.found_inf = skip.float()  # the fused kernel leaves weights untouched
                opt.step()
            else:
                guard.check(bad, epoch, step + 1)
                if t.grad_skip is None or not bool(skip):
                    opt.step()
            if ema is not None:
                ema.update_parameters(model)
            skipped += skip & ~bad
            guard.record(bad)
            step += 1
            parts = [loss.detach(), bound.detach().mean()]
            if rec is not None:
                parts += [rec.detach().mean(), kl.detach().mean()]
            sums[: len(parts)] += torch.stack(parts).to(sums)
            if guard.due(i):
                guard.check(guard.flag, epoch, step)
            if progress and (i % 20 == 0 or i == steps_per_epoch - 1):
                shown = (sums / (i + 1)).tolist()
                bar.set_postfix(
                    loss=f"{shown[0]:.2f}",
                    rec=f"{shown[2]:.2f}",
                    kl=f"{shown[3]:.2f}",
                    elbo=f"{shown[1]:.2f}",
                    img_s=f"{(i + 1) * b * world.size / (time.perf_counter() - t0):.0f}",
                    refresh=False,
                )
        bar.close()
        train_s = time.perf_counter() - t0
        guard.check(guard.flag, epoch, step)
        if t.grad_skip is not None and int(skipped) == steps_per_epoch:
            raise TrainingDiverged(
                f"every update of epoch {epoch + 1} was skipped: the gradient norm stayed above "
                f"train.grad_skip = {t.grad_skip:g}, so the weights can no longer change; the "
                f"last good checkpoint in {run_dir} is kept. Try a lower --set train.lr=... "
                "or a higher train.grad_skip"
            )
        means = (distributed.all_reduce_(sums.cpu()) / (world.size * steps_per_epoch)).tolist()
        if world.is_main:
            row = _end_epoch(
                evaluated,
                splits,
                config,
                epoch,
                step,
                lr,
                beta,
                means,
                train_s,
                steps_per_epoch * b * world.size,
                world.size,
                bf16,
            )
            if epoch + 1 == t.epochs and (collapse := collapse_note(row)):
                notes.append(collapse)
                tqdm.write(f"warning: {collapse}", file=sys.stderr)
            if t.grad_skip is not None:
                row["skipped_steps"] = int(skipped)
            row["elapsed_seconds"] = budget.spent()  # the run's wall time: steps and monitor
            if notes:
                row["warnings"], notes = notes, []
            # Metrics first: a crash before the checkpoint lands only repeats this epoch on
            # resume, and resume drops rows past the checkpoint, so no epoch is lost or doubled.
            append_metrics(run_dir, row)
            rng = {**rng_state(device), "data": data_gen.get_state()}
            raw = None if ema is None else model.state_dict()
            save_checkpoint(
                checkpoint_path(run_dir),
                evaluated,
                config,
                TrainingState(epoch + 1, step, opt.state_dict(), rng, raw),
            )
            if progress:
                tqdm.write(
                    f"epoch {epoch + 1:3d}  train loss {row['train_loss']:8.3f}  "
                    f"test elbo {row['test_elbo']:8.3f}  (rec {row['test_reconstruction']:8.3f}, "
                    f"kl {row['test_kl']:6.3f}, AU {row['test_active_units']})  "
                    f"{row['images_per_s']:,.0f} img/s"
                )
            if on_epoch is not None:
                on_epoch(row, evaluated)
        distributed.barrier()
    return run_dir


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


def _resume_notes(given: Config | None, run: Config) -> list[str]:
    """A warning naming the settings of `given` that differ from the resumed run's own."""
    if given is None:
        return []
    a, b = given.to_dict(), run.to_dict()
    differ = [
        f"{section}.{k}"
        for section in ("model", "train")
        for k in a[section]
        if a[section][k] != b[section].get(k) and k not in ("epochs", "image_shape")
    ]
    if not differ:
        return []
    return [
        "resume continues with the run's own settings; these given settings differ and were "
        f"ignored: {', '.join(differ)}. Start a new run (another --out) to change them"
    ]


def _end_epoch(
    model, splits, config, epoch, step, lr, beta, means, train_s, images, world_size, bf16
) -> dict[str, Any]:
    """The epoch's metrics row, with the test split's ELBO (one sample per image)."""
    t = config.train
    # a monitor, not a score: one seeded stream is enough (per-example streams cost ~0.3 s)
    test = evaluate(
        model,
        splits.test[: t.monitor_images],
        k=0,
        batch_size=t.eval_batch_size,
        seed=t.seed,
        shard=False,
        example_noise=False,
    )
    row = {
        "epoch": epoch + 1,
        "step": step,
        "lr": lr,
        "beta": beta,
        "train_loss": means[0],
        "train_bound": means[1],
        "train_reconstruction": means[2],
        "train_kl": means[3],
        "test_elbo": test["elbo"],
        "test_reconstruction": test["reconstruction"],
        "test_kl": test["kl"],
        "test_active_units": test["active_units"],
        "images_per_s": images / train_s,
        "train_seconds": train_s,
        "world_size": world_size,
        "autocast": "bf16" if bf16 else None,
    }
    if t.objective == "iwae":
        row["train_bound_name"] = f"iwae-k{t.iw_k}"
    if t.ema:
        row["test_weights"] = f"ema-{t.ema:g}"  # the training columns are the raw weights'
    return row
