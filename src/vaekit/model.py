"""The VAE: encoder q(z|x), decoder p(x|z) and prior p(z), each returned as a distribution."""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Distribution, Independent

from vaekit.config import ModelConfig
from vaekit.distributions import diagonal_gaussian, full_precision, make_likelihood
from vaekit.nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from vaekit.priors import make_prior


class VAE(nn.Module):
    """A variational autoencoder built from a `ModelConfig` (which `save`/`load` round-trip)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.likelihood = make_likelihood(config.likelihood, config.n_mix)
        shape, d = config.image_shape, config.latent_dim
        p = self.likelihood.params_per_channel
        if config.arch == "mlp":
            self.encoder = MLPEncoder(shape, config.hidden, d, config.activation)
            self.decoder = MLPDecoder(shape, config.hidden[::-1], d, p, config.activation)
        elif config.arch == "conv":
            self.encoder = ConvEncoder(shape, config.channels, d, config.blocks)
            self.decoder = ConvDecoder(shape, config.channels, d, p, config.blocks)
        else:
            raise ValueError(f"unknown architecture {config.arch!r}; use mlp or conv")
        self.prior = make_prior(config.prior, d)

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def decode_batch_limit(self) -> int:
        """Latents decoded at once when importance sampling: large batches keep an MLP's
        matmuls efficient, while a conv decoder's activations are far bigger per image (65k
        images x 32 channels x 28 x 28 floats is 6.6 GB for one layer)."""
        return 65536 if self.config.arch == "mlp" else 2048

    @property
    def data_dims(self) -> int:
        c, h, w = self.config.image_shape
        return c * h * w

    def encode(self, x: torch.Tensor) -> Independent:
        """q(z|x) for data values x (B, C, H, W) as a diagonal Gaussian."""
        mean, logvar = self.encoder(self.likelihood.encoder_input(x))
        mean, logvar = full_precision(mean), full_precision(logvar)
        # Bounds keep exp() finite early in training; they are far outside useful values.
        return diagonal_gaussian(mean, logvar.clamp(-30.0, 20.0))

    def decode(self, z: torch.Tensor) -> Distribution:
        """p(x|z) for latents z (..., D), with batch shape z.shape[:-1]: for z of shape (K, B, D)
        its `log_prob(x)` of images x (B, C, H, W) broadcasts to (K, B) without K copies of x."""
        params = self.decoder(z.reshape(-1, z.shape[-1]))
        return self.likelihood.distribution(params.view(*z.shape[:-1], *params.shape[1:]))

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

    def prior_distribution(self) -> Distribution:
        return self.prior.distribution()

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """Images in [0, 1] showing p(x|z) for z ~ p(z) (the decoder mean, not a noisy draw)."""
        z = self.prior_distribution().sample((n,))
        return self.likelihood.display(self.decode(z))
