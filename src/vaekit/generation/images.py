"""Generation: samples from the prior, reconstructions, and latent interpolations, for any
model through its interface (the pixel mode that shows the inputs is the model's own)."""

from __future__ import annotations

import torch

from vaekit.models import LatentVariableModel
from vaekit.randomness import seeded


@torch.no_grad()
def sample_images(
    model: LatentVariableModel, n: int = 64, seed: int = 0, temperature: float | list[float] = 1.0
) -> torch.Tensor:
    """n images in [0, 1]: the decoder mean of p(x|z) for z from the prior at `temperature`
    (one number, or one per latent group)."""
    model.eval()
    with seeded(seed, next(model.parameters()).device):
        return model.generate(n, temperature)


@torch.no_grad()
def reconstruct_images(model: LatentVariableModel, images: torch.Tensor) -> torch.Tensor:
    """Inputs (uint8, prepared by the model's pixel mode) and their reconstructions (decoder
    mean at the posterior means), interleaved in pairs so a grid shows each input beside its
    reconstruction."""
    model.eval()
    x = model.pixels.values(images, train=False)
    shown = model.pixels.display(x)
    return torch.stack([shown, model.reconstruct(x)], dim=1).flatten(0, 1)


@torch.no_grad()
def interpolate_images(
    model: LatentVariableModel, a: torch.Tensor, b: torch.Tensor, steps: int = 10
) -> torch.Tensor:
    """For each pair (a_i, b_i): a_i, decoded points on the straight line between the latent
    means, b_i; shape (pairs * (steps + 2), C, H, W)."""
    model.eval()
    xa, xb = model.pixels.values(a, train=False), model.pixels.values(b, train=False)
    za, zb = model.posterior_means(xa), model.posterior_means(xb)
    t = torch.linspace(0, 1, steps, device=za.device).view(1, steps, 1)
    z = za.unsqueeze(1) * (1 - t) + zb.unsqueeze(1) * t  # (pairs, steps, D)
    mid = model.likelihood.display(model.decode(z.flatten(0, 1))).view(len(a), steps, *a.shape[1:])
    ends_a, ends_b = model.pixels.display(xa), model.pixels.display(xb)
    return torch.cat([ends_a.unsqueeze(1), mid, ends_b.unsqueeze(1)], dim=1).flatten(0, 1)
