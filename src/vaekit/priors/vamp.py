"""The VampPrior (Tomczak & Welling 2018): p(z) = (1/K) sum_k q(z | u_k).

The components are the model's own posteriors of K learned pseudo-inputs u_k, so the prior
follows the aggregate posterior instead of forcing it towards N(0, I). Pseudo-inputs live
in the encoder's input space; for images they are kept in [0, 1] by a hard tanh, as in the
paper. They start at K random training inputs (the paper starts them at noise; starting at
data skips the first epochs of moving them there).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from typing_extensions import override

from vaekit.distributions.mixture import DiagonalGaussianMixture
from vaekit.priors.base import PRIORS, Prior

if TYPE_CHECKING:
    from vaekit.config import ModelConfig


@PRIORS.register("vamp")
class VampPrior(Prior):
    """A uniform mixture of the posteriors of `components` learned pseudo-inputs."""

    analytic_kl = False
    needs_encoder = True

    def __init__(self, latent_dim: int, input_shape: list[int], components: int = 500):
        super().__init__(latent_dim)
        self.components = components
        # Small noise around mid-grey until `init_from_data` places them on training inputs.
        self.pseudo_inputs = nn.Parameter(0.5 + 0.01 * torch.randn(components, *input_shape))
        self.bounded = True

    @override
    @classmethod
    def build(cls, latent_dim: int, config: ModelConfig) -> Prior:
        return cls(latent_dim, list(config.image_shape), config.prior_components)

    def inputs(self) -> torch.Tensor:
        """The pseudo-inputs, as the encoder sees inputs."""
        return F.hardtanh(self.pseudo_inputs, 0.0, 1.0) if self.bounded else self.pseudo_inputs

    @override
    def distribution(self, model: Any = None) -> DiagonalGaussianMixture:
        if model is None:
            raise ValueError("the VampPrior needs the model whose encoder defines it")
        q = model.posterior_of_inputs(self.inputs())
        logits = torch.zeros(self.components, device=q.mean.device)
        return DiagonalGaussianMixture(logits, q.mean, q.stddev)

    @override
    @torch.no_grad()
    def init_from_data(self, encoder_inputs: torch.Tensor) -> None:
        g = torch.Generator(device="cpu").manual_seed(0)
        idx = torch.randint(len(encoder_inputs), (self.components,), generator=g)
        picked = encoder_inputs[idx.to(encoder_inputs.device)].float()
        self.pseudo_inputs.copy_(picked.reshape(self.pseudo_inputs.shape).to(self.pseudo_inputs))
