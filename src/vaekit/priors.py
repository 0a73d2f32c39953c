"""Priors p(z). The VAE asks a prior for a distribution; mixtures, VampPrior or flows can
implement the same two methods, and objectives fall back to Monte-Carlo KL when the pair
(q, p) has no analytic KL."""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Distribution, Independent, Normal


class Prior(nn.Module):
    """Interface: `distribution()` over z with event shape (latent_dim,)."""

    analytic_kl: bool = False

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim

    def distribution(self) -> Distribution:  # pragma: no cover
        raise NotImplementedError


class StandardNormalPrior(Prior):
    """p(z) = N(0, I)."""

    analytic_kl = True

    def __init__(self, latent_dim: int):
        super().__init__(latent_dim)
        # Buffers follow the module across devices and dtypes without being trained.
        self.register_buffer("loc", torch.zeros(latent_dim), persistent=False)
        self.register_buffer("scale", torch.ones(latent_dim), persistent=False)

    def distribution(self) -> Independent:
        return Independent(Normal(self.loc, self.scale, validate_args=False), 1)


def make_prior(name: str, latent_dim: int) -> Prior:
    """Build a prior by name."""
    if name == "standard-normal":
        return StandardNormalPrior(latent_dim)
    raise ValueError(f"unknown prior {name!r}; available: standard-normal")
