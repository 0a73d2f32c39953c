"""Objectives: the ELBO (beta, free bits), the importance-weighted bound, importance-sampled
log p(x), and the training loss as a module. They use only the model interface
(`vaekit.models.base`), so every model family and prior gets them.

All quantities are in nats per example, summed over data dimensions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from typing_extensions import override

from vaekit.errors import VaekitError
from vaekit.models.base import LatentGroup, LatentVariableModel
from vaekit.randomness import BLOCK, ExampleNoise
from vaekit.registry import OBJECTIVES


@dataclass
class ElboTerms:
    """Per-example terms of the ELBO and the scalar training loss."""

    reconstruction: torch.Tensor  # (B,) single-sample estimate of E_q[log p(x|z)]
    kl: torch.Tensor  # (B,) KL(q(z|x) || p(z)) summed over groups
    groups: list[LatentGroup]  # per-group KL (analytic per dimension where available)
    loss: torch.Tensor  # scalar to minimise (beta and free bits applied)

    @property
    def elbo(self) -> torch.Tensor:
        """reconstruction - KL per example (the bound itself, without beta or free bits)."""
        return self.reconstruction - self.kl

    @property
    def kl_per_dim(self) -> torch.Tensor | None:
        """(B, latent_dim) where every group's KL is analytic per dimension, else None."""
        parts = [g.kl_per_dim for g in self.groups]
        return None if any(p is None for p in parts) else torch.cat(parts, -1)


def free_bits_kl(group: LatentGroup, free_bits: float) -> torch.Tensor:
    """The group's batch-mean KL with free bits (Kingma et al. 2016): each dimension's KL
    counts only above `free_bits` nats. Where the KL has no per-dimension split (a Monte-Carlo
    KL against a mixture prior), the group's total counts only above free_bits x D nats."""
    if free_bits <= 0:
        return group.kl.mean()
    if group.kl_per_dim is not None:
        return group.kl_per_dim.mean(0).clamp_min(free_bits).sum()
    return group.kl.mean().clamp_min(free_bits * group.z.shape[-1])


def elbo(
    model: LatentVariableModel,
    x: torch.Tensor,
    beta: float | torch.Tensor = 1.0,
    free_bits: float = 0.0,
    noise: torch.Tensor | None = None,
) -> ElboTerms:
    """One-sample reparameterised ELBO; the loss applies beta and free bits per group."""
    inf = model.infer(x, noise)
    rec = inf.decoded.log_prob(x)
    kl_for_loss = sum(free_bits_kl(g, free_bits) for g in inf.groups)
    loss = -(rec.mean() - beta * kl_for_loss)
    return ElboTerms(rec, inf.kl, inf.groups, loss)


def iwae_bound(model: LatentVariableModel, x: torch.Tensor, k: int) -> torch.Tensor:
    """The importance-weighted bound log (1/k) sum_k w_k (Burda et al. 2016), per example."""
    log_w, _ = model.log_weights(x, k)
    return torch.logsumexp(log_w, 0) - math.log(k)


@dataclass
class ImportanceTerms:
    """Per-example results of one importance-sampling pass with K samples from q(z|x)."""

    log_px: torch.Tensor  # log (1/K) sum_k w_k
    reconstruction: torch.Tensor  # (1/K) sum_k log p(x|z_k), a K-sample E_q[log p(x|z)]


