"""Diagonal Gaussians for posteriors and priors, as `torch.distributions` objects.

Objectives go through `log_prob` and `kl_divergence` of these objects instead of
re-deriving formulas, so a new prior or posterior plugs into every use at once.
"""

from __future__ import annotations

import torch
from torch.distributions import Independent, Normal, kl_divergence

# log-variances of posteriors are clamped here: exp() stays finite in float32 either way
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0


def diagonal_gaussian(mean: torch.Tensor, logvar: torch.Tensor) -> Independent:
    """N(mean, diag(exp(logvar))) over the last dimension."""
    return Independent(Normal(mean, torch.exp(0.5 * logvar), validate_args=False), 1)


def repeat_rows(q: Independent, k: int) -> Independent:
    """A diagonal Gaussian over rows (B, D) as K copies of itself, (K x B, D) particle-major."""
    if k == 1:
        return q
    base = q.base_dist
    return Independent(
        Normal(base.loc.repeat(k, 1), base.scale.repeat(k, 1), validate_args=False), 1
    )


def kl_per_dim(q: Independent, p: Independent) -> torch.Tensor:
    """Analytic KL(q || p) for each latent dimension (shape (..., D)); sums to the total KL."""
    a, b = q.base_dist, p.base_dist
    if type(a) is Normal and type(b) is Normal:
        # The closed form torch registers for (Normal, Normal), written out: kl_divergence's
        # type dispatch is a graph break for torch.compile, which split the training step in 4.
        var_ratio = (a.scale / b.scale).pow(2)
        t1 = ((a.loc - b.loc) / b.scale).pow(2)
        return 0.5 * (var_ratio + t1 - 1 - var_ratio.log())
    return kl_divergence(a, b)
