"""Training loop: in-memory uint8 data sliced into batches on the device, Adam with cosine
decay, KL warm-up and free bits, a NaN guard, per-epoch test ELBO, atomic checkpoints and
exact resume."""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm.auto import tqdm

from vaekit import distributed
from vaekit.checkpoint import (
    CHECKPOINT_NAME,
    TrainingState,
    checkpoint_path,
    load_checkpoint,
    save_checkpoint,
)
from vaekit.config import Config
from vaekit.data import Dataset, load_dataset, prepare_split, to_values
from vaekit.data.pixels import LIKELIHOOD_FOR, PIXEL_MODES
from vaekit.data.streaming import NpyShards, open_shards
from vaekit.errors import TrainingDiverged, VaekitError
from vaekit.evaluation import evaluate
from vaekit.fileio import atomic_write_text
from vaekit.model import VAE
from vaekit.objectives import elbo, iwae_bound

METRICS_NAME = "metrics.jsonl"
CONFIG_NAME = "config.json"


@dataclass
class Splits:
    train: torch.Tensor | NpyShards  # uint8 (N, C, H, W) on the device, or streamed shards
    test: torch.Tensor

    @property
    def image_shape(self) -> list[int]:
        if isinstance(self.train, NpyShards):
            return list(self.train.image_shape)
        return list(self.train.shape[1:])


STREAM_TEST_LIMIT = 10000  # test images held in memory for the per-epoch ELBO when streaming


