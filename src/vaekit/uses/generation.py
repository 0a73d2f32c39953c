"""Generation: samples from the prior, reconstructions, and latent interpolations."""

from __future__ import annotations

import torch

from vaekit.data.pixels import to_values
from vaekit.model import VAE


@torch.no_grad()
def sample_images(model: VAE, n: int = 64, seed: int = 0) -> torch.Tensor:
    """n images in [0, 1]: the decoder mean of p(x|z) for z ~ p(z)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return model.sample(n)


@torch.no_grad()
def reconstruct_images(model: VAE, images: torch.Tensor, pixels: str) -> torch.Tensor:
    """Inputs and their reconstructions (decoder mean at the posterior mean), interleaved in
    pairs so a grid shows each input beside its reconstruction."""
    x = to_values(images, pixels, train=False)
    recon = model.likelihood.display(model.decode(model.encode(x).mean))
    shown = _display_input(model, x)
    return torch.stack([shown, recon], dim=1).flatten(0, 1)


@torch.no_grad()
def interpolate_images(
    model: VAE, a: torch.Tensor, b: torch.Tensor, pixels: str, steps: int = 10
) -> torch.Tensor:
    """For each pair (a_i, b_i): a_i, decoded points on the straight line between the latent
    means, b_i; shape (pairs * (steps + 2), C, H, W)."""
    xa, xb = to_values(a, pixels, train=False), to_values(b, pixels, train=False)
    za, zb = model.encode(xa).mean, model.encode(xb).mean
    t = torch.linspace(0, 1, steps, device=za.device).view(1, steps, 1)
    z = za.unsqueeze(1) * (1 - t) + zb.unsqueeze(1) * t  # (pairs, steps, D)
    mid = model.likelihood.display(model.decode(z.flatten(0, 1))).view(len(a), steps, *a.shape[1:])
    ends_a, ends_b = _display_input(model, xa), _display_input(model, xb)
    return torch.cat([ends_a.unsqueeze(1), mid, ends_b.unsqueeze(1)], dim=1).flatten(0, 1)


def _display_input(model: VAE, x: torch.Tensor) -> torch.Tensor:
    return x / 255.0 if model.likelihood.name == "logistic-mixture" else x.clamp(0, 1)
