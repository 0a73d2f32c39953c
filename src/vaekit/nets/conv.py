"""Convolutional residual encoder and decoder (two stride-2 stages, any image size)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from typing_extensions import override

# Exact coding (vaekit.coding.exact_arithmetic) runs these nets on 8 rows at a time on the CPU:
# their float64 activations then stay in cache. A decoder of 32 channels ran 279 rows/s in
# 8-row chunks and 79 in one pass over 800 rows, K=8 particles of a 100-image batch
# (benchmarks/exact_floor.py, BENCHMARKS.md).
EXACT_ROWS = 8


class ResBlock(nn.Module):
    """x + conv(act(conv(act(x)))): keeps the shape, eases optimisation of deeper stacks."""

    def __init__(self, channels: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


def _down_size(n: int) -> int:
    return math.ceil(math.ceil(n / 2) / 2)


class ConvEncoder(nn.Module):
    """x (B, C, H, W) -> (mean, logvar) through residual stages at full, 1/2 and 1/4 size."""

    exact_rows = EXACT_ROWS  # rows per pass of exact coding on the CPU (exact_arithmetic)

    def __init__(self, image_shape: Sequence[int], channels: int, latent_dim: int, blocks: int = 1):
        super().__init__()
        c, h, w = image_shape
        ch = channels
        self.net = nn.Sequential(
            nn.Conv2d(c, ch, 3, padding=1),
            *[ResBlock(ch) for _ in range(blocks)],
            nn.Conv2d(ch, 2 * ch, 3, stride=2, padding=1),
            *[ResBlock(2 * ch) for _ in range(blocks)],
            nn.Conv2d(2 * ch, 2 * ch, 3, stride=2, padding=1),
            *[ResBlock(2 * ch) for _ in range(blocks)],
            nn.SiLU(),
            nn.Flatten(),
        )
        self.head = nn.Linear(2 * ch * _down_size(h) * _down_size(w), 2 * latent_dim)

    @classmethod
    def from_config(cls, config, latent_dim: int) -> ConvEncoder:
        """The encoder a model config asks for."""
        return cls(config.image_shape, config.channels, latent_dim, config.blocks)

    @override
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.head(self.net(x)).chunk(2, dim=-1)
        return mean, logvar


class ConvDecoder(nn.Module):
    """z -> likelihood parameters, upsampling from 1/4 size and cropping to (H, W)."""

    exact_rows = EXACT_ROWS  # rows per pass of exact coding on the CPU (exact_arithmetic)

    def __init__(
        self,
        image_shape: Sequence[int],
        channels: int,
        latent_dim: int,
        params_per_channel: int,
        blocks: int = 1,
    ):
        super().__init__()
        c, self.h, self.w = image_shape
        ch = channels
        self.base = (2 * ch, _down_size(self.h), _down_size(self.w))
        self.fc = nn.Linear(latent_dim, math.prod(self.base))
        self.net = nn.Sequential(
            *[ResBlock(2 * ch) for _ in range(blocks)],
            nn.SiLU(),
            nn.ConvTranspose2d(2 * ch, 2 * ch, 4, stride=2, padding=1),
            *[ResBlock(2 * ch) for _ in range(blocks)],
            nn.SiLU(),
            nn.ConvTranspose2d(2 * ch, ch, 4, stride=2, padding=1),
            *[ResBlock(ch) for _ in range(blocks)],
            nn.SiLU(),
            nn.Conv2d(ch, params_per_channel * c, 3, padding=1),
        )

    @classmethod
    def from_config(cls, config, latent_dim: int, params_per_channel: int) -> ConvDecoder:
        """The decoder a model config asks for."""
        return cls(
            config.image_shape, config.channels, latent_dim, params_per_channel, config.blocks
        )

    @override
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.net(self.fc(z).view(-1, *self.base))
        return out[..., : self.h, : self.w]

    @torch.no_grad()
    def set_output_bias(self, params: torch.Tensor) -> None:
        """Start the output convolution at likelihood parameters (P*C, H, W); a convolution
        has one bias per channel, so each channel takes its spatial mean."""
        self.net[-1].bias.copy_(params.flatten(1).mean(1))
