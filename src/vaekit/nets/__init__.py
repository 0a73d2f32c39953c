"""Encoder and decoder networks, registered by architecture name (`ModelConfig.arch`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn

from vaekit.nets.conv import ConvDecoder, ConvEncoder
from vaekit.nets.mlp import MLPDecoder, MLPEncoder
from vaekit.registry import ARCHITECTURES

if TYPE_CHECKING:
    from vaekit.config import ModelConfig


@dataclass(frozen=True)
class Architecture:
    """Builds an encoder x -> (mean, logvar) and a decoder z -> likelihood parameters."""

    encoder: type[nn.Module]
    decoder: type[nn.Module]
    # Latents decoded at once when importance sampling: large batches keep an MLP's matmuls
    # efficient, while a conv decoder's activations are far bigger per image (65k images x
    # 32 channels x 28 x 28 floats is 6.6 GB for one layer).
    decode_batch_limit: int

    def build(
        self, config: ModelConfig, latent_dim: int, params_per_channel: int
    ) -> tuple[nn.Module, nn.Module]:
        """An encoder and a decoder for `config`, `latent_dim` and the likelihood's parameter
        count per channel."""
        return (
            self.encoder.from_config(config, latent_dim),
            self.decoder.from_config(config, latent_dim, params_per_channel),
        )


ARCHITECTURES.register("mlp")(Architecture(MLPEncoder, MLPDecoder, 65536))
ARCHITECTURES.register("conv")(Architecture(ConvEncoder, ConvDecoder, 2048))

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "ConvDecoder",
    "ConvEncoder",
    "MLPDecoder",
    "MLPEncoder",
]
