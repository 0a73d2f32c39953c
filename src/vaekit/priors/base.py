"""The prior interface and its registry."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.distributions import Distribution

from vaekit.registry import PRIORS

if TYPE_CHECKING:
    from vaekit.config import ModelConfig



class Prior(nn.Module):
    """p(z) over one latent group with event shape (latent_dim,).

    `distribution(model)` may use the model (a VampPrior encodes its pseudo-inputs with the
    model's encoder). `analytic_kl` says whether KL(q || p) against a diagonal Gaussian
    posterior has a closed form per dimension; without it the KL is estimated by Monte Carlo
    and has no per-dimension split. `needs_encoder` says that the prior's distribution calls
    the model's `posterior_of_inputs` (a model without it cannot take this prior).
    """

    analytic_kl: bool = False
    needs_encoder: bool = False

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim

    @classmethod
    def build(cls, latent_dim: int, config: ModelConfig) -> Prior:
        """An instance for a model config (subclasses read their own settings)."""
        return cls(latent_dim)

    def distribution(self, model: Any = None) -> Distribution:  # pragma: no cover
        """p(z) over one latent group, as a torch distribution."""
        raise NotImplementedError

    def init_from_data(self, encoder_inputs: torch.Tensor) -> None:
        """Start from training data (encoder inputs, (N, ...)) where the prior has a use for it."""


def make_prior(name: str, latent_dim: int, config: ModelConfig | None = None) -> Prior:
    """Build a registered prior by name."""
    from vaekit.config import ModelConfig

    return PRIORS.get(name).build(latent_dim, config or ModelConfig())