@torch.no_grad()
def importance_sampled_terms(
    model: LatentVariableModel,
    x: torch.Tensor,
    k: int,
    noise: ExampleNoise | None = None,
    max_batch: int | None = None,
    posterior_groups: int | None = None,
) -> ImportanceTerms:
    """log p(x) ~= log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(z|x), per example,
    with the K-sample reconstruction term from the same samples.

    K is processed in chunks whose running log-sum-exp is exact, so memory does not grow
    with K. A lower bound in expectation that tightens as K grows (Burda et al. 2016).
    With `noise` (one stream per example) the samples, and so the result, depend on the
    example alone: chunks are whole blocks of that stream, and a batch too large for one
    chunk is split into sub-batches. `posterior_groups = j` estimates p_{>j}(x) instead, the
    likelihood with only the top j groups inferred (`LatentVariableModel.log_weights`).
    """
    extra = {} if posterior_groups is None else {"posterior_groups": posterior_groups}
    max_batch = max_batch or model.decode_batch_limit
    per_chunk = max(1, max_batch // max(1, x.shape[0]))
    if noise is not None and per_chunk < BLOCK and x.shape[0] > 1:
        rows = max(1, max_batch // BLOCK)
        parts = [
            importance_sampled_terms(
                model, x[i : i + rows], k, noise.subset(i, i + rows), max_batch, posterior_groups
            )
            for i in range(0, x.shape[0], rows)
        ]
        return ImportanceTerms(
            torch.cat([p.log_px for p in parts]), torch.cat([p.reconstruction for p in parts])
        )
    chunk = min(k, per_chunk)
    if noise is not None:  # whole blocks of each example's stream
        chunk = max(BLOCK, chunk // BLOCK * BLOCK)
    total = torch.full((x.shape[0],), -math.inf, device=x.device)
    rec = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    done = 0
    while done < k:
        c = min(chunk, k - done)
        eps = None if noise is None else noise.normal(c, model.latent_dim, x.device)
        log_w, log_px_z = model.log_weights(x, c, eps, **extra)
        total = torch.logaddexp(total, torch.logsumexp(log_w, 0))
        rec += log_px_z.double().sum(0)
        done += c
    return ImportanceTerms(total - math.log(k), (rec / k).to(total.dtype))


def importance_sampled_log_px(
    model: LatentVariableModel,
    x: torch.Tensor,
    k: int,
    noise: ExampleNoise | None = None,
    max_batch: int | None = None,
) -> torch.Tensor:
    """The importance-sampled estimate of log p(x) alone (see `importance_sampled_terms`)."""
    return importance_sampled_terms(model, x, k, noise=noise, max_batch=max_batch).log_px


@OBJECTIVES.register("elbo")
class ElboObjective:
    """The negative ELBO with beta and free bits: (loss, bound, reconstruction, kl)."""

    @staticmethod
    def bound_name(iw_k: int) -> str | None:
        """The bound's name in the metrics rows (None: the ELBO, the default)."""
        return None

    @staticmethod
    def terms(model: LatentVariableModel, x, beta, free_bits: float, iw_k: int):
        """(loss, bound, reconstruction, kl) for batch `x`."""
        terms = elbo(model, x, beta=beta, free_bits=free_bits)
        return terms.loss, terms.elbo, terms.reconstruction, terms.kl


@OBJECTIVES.register("iwae")
class IwaeObjective:
    """The negative IWAE bound with `iw_k` samples; no reconstruction/KL split."""

    @staticmethod
    def bound_name(iw_k: int) -> str | None:
        """The bound's name in the metrics rows."""
        return f"iwae-k{iw_k}"

    @staticmethod
    def terms(model: LatentVariableModel, x, beta, free_bits: float, iw_k: int):
        """(loss, bound, None, None) for batch `x`."""
        bound = iwae_bound(model, x, iw_k)
        return -bound.mean(), bound, None, None


class TrainingObjective(nn.Module):
    """The training loss as a module, so that DistributedDataParallel's gradient hooks apply.

    Returns (loss, bound, reconstruction, kl); the last two are None for the IWAE bound.
    """

    def __init__(self, model: LatentVariableModel, objective: str = "elbo", iw_k: int = 1):
        super().__init__()
        try:
            self.objective = OBJECTIVES.get(objective)
        except ValueError as e:
            raise VaekitError(str(e)) from e
        self.model, self.iw_k = model, iw_k

    @override
    def forward(self, x: torch.Tensor, beta: float | torch.Tensor = 1.0, free_bits: float = 0.0):
        return self.objective.terms(self.model, x, beta, free_bits, self.iw_k)
