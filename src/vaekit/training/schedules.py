"""Schedules over a run: the learning rate, the KL weight beta, and the wall-clock budget."""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from vaekit import distributed
from vaekit.config import Config


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