def load_splits(config: Config, device: torch.device, dataset: Dataset | None = None) -> Splits:
    """Read the configured dataset (or use `dataset`) and prepare both splits."""
    t = config.train
    if t.pixels not in PIXEL_MODES:
        raise VaekitError(f"unknown pixel mode {t.pixels!r}; choose from {', '.join(PIXEL_MODES)}")
    if t.stream:
        if t.pixels == "static-binary":
            raise VaekitError(
                "static-binary needs the whole split in memory; stream with "
                "dynamic-binary, 8bit or continuous pixels"
            )
        train_shards, test_shards = open_shards(t.data)
        n_test = min(len(test_shards), STREAM_TEST_LIMIT, t.limit or STREAM_TEST_LIMIT)
        test = torch.stack([test_shards[i] for i in range(n_test)]).to(device)
        return Splits(train_shards, prepare_split(test, t.pixels, False))
    ds = dataset if dataset is not None else load_dataset(t.data, t.data_dir)
    train, test = ds.train, ds.test
    if t.limit:
        train, test = train[: t.limit], test[: max(1, t.limit // 6)]
    tr = torch.from_numpy(train).to(device)
    te = torch.from_numpy(test).to(device)
    return Splits(prepare_split(tr, t.pixels, True), prepare_split(te, t.pixels, False))


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA, then MPS, then CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise VaekitError("--device cuda: no CUDA device is available here")
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AVX512-BF16 or AMX), where bf16
    matmuls run about twice as fast as float32; elsewhere they are emulated and slower."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def use_bf16(config: Config, device: torch.device) -> bool:
    """Whether training runs under bf16 autocast on `device` (see `bf16` and `cpu_bf16`)."""
    t = config.train
    if device.type == "cuda":
        return t.bf16
    if device.type == "cpu" and t.cpu_bf16:
        if cpu_has_native_bf16():
            return True
        warnings.warn(
            "train.cpu_bf16: this CPU has no native bf16 matmul (AVX512-BF16 or AMX); "
            "training in float32",
            stacklevel=2,
        )
    return False


def data_statistics(
    train: torch.Tensor | NpyShards, pixels: str, seed: int, n: int = 10000
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel mean and standard deviation of the training values (each (C, H, W)),
    from up to `n` images chosen with `seed`."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    idx = torch.randperm(len(train), generator=g)[:n]
    if isinstance(train, NpyShards):
        raw = torch.stack([train[i] for i in idx.tolist()])
    else:
        raw = train[idx.to(train.device)]
    values = to_values(raw, pixels, train=True).float()
    return values.mean(0), values.std(0, correction=0)


def learning_rate(config: Config, step: int, total_steps: int) -> float:
    """Cosine decay from lr to lr_final over the whole run."""
    t = config.train
    frac = min(1.0, step / max(1, total_steps))
    return t.lr_final + 0.5 * (t.lr - t.lr_final) * (1.0 + math.cos(math.pi * frac))


def kl_weight(config: Config, step: int, steps_per_epoch: int) -> float:
    """beta, ramped linearly from 0 over `kl_warmup_epochs`."""
    t = config.train
    if t.kl_warmup_epochs <= 0:
        return t.beta
    return t.beta * min(1.0, step / (t.kl_warmup_epochs * steps_per_epoch))


def make_optimizer(model: VAE, config: Config, device: torch.device) -> torch.optim.Adam:
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


def _rng_state(data_gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {"torch": torch.get_rng_state(), "data": data_gen.get_state()}


def _append_metrics(run_dir: Path, row: dict[str, Any]) -> None:
    with open(run_dir / METRICS_NAME, "a") as f:
        f.write(json.dumps(row) + "\n")


def _truncate_metrics(run_dir: Path, epochs_done: int) -> None:
    path = run_dir / METRICS_NAME
    if path.exists():
        rows = [r for r in path.read_text().splitlines() if r.strip()]
        keep = [r for r in rows if json.loads(r).get("epoch", 0) <= epochs_done]
        atomic_write_text(path, "".join(r + "\n" for r in keep))


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


class _DivergenceGuard:
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


class Objective(nn.Module):
    """The training loss as a module, so that DistributedDataParallel's gradient hooks apply.

    Returns (loss, bound, reconstruction, kl); the last two are None for the IWAE bound.
    """

    def __init__(self, model: VAE, objective: str = "elbo", iw_k: int = 1):
        super().__init__()
        if objective not in ("elbo", "iwae"):
            raise VaekitError(f"unknown objective {objective!r}; use elbo or iwae")
        self.model, self.objective, self.iw_k = model, objective, iw_k

    def forward(self, x: torch.Tensor, beta: float | torch.Tensor = 1.0, free_bits: float = 0.0):
        if self.objective == "iwae":
            bound = iwae_bound(self.model, x, self.iw_k)
            return -bound.mean(), bound, None, None
        terms = elbo(self.model, x, beta=beta, free_bits=free_bits)
        return terms.loss, terms.elbo, terms.reconstruction, terms.kl


def train(
    config: Config,
    run_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    total_epochs: int | None = None,
    dataset: Dataset | None = None,
    on_epoch: Callable[[dict[str, Any], VAE], None] | None = None,
) -> Path:
    """Train (or resume) a run in `run_dir`; returns the run folder. `dataset` replaces the
    configured data source with in-memory arrays (as the anomaly detector does).
    `on_epoch(metrics_row, model)` runs on rank 0 after each epoch's checkpoint is written.

    Under torchrun every process calls this: each rank trains on its shard of every epoch
    through DistributedDataParallel, and rank 0 alone logs and writes checkpoints.
    """
    run_dir = Path(run_dir)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    world, device = distributed.init(resolve_device(config.train.device))
    progress = progress and world.is_main
    state = TrainingState()
    if resume:
        model, config, state = load_checkpoint(run_dir, map_location=str(device), with_state=True)
        if total_epochs is not None:
            config.train.epochs = total_epochs
        distributed.barrier()
        if world.is_main:
            _truncate_metrics(run_dir, state.epoch)
    elif (run_dir / CHECKPOINT_NAME).exists():
        raise VaekitError(f"{run_dir} already holds a run: pass --resume, or choose another --out")
    torch.manual_seed(config.train.seed)
    splits = load_splits(config, device, dataset)
    config.model.image_shape = splits.image_shape
    config.model.likelihood = LIKELIHOOD_FOR[config.train.pixels]
    if not resume:
        try:
            model = VAE(config.model).to(device)
        except ValueError as e:  # an unknown architecture, activation or likelihood
            raise VaekitError(f"model config: {e}") from e
        if config.train.init_output_bias:
            model.init_output_bias(
                *data_statistics(splits.train, config.train.pixels, config.train.seed)
            )
    elif list(model.config.image_shape) != config.model.image_shape:
        raise VaekitError(f"{run_dir}: the data's image shape differs from the checkpoint's")
    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / CONFIG_NAME, config.to_json())

    t = config.train
    opt = make_optimizer(model, config, device)
    # The same permutation on every rank (each takes a strided shard of it); different noise.
    data_gen = torch.Generator(device="cpu").manual_seed(t.seed)
    torch.manual_seed(t.seed + world.rank)
    if resume:
        if state.optimizer is not None:
            opt.load_state_dict(state.optimizer)
        if "torch" in state.rng and not world.active:
            torch.set_rng_state(state.rng["torch"])
        if "data" in state.rng:
            data_gen.set_state(state.rng["data"])
    guard = _DivergenceGuard(opt, device, run_dir)
    params = [p for p in model.parameters() if p.requires_grad]
    step_fn: nn.Module = Objective(model, t.objective, t.iw_k)
    if world.active:
        step_fn = DistributedDataParallel(step_fn)
    if t.compile:
        step_fn = torch.compile(step_fn)
    # beta enters the step as a device tensor: a Python float that changes at every step of
    # a KL warm-up would make torch.compile trace the step again.
    beta_t = torch.zeros((), device=device)
    bf16 = use_bf16(config, device)
    autocast = torch.autocast(device.type if bf16 else "cpu", torch.bfloat16, enabled=bf16)

    n = len(splits.train)
    shard = n // world.size
    b = min(t.batch_size, shard)
    steps_per_epoch = shard // b  # drop the ragged last batch: equal-size steps on every rank
    total_steps = steps_per_epoch * t.epochs
    step = state.step
    for epoch in range(state.epoch, t.epochs):
        model.train()
        batches = _epoch_batches(
            splits.train, t, world, data_gen, b, steps_per_epoch, epoch, device
        )
        # loss, bound, reconstruction, kl: summed on the device, read once per epoch
        sums = torch.zeros(4, dtype=torch.float64, device=device)
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
            x = to_values(raw, t.pixels, train=True)
            lr = learning_rate(config, step, total_steps)
            for g in opt.param_groups:
                g["lr"] = lr
            beta = kl_weight(config, step, steps_per_epoch)
            beta_t.fill_(beta)
            with autocast:
                loss, bound, rec, kl = step_fn(x, beta_t, t.free_bits)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            # DDP has all-reduced the gradients, so every rank sees the same norm: a NaN on
            # any rank is a NaN on all, and they all stop together without an extra collective.
            gnorm = _clip_gradients(params, t.grad_clip, scale_always=device.type != "cpu")
            bad = ~(torch.isfinite(gnorm) & torch.isfinite(loss.detach()))
            if guard.skips_on_device:
                opt.found_inf = bad.float()  # the fused kernel leaves weights untouched
            else:
                guard.check(bad, epoch, step + 1)
            opt.step()
            guard.record(bad)
            step += 1
            parts = [loss.detach(), bound.detach().mean()]
            if rec is not None:
                parts += [rec.detach().mean(), kl.detach().mean()]
            sums[: len(parts)] += torch.stack(parts).to(sums)
            if guard.due(i):
                guard.check(guard.flag, epoch, step)
            if progress and (i % 20 == 0 or i == steps_per_epoch - 1):
                done = i + 1
                shown = (sums / done).tolist()
                bar.set_postfix(
                    loss=f"{shown[0]:.2f}",
                    rec=f"{shown[2]:.2f}",
                    kl=f"{shown[3]:.2f}",
                    elbo=f"{shown[1]:.2f}",
                    img_s=f"{done * b * world.size / (time.perf_counter() - t0):.0f}",
                    refresh=False,
                )
        bar.close()
        train_s = time.perf_counter() - t0
        guard.check(guard.flag, epoch, step)
        means = (distributed.all_reduce_(sums.cpu()) / (world.size * steps_per_epoch)).tolist()
        if world.is_main:
            test = evaluate(
                model,
                splits.test,
                t.pixels,
                k=0,
                batch_size=t.eval_batch_size,
                seed=t.seed,
                shard=False,
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
                "images_per_s": steps_per_epoch * b * world.size / train_s,
                "train_seconds": train_s,
                "world_size": world.size,
                "autocast": "bf16" if bf16 else None,
            }
            if t.objective == "iwae":
                row["train_bound_name"] = f"iwae-k{t.iw_k}"
            # Metrics first: a crash before the checkpoint lands only repeats this epoch on
            # resume, and resume drops rows past the checkpoint, so no epoch is lost or doubled.
            _append_metrics(run_dir, row)
            save_checkpoint(
                checkpoint_path(run_dir),
                model,
                config,
                TrainingState(epoch + 1, step, opt.state_dict(), _rng_state(data_gen)),
            )
            if progress:
                tqdm.write(
                    f"epoch {epoch + 1:3d}  train loss {row['train_loss']:8.3f}  "
                    f"test elbo {test['elbo']:8.3f}  (rec {test['reconstruction']:8.3f}, "
                    f"kl {test['kl']:6.3f}, AU {test['active_units']})  "
                    f"{row['images_per_s']:,.0f} img/s"
                )
            if on_epoch is not None:
                on_epoch(row, model)
        distributed.barrier()
    return run_dir
