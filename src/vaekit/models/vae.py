"""The one-layer VAE: encoder q(z|x), decoder p(x|z) and a prior p(z), each a distribution."""

from __future__ import annotations

import torch
from torch.distributions import Distribution, Independent
from typing_extensions import override

from vaekit.config import ModelConfig
from vaekit.data.pixels import pixel_mode
from vaekit.distributions import diagonal_gaussian, full_precision, make_likelihood, repeat_rows
from vaekit.distributions.gaussian import LOGVAR_MAX, LOGVAR_MIN
from vaekit.distributions.sampling import sample_with_temperature
from vaekit.models.base import MODELS, Inference, LatentGroup, LatentVariableModel, group_kl
from vaekit.nets import ARCHITECTURES
from vaekit.priors import make_prior


@MODELS.register("vae")
class VAE(LatentVariableModel):
    """A variational autoencoder built from a `ModelConfig` (which `save`/`load` round-trip)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.pixels = pixel_mode(config.pixels)
        self.likelihood = make_likelihood(self.pixels.likelihood, config.n_mix)
        self.architecture = ARCHITECTURES.get(config.arch)
        self.encoder, self.decoder = self.architecture.build(
            config, config.latent_dim, self.likelihood.params_per_channel
        )
        self.prior = make_prior(config.prior, config.latent_dim, config)

    @override
    @property
    def group_dims(self) -> list[int]:
        return [self.config.latent_dim]

    @override
    @property
    def decode_batch_limit(self) -> int:
        return self.architecture.decode_batch_limit

    def posterior_of_inputs(self, u: torch.Tensor) -> Independent:
        """q(z|·) for inputs already in the encoder's space (a VampPrior's pseudo-inputs)."""
        mean, logvar = self.encoder(u)
        mean, logvar = full_precision(mean), full_precision(logvar)
        # Bounds keep exp() finite early in training; they are far outside useful values.
        return diagonal_gaussian(mean, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX))

    def encode(self, x: torch.Tensor) -> Independent:
        """q(z|x) for data values x (B, C, H, W) as a diagonal Gaussian."""
        return self.posterior_of_inputs(self.likelihood.encoder_input(x))

    def prior_distribution(self) -> Distribution:
        """p(z) as a distribution (the prior may use the model, as a VampPrior does)."""
        return self.prior.distribution(self)

    @override
    def decode_params(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    @staticmethod
    def _draw(q: Independent, noise: torch.Tensor | None, k: int | None = None) -> torch.Tensor:
        if noise is None:
            return q.rsample(() if k is None else (k,))
        return q.mean + q.stddev * noise.to(q.mean)

    @override
    def infer(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> Inference:
        q = self.encode(x)
        z = self._draw(q, noise)
        p = self.prior_distribution()
        kl, per_dim, estimator = group_kl(q, p, z, self.prior.analytic_kl)
        return Inference([LatentGroup(z, q, p, kl, per_dim, estimator)], self.decode(z))

    @override
    def log_weights(self, x, k, noise=None, posterior_groups=None):
        if posterior_groups not in (None, 1):
            raise ValueError("a one-layer VAE has one latent group: posterior_groups must be 1")
        q = self.encode(x)
        z = self._draw(q, noise, k)  # (k, B, D)
        log_px_z = self.decode(z).log_prob(x)  # x broadcasts over the k samples
        return log_px_z + self.prior_distribution().log_prob(z) - q.log_prob(z), log_px_z

    @override
    def posterior_means(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x).mean

    @override
    @torch.no_grad()
    def sample_latents(self, n: int, temperature: float | list[float] = 1.0) -> torch.Tensor:
        if isinstance(temperature, list | tuple):
            if len(temperature) != 1:
                raise ValueError(
                    f"this model has 1 latent group; got {len(temperature)} temperatures"
                )
            temperature = temperature[0]
        return sample_with_temperature(self.prior_distribution(), n, float(temperature))

    @override
    def coding_posterior(self, x, upper, particles=1):
        return repeat_rows(self.encode(x), particles)

    @override
    def coding_prior(self, upper):
        return self.prior_distribution()

    @torch.no_grad()
    def init_output_bias(self, mean: torch.Tensor, std: torch.Tensor) -> bool:
        """Start the decoder's output bias at the likelihood that fits the data's per-pixel
        mean and std of values (each (C, H, W)), so that training does not spend its first
        steps learning the average image. Returns False where the likelihood has no such
        closed form (the bias is then left as it is)."""
        params = self.likelihood.initial_params(mean, std)
        if params is None:
            return False
        self.decoder.set_output_bias(params.to(next(self.decoder.parameters()).device))
        return True

    @override
    @torch.no_grad()
    def init_from_data(self, values: torch.Tensor, output_bias: bool) -> None:
        if output_bias:
            self.init_output_bias(values.mean(0), values.std(0, correction=0))
        self.prior.init_from_data(self.likelihood.encoder_input(values))
