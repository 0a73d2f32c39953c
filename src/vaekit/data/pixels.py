"""Pixel modes: how uint8 images become the values a likelihood is defined on.

- dynamic-binary: a fresh Bernoulli(x/255) draw each time (the standard likelihood benchmark);
  the test split is binarized once with a fixed seed so evaluations are comparable.
- static-binary: every split binarized once with a fixed seed.
- expected-binary: values x/255 in [0, 1] under the Bernoulli cross-entropy, the classic
  PyTorch-example objective. Cross-entropy is linear in the target, so this is the exact
  expectation of the dynamic-binary log-likelihood over binarizations b ~ Bernoulli(x/255)
  (no sampling noise), and the ELBO bounds E_b[log p(b)]: q(z|x) is a valid proposal for
  every b. The importance-sampled "log p(x)" of this mode is not a normalized likelihood.
- 8bit: integer pixel values 0..255 under a discrete likelihood (exact bits/dim).
- continuous: (x + u)/256 with u ~ U[0,1) (uniform dequantization), so a density bound on
  [0,1] is also a bound on the discrete likelihood.
- tabular: float rows (already standardized), modelled as they are by a Gaussian.
"""

from __future__ import annotations

import math

import torch

PIXEL_MODES = (
    "dynamic-binary",
    "static-binary",
    "expected-binary",
    "8bit",
    "continuous",
    "tabular",
)
BINARY_MODES = ("dynamic-binary", "static-binary", "expected-binary")
LIKELIHOOD_FOR = {
    "dynamic-binary": "bernoulli",
    "static-binary": "bernoulli",
    "expected-binary": "bernoulli",
    "8bit": "logistic-mixture",
    "continuous": "gaussian",
    "tabular": "gaussian",
}
FIXED_BINARIZATION_SEED = 0


def binarize_fixed(images: torch.Tensor, seed: int = FIXED_BINARIZATION_SEED) -> torch.Tensor:
    """Binarize uint8 images once with a fixed seed (result is uint8 in {0, 1})."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    u = torch.rand(images.shape, generator=g)
    return (u.to(images.device) * 255.0 < images.float()).to(torch.uint8)


def prepare_split(images: torch.Tensor, mode: str, train: bool) -> torch.Tensor:
    """Work that is done once per split (fixed binarizations); the rest is per batch."""
    if mode == "static-binary" or (mode == "dynamic-binary" and not train):
        return binarize_fixed(images, FIXED_BINARIZATION_SEED + (0 if train else 1))
    return images


def to_values(
    batch: torch.Tensor, mode: str, train: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Turn a uint8 batch (from `prepare_split`) into float values for the likelihood."""
    if mode == "dynamic-binary" and train:
        u = torch.rand(batch.shape, device=batch.device, generator=generator)
        return (u * 255.0 < batch.float()).float()
    if mode == "expected-binary":
        return batch.float() / 255.0
    if mode in ("static-binary", "dynamic-binary", "8bit", "tabular"):
        return batch.float()
    if mode == "continuous":
        u = torch.rand(batch.shape, device=batch.device, generator=generator)
        return (batch.float() + u) / 256.0
    raise ValueError(f"unknown pixel mode {mode!r}; choose from {PIXEL_MODES}")


def discrete_offset_nats(mode: str, dims: int) -> float:
    """Nats to add to a log-density on [0,1]^D to get a log-probability of the 8-bit pixels."""
    return -dims * math.log(256.0) if mode == "continuous" else 0.0
