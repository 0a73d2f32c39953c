"""Multi-layer perceptron encoder and decoder."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from typing_extensions import override

from vaekit.registry import ACTIVATIONS

# SiLU trains markedly faster than ReLU in short runs (no dead units); ReLU is the
# classic choice and the default, so older checkpoints rebuild unchanged.
for _name, _module in [
    ("relu", nn.ReLU),
    ("silu", nn.SiLU),
    ("gelu", nn.GELU),
    ("elu", nn.ELU),
    ("tanh", nn.Tanh),
]:
    ACTIVATIONS.register(_name)(_module)


def activation_class(name: str) -> type[nn.Module]:
    """The activation module for a config name (relu, silu, gelu, elu, tanh)."""
    return ACTIVATIONS.get(name)


def mlp(
    sizes: Sequence[int],
    activation: str,
    dropout: float = 0.0,
    final_activation: bool = True,
    he_init: bool = False,
    last_scale: float = 1.0,
) -> nn.Sequential:
    """Linear layers of `sizes` with `activation` after each (but the last, without
    `final_activation`), dropout after each activation while training. `he_init`: He-normal
    weights, and the last layer's weights times `last_scale` with its bias zero (a residual
    branch that starts near zero leaves the path it joins unchanged)."""
    act = activation_class(activation)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if he_init:
            # He initialisation keeps signals at unit scale through the stack; PyTorch's
            # default shrinks their variance about 3-fold per layer, and a latent that reaches
            # the decoder that faint is ignored (posterior collapse within the first epoch).
            nn.init.kaiming_normal_(layers[-1].weight, nonlinearity="relu")
        if final_activation or i < len(sizes) - 2:
            layers.append(act())
            if dropout:  # only then: without it, checkpoints keep their layer names
                layers.append(nn.Dropout(dropout))
    if he_init:
        last = [m for m in layers if isinstance(m, nn.Linear)][-1]
        with torch.no_grad():
            last.weight.mul_(last_scale)
            last.bias.zero_()
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """x (B, C, H, W) -> (mean, logvar), each (B, latent_dim)."""

    def __init__(
        self,
        image_shape: Sequence[int],
        hidden: Sequence[int],
        latent_dim: int,
        activation: str = "relu",
        dropout: float = 0.0,
    ):
        super().__init__()
        self.body = mlp([math.prod(image_shape), *hidden], activation, dropout)
        self.head = nn.Linear(hidden[-1] if hidden else math.prod(image_shape), 2 * latent_dim)

    @classmethod
    def from_config(cls, config, latent_dim: int) -> MLPEncoder:
        """The encoder a model config asks for."""
        return cls(config.image_shape, config.hidden, latent_dim, config.activation, config.dropout)

    @override
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.head(self.body(x.flatten(1))).chunk(2, dim=-1)
        return mean, logvar


class MLPDecoder(nn.Module):
    """z (B, latent_dim) -> likelihood parameters (B, P*C, H, W)."""

    def __init__(
        self,
        image_shape: Sequence[int],
        hidden: Sequence[int],
        latent_dim: int,
        params_per_channel: int,
        activation: str = "relu",
        dropout: float = 0.0,
    ):
        super().__init__()
        c, h, w = image_shape
        self.out_shape = (params_per_channel * c, h, w)
        self.body = mlp([latent_dim, *hidden], activation, dropout)
        self.head = nn.Linear(hidden[-1] if hidden else latent_dim, math.prod(self.out_shape))

    @classmethod
    def from_config(cls, config, latent_dim: int, params_per_channel: int) -> MLPDecoder:
        """The decoder a model config asks for."""
        hidden = config.hidden[::-1]
        return cls(
            config.image_shape,
            hidden,
            latent_dim,
            params_per_channel,
            config.activation,
            config.dropout,
        )

    @override
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(z)).view(-1, *self.out_shape)

    @torch.no_grad()
    def set_output_bias(self, params: torch.Tensor) -> None:
        """Start the output layer at per-pixel likelihood parameters (P*C, H, W)."""
        self.head.bias.copy_(params.reshape(-1))
