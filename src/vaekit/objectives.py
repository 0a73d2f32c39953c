"""Objectives: the ELBO (analytic KL, beta, free bits) and the importance-weighted bound.

All quantities are in nats per example, summed over data dimensions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.distributions import kl_divergence

from vaekit.distributions import kl_per_dim
from vaekit.model import VAE


@dataclass
class ElboTerms:
    """Per-example terms of the ELBO and the scalar training loss."""

    reconstruction: torch.Tensor  # (B,) single-sample estimate of E_q[log p(x|z)]
    kl: torch.Tensor  # (B,) KL(q(z|x) || p(z)), analytic where available
    kl_per_dim: torch.Tensor | None  # (B, D) when the KL factorises analytically
    loss: torch.Tensor  # scalar to minimise (beta and free bits applied)

    @property
    def elbo(self) -> torch.Tensor:
        return self.reconstruction - self.kl


def kl_terms(model: VAE, q, z: torch.Tensor | None = None):
    """KL(q || p): analytic (with a per-dimension split) when the prior allows, else MC."""
    p = model.prior_distribution()
    if model.prior.analytic_kl:
        per_dim = kl_per_dim(q, p)
        return per_dim.sum(-1), per_dim
    try:
        return kl_divergence(q, p), None
    except NotImplementedError:
        z = q.rsample() if z is None else z
        return q.log_prob(z) - p.log_prob(z), None


def elbo(
    model: VAE, x: torch.Tensor, beta: float | torch.Tensor = 1.0, free_bits: float = 0.0
) -> ElboTerms:
    """One-sample reparameterised ELBO with analytic KL; the loss applies beta and free bits."""
    q = model.encode(x)
    z = q.rsample()
    rec = model.decode(z).log_prob(x)
    kl, per_dim = kl_terms(model, q, z)
    if free_bits > 0 and per_dim is not None:
        # Free bits: each dimension's batch-mean KL only counts above `free_bits` nats.
        kl_for_loss = per_dim.mean(0).clamp_min(free_bits).sum()
    else:
        kl_for_loss = kl.mean()
    loss = -(rec.mean() - beta * kl_for_loss)
    return ElboTerms(rec, kl, per_dim, loss)


def _weight_terms(model: VAE, x: torch.Tensor, q, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(log w, log p(x|z)) for k reparameterised samples z ~ q: each of shape (k, B)."""
    z = q.rsample((k,))  # (k, B, D)
    log_px_z = model.decode(z).log_prob(x)  # x broadcasts over the k samples
    return log_px_z + model.prior_distribution().log_prob(z) - q.log_prob(z), log_px_z


def log_weights(model: VAE, x: torch.Tensor, q, k: int) -> torch.Tensor:
    """log p(x|z_k) + log p(z_k) - log q(z_k|x) for k reparameterised samples: shape (k, B)."""
    return _weight_terms(model, x, q, k)[0]


def iwae_bound(model: VAE, x: torch.Tensor, k: int) -> torch.Tensor:
    """The importance-weighted bound log (1/k) sum_k w_k (Burda et al. 2016), per example."""
    q = model.encode(x)
    return torch.logsumexp(log_weights(model, x, q, k), 0) - math.log(k)


@dataclass
class ImportanceTerms:
    """Per-example results of one importance-sampling pass with K samples from q(z|x)."""

    log_px: torch.Tensor  # log (1/K) sum_k w_k
    reconstruction: torch.Tensor  # (1/K) sum_k log p(x|z_k), a K-sample E_q[log p(x|z)]


@torch.no_grad()
def importance_sampled_terms(
    model: VAE,
    x: torch.Tensor,
    k: int,
    q=None,
    chunk: int | None = None,
    max_batch: int | None = None,
) -> ImportanceTerms:
    """log p(x) ~= log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(z|x), per example,
    with the K-sample reconstruction term from the same samples.

    K is processed in chunks whose running log-sum-exp is exact, so memory does not grow
    with K. A lower bound in expectation that tightens as K grows (Burda et al. 2016).
    """
    q = model.encode(x) if q is None else q
    max_batch = max_batch or model.decode_batch_limit
    chunk = chunk or max(1, min(k, max_batch // max(1, x.shape[0])))
    total = torch.full((x.shape[0],), -math.inf, device=x.device)
    rec = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    done = 0
    while done < k:
        c = min(chunk, k - done)
        log_w, log_px_z = _weight_terms(model, x, q, c)
        total = torch.logaddexp(total, torch.logsumexp(log_w, 0))
        rec += log_px_z.double().sum(0)
        done += c
    return ImportanceTerms(total - math.log(k), (rec / k).to(total.dtype))


def importance_sampled_log_px(
    model: VAE, x: torch.Tensor, k: int, chunk: int | None = None, max_batch: int | None = None
) -> torch.Tensor:
    """The importance-sampled estimate of log p(x) alone (see `importance_sampled_terms`)."""
    return importance_sampled_terms(model, x, k, chunk=chunk, max_batch=max_batch).log_px
