"""The model interface: what objectives, evaluation, generation, bits-back coding and anomaly
scores need from a latent-variable model, and nothing more.

A model has a pixel mode and a likelihood (both saved with it), one or more latent groups
z_1..z_L of sizes `group_dims` (concatenated, they form a vector of `latent_dim` numbers),
and implements:

- `infer(x, noise)`: one reparameterised pass that yields each group's sample, q, p and KL
  (analytic per dimension where the pair allows, else a 1-sample Monte-Carlo estimate that
  says so), and the decoded p(x|z);
- `log_weights(x, k, noise)`: log p(x, z_k) - log q(z_k|x) and log p(x|z_k) for k samples,
  each (k, B), the input to the IWAE bound and importance-sampled log p(x);
- `posterior_means(x)`, `decode(z)`, `sample_latents(n, temperature)`: the latent space;
- `coding_posterior(x, upper, particles)` / `coding_prior(upper)`: q and p of the next group
  in top-down order given the groups above it, which is all bits-back coding needs.

`noise` is standard normal noise shaped like the latents (with a leading sample axis for
`log_weights`); without it the model draws from torch's RNG. Passing it lets a caller make
an example's numbers depend on the example alone (`vaekit.randomness`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Distribution, kl_divergence

from vaekit.config import ModelConfig
from vaekit.data.pixels import PixelMode
from vaekit.distributions import Likelihood, kl_per_dim
from vaekit.registry import MODELS

ANALYTIC = "analytic"
MONTE_CARLO = "1-sample Monte Carlo"


@dataclass
class LatentGroup:
    """One latent group of an inference pass."""

    z: torch.Tensor  # (..., B, D) reparameterised sample
    q: Distribution  # q(z | x, groups above), event shape (D,)
    p: Distribution  # p(z | groups above), event shape (D,)
    kl: torch.Tensor  # (..., B) KL(q || p): analytic, or log q(z) - log p(z) at the sample
    kl_per_dim: torch.Tensor | None  # (..., B, D) where the KL is analytic per dimension
    kl_estimator: str  # ANALYTIC or MONTE_CARLO


@dataclass
class Inference:
    """The result of `infer`: the latent groups (top-down) and the decoded p(x|z)."""

    groups: list[LatentGroup]
    decoded: Distribution

    @property
    def kl(self) -> torch.Tensor:
        """KL(q || p) per example, summed over the groups."""
        return sum(g.kl for g in self.groups)  # type: ignore[return-value]

    @property
    def z(self) -> torch.Tensor:
        """Every group's latents, concatenated top first."""
        return torch.cat([g.z for g in self.groups], -1)


def group_kl(
    q: Distribution, p: Distribution, z: torch.Tensor, per_dim_analytic: bool
) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """KL(q || p) for one group: (total, per-dimension or None, estimator name)."""
    if per_dim_analytic:
        per_dim = kl_per_dim(q, p)
        return per_dim.sum(-1), per_dim, ANALYTIC
    try:
        return kl_divergence(q, p), None, ANALYTIC
    except NotImplementedError:
        return q.log_prob(z) - p.log_prob(z), None, MONTE_CARLO


class LatentVariableModel(nn.Module):
    """Base class of vaekit's models (see the module docstring for the contract)."""

    config: ModelConfig
    pixels: PixelMode
    likelihood: Likelihood
    # how bits-back coding orders this family's latents (coding.bitsback.SCHEMES):
    # "top-down" needs `coding_posterior` and `coding_prior`; "bitswap" needs a Markov
    # chain's `chain_posterior` and `chain_prior` instead
    coding_scheme: str = "top-down"

    @staticmethod
    def config_problem(config: ModelConfig) -> str | None:
        """Why `config` cannot build this model family (None when it can)."""
        return None

    @property
    def group_dims(self) -> list[int]:  # pragma: no cover
        """Sizes of the latent groups, top first (one for the VAE)."""
        raise NotImplementedError

    @property
    def latent_dim(self) -> int:
        """All latent dimensions together."""
        return sum(self.group_dims)

    @property
    def data_dims(self) -> int:
        """Dimensions of one example (C * H * W)."""
        return math.prod(self.config.image_shape)

    @property
    def decode_batch_limit(self) -> int:
        """Latents decoded at once when importance sampling."""
        return 65536

    def infer(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> Inference:
        """One reparameterised pass: per group z, q, p and KL, and the decoded p(x|z)."""
        raise NotImplementedError  # pragma: no cover

    def log_weights(
        self,
        x: torch.Tensor,
        k: int,
        noise: torch.Tensor | None = None,
        posterior_groups: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """With `posterior_groups = j` (hierarchies), only the top j groups come from q and
        the rest from their priors: the weights of p_{>j}(x), the likelihood the top levels
        alone assign (Havtorn et al. 2021)."""
        raise NotImplementedError  # pragma: no cover

    def posterior_means(self, x: torch.Tensor) -> torch.Tensor:
        """E_q[z] for every group, concatenated: (B, latent_dim)."""
        raise NotImplementedError  # pragma: no cover

    def decode_params(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's raw outputs for latents z (N, latent_dim): the likelihood's parameters."""
        raise NotImplementedError  # pragma: no cover

    def decode(self, z: torch.Tensor) -> Distribution:
        """p(x|z) for latents (..., latent_dim), with batch shape z.shape[:-1]: for z of shape
        (K, B, D) its `log_prob(x)` of x (B, C, H, W) broadcasts to (K, B) without K copies."""
        params = self.decode_params(z.reshape(-1, z.shape[-1]))
        return self.likelihood.distribution(params.view(*z.shape[:-1], *params.shape[1:]))

    def sample_latents(self, n: int, temperature: float | list[float] = 1.0) -> torch.Tensor:
        """n draws of z from the prior, each group's noise scaled by its temperature."""
        raise NotImplementedError  # pragma: no cover

    def coding_posterior(
        self, x: torch.Tensor, upper: list[torch.Tensor], particles: int = 1
    ) -> Distribution:
        """q(z_l | x, z_>l) of the next group (a diagonal Gaussian) for bits-back coding under
        the top-down scheme (a "bitswap" family gives `chain_posterior` instead). With
        `particles` = K, each image of x stands for K particles: the rows of `upper` and of q
        are the K x B particles, particle-major, and the work that depends on x alone (the
        encoder) runs once per image. Under exact arithmetic, where every row is computed on
        its own, that gives the same bits as running it on x repeated K times."""
        raise NotImplementedError  # pragma: no cover

    def coding_prior(self, upper: list[torch.Tensor]) -> Distribution:
        """p(z_l | z_>l) of the next group for bits-back coding (the top-down scheme)."""
        raise NotImplementedError  # pragma: no cover

    def init_from_data(self, values: torch.Tensor, output_bias: bool) -> None:
        """Start from a sample of training values (N, C, H, W): the output bias at their
        mean image if asked, and anything the prior learns from data."""

    # ---- shared helpers built on the contract ---------------------------------------------

    @torch.no_grad()
    def generate(self, n: int, temperature: float | list[float] = 1.0) -> torch.Tensor:
        """Images in [0, 1] showing p(x|z) for z from the prior (the decoder mean)."""
        return self.likelihood.display(self.decode(self.sample_latents(n, temperature)))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1]: the decoder mean at the posterior means of values x."""
        return self.likelihood.display(self.decode(self.posterior_means(x)))


def build_model(config: ModelConfig) -> LatentVariableModel:
    """The registered model family `config.family` built from `config`."""
    return MODELS.get(config.family)(config)
