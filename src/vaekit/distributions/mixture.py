"""A mixture of diagonal Gaussians over R^D, the shape of VampPrior and other mixture priors.

`log_prob` expands the quadratic form into two matrix products, so scoring N latents under
K components costs an (N, D) x (D, K) product and (N, K) memory, not (N, K, D): with K=500
components and the 65k latents of one importance-sampling chunk, that is 128 MB, not 4 GB.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Distribution, constraints
from typing_extensions import override


class DiagonalGaussianMixture(Distribution):
    """p(z) = sum_k softmax(logits)_k N(z; loc_k, diag(scale_k^2)); event shape (D,)."""

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = False

    def __init__(self, logits: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor):
        self.logits, self.loc, self.scale = logits, loc, scale
        super().__init__(event_shape=loc.shape[-1:], validate_args=False)

    @property
    def log_weights(self) -> torch.Tensor:
        """log of the mixture weights, normalised."""
        return torch.log_softmax(self.logits, -1)

    def component_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; loc_k, scale_k) for every component: (..., D) -> (..., K)."""
        flat = z.reshape(-1, z.shape[-1]).to(self.loc.dtype)
        prec = self.scale.pow(-2)  # (K, D)
        quad = (
            flat.pow(2) @ prec.T
            - 2.0 * flat @ (self.loc * prec).T
            + (self.loc.pow(2) * prec).sum(-1)
        )
        const = self.scale.log().sum(-1) + 0.5 * z.shape[-1] * math.log(2 * math.pi)
        out = -0.5 * quad.clamp_min(0.0) - const
        return out.view(*z.shape[:-1], -1)

    @override
    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(self.component_log_prob(z) + self.log_weights, -1)

    @override
    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        with torch.no_grad():
            shape = torch.Size(sample_shape)
            k = torch.distributions.Categorical(logits=self.logits).sample(shape)
            eps = torch.randn(*shape, self.loc.shape[-1], device=self.loc.device)
            return self.loc[k] + self.scale[k] * eps

    @override
    @property
    def mean(self) -> torch.Tensor:
        return (torch.softmax(self.logits, -1).unsqueeze(-1) * self.loc).sum(-2)
