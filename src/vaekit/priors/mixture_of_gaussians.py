"""A learned mixture of diagonal Gaussians, p(z) = sum_k pi_k N(z; mu_k, diag(sigma_k^2)).

Unlike the VampPrior its components are free parameters, not posteriors of pseudo-inputs, so
it needs nothing from the model. Means start as N(0, I) draws and scales at 1, so at the
start it covers the region a standard normal prior would.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from typing_extensions import override

from vaekit.distributions.mixture import DiagonalGaussianMixture
from vaekit.priors.base import PRIORS, Prior

if TYPE_CHECKING:
    from vaekit.config import ModelConfig


@PRIORS.register("mog")
class MixtureOfGaussiansPrior(Prior):
    """`components` Gaussians with learned weights, means and diagonal scales."""

    def __init__(self, latent_dim: int, components: int = 10):
        super().__init__(latent_dim)
        g = torch.Generator().manual_seed(0)
        self.logits = nn.Parameter(torch.zeros(components))
        self.loc = nn.Parameter(torch.randn(components, latent_dim, generator=g))
        self.log_scale = nn.Parameter(torch.zeros(components, latent_dim))

    @override
    @classmethod
    def build(cls, latent_dim: int, config: ModelConfig) -> Prior:
        return cls(latent_dim, config.prior_components)

    @override
    def distribution(self, model: Any = None) -> DiagonalGaussianMixture:
        return DiagonalGaussianMixture(self.logits, self.loc, self.log_scale.exp())
