"""p(z) = N(0, I)."""

from __future__ import annotations

from typing import Any

import torch
from torch.distributions import Independent, Normal
from typing_extensions import override

from vaekit.priors.base import PRIORS, Prior


@PRIORS.register("standard-normal")
class StandardNormalPrior(Prior):
    """p(z) = N(0, I): KL against a diagonal Gaussian posterior is analytic per dimension."""

    analytic_kl = True

    def __init__(self, latent_dim: int):
        super().__init__(latent_dim)
        # Buffers follow the module across devices and dtypes without being trained.
        self.register_buffer("loc", torch.zeros(latent_dim), persistent=False)
        self.register_buffer("scale", torch.ones(latent_dim), persistent=False)

    @override
    def distribution(self, model: Any = None) -> Independent:
        return Independent(Normal(self.loc, self.scale, validate_args=False), 1)
