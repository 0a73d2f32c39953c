"""One optimizer step and what guards it: Adam, gradient clipping and skipping, the NaN
guard, and the weight average."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from vaekit.checkpoint import TrainingState
from vaekit.config import Config
from vaekit.device import autocast
from vaekit.errors import TrainingDiverged
from vaekit.models import LatentVariableModel
from vaekit.objectives import TrainingObjective


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


def clip_gradients(
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
        """Remember whether this step's loss or gradient was not finite."""
        self.flag |= bad

    def due(self, i: int) -> bool:
        """Whether the host looks at the flag after step `i` of an epoch."""
        return (i + 1) % self.interval == 0

    def check(self, bad: torch.Tensor, epoch: int, step: int) -> None:
        """Stop with TrainingDiverged where `bad` is set; the last good checkpoint stays."""
        if bool(bad):
            late = "" if self.interval == 1 else f" (or up to {self.interval} steps before)"
            raise TrainingDiverged(
                f"the loss or its gradient stopped being finite at epoch {epoch + 1}, step {step}"
                f"{late}"
                f"; the last good checkpoint in {self.run_dir} is kept. Try a lower "
                "--set train.lr=..."
            )


class Stepper:
    """The optimizer step of a run: Adam (restored on resume), the objective (wrapped in
    DDP and torch.compile when asked), bf16 autocast, clipping, skipping, the NaN guard and
    the weight average. `evaluated` is what is evaluated, saved and handed on: the
    average, if any."""

    def __init__(
        self,
        model: LatentVariableModel,
        config: Config,
        state: TrainingState,
        device: torch.device,
        distributed_active: bool,
        run_dir: Path,
    ):
        t = config.train
        self.model, self.train_config = model, t
        self.opt = make_optimizer(model, config, device)
        if state.optimizer is not None:
            self.opt.load_state_dict(state.optimizer)
            _match_layouts(self.opt)
        self.guard = DivergenceGuard(self.opt, device, run_dir)
        self.ema = weight_average(model, t.ema, state)
        self.evaluated = model if self.ema is None else self.ema.module
        self.params = [p for p in model.parameters() if p.requires_grad]
        step_fn: nn.Module = TrainingObjective(model, t.objective, t.iw_k)
        if distributed_active:
            step_fn = DistributedDataParallel(step_fn)
        if t.compile:
            step_fn = torch.compile(step_fn)
        self.step_fn = step_fn
        # beta enters the step as a device tensor: a Python float that changes at every
        # step of a KL warm-up would make torch.compile trace the step again.
        self.beta = torch.zeros((), device=device)
        self.cast, self.bf16 = autocast(config, device)
        self.scale_always = device.type != "cpu"

    def set_lr(self, lr: float) -> None:
        """Set every parameter group's learning rate."""
        for g in self.opt.param_groups:
            g["lr"] = lr

    def __call__(self, x: torch.Tensor, beta: float, epoch: int, step: int):
        """One update on batch `x`; returns (loss, bound, rec, kl, skipped) on the device.
        `step` is the number of updates before this one."""
        t = self.train_config
        self.beta.fill_(beta)
        with self.cast:
            loss, bound, rec, kl = self.step_fn(x, self.beta, t.free_bits)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        # DDP has all-reduced the gradients, so every rank sees the same norm: a NaN on any
        # rank is a NaN on all, and they all stop together without an extra collective.
        gnorm = clip_gradients(self.params, t.grad_clip, scale_always=self.scale_always)
        bad = ~(torch.isfinite(gnorm) & torch.isfinite(loss.detach()))
        # A finite gradient far above the usual norm (a rare bad batch in a deep hierarchy)
        # skips the update instead of stopping the run (NVAE, VDVAE).
        skip = bad if t.grad_skip is None else bad | (gnorm > t.grad_skip)
        if self.guard.skips_on_device:
            self.opt.found_inf = skip.float()  # the fused kernel leaves weights untouched
            self.opt.step()
        else:
            self.guard.check(bad, epoch, step + 1)
            if t.grad_skip is None or not bool(skip):
                self.opt.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.guard.record(bad)
        return loss, bound, rec, kl, skip & ~bad
