"""Drawing latents from a prior at a temperature: the noise is scaled, the means are not."""

from __future__ import annotations

import math

import torch
from torch.distributions import Distribution, Independent, Normal

from vaekit.distributions.mixture import DiagonalGaussianMixture


def sample_with_temperature(p: Distribution, n: int, temperature: float = 1.0) -> torch.Tensor:
    """n draws from a diagonal Gaussian or a diagonal-Gaussian mixture with each scale
    multiplied by `temperature` (1 draws from p itself; 0 gives the means or component means)."""
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0; got {temperature}")
    if isinstance(p, Independent) and isinstance(p.base_dist, Normal):
        loc, scale = p.base_dist.loc, p.base_dist.scale
        eps = torch.randn(n, *loc.shape[-1:], device=loc.device)
        return loc + temperature * scale * eps
    if isinstance(p, DiagonalGaussianMixture):
        k = torch.distributions.Categorical(logits=p.logits).sample((n,))
        eps = torch.randn(n, p.loc.shape[-1], device=p.loc.device)
        return p.loc[k] + temperature * p.scale[k] * eps
    if temperature != 1.0:
        raise ValueError(f"temperatures other than 1 need a Gaussian prior; got {type(p).__name__}")
    return p.sample((n,))
