"""Pixel modes: how uint8 images become the values a likelihood is defined on.

A pixel mode is saved with the model (`ModelConfig.pixels`): evaluation, generation,
compression and anomaly scores ask the model for it, never take it as an argument.

- dynamic-binary: a fresh Bernoulli(x/255) draw each time (the standard likelihood benchmark);
  the test split is binarized once, each image by its own content-seeded draw.
- static-binary: every split binarized once, each image by its own content-seeded draw.
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

import numpy as np
import torch
from typing_extensions import override

from vaekit.randomness import ExampleNoise
from vaekit.registry import PIXEL_MODES

FIXED_BINARIZATION_SEED = 0

Noise = ExampleNoise | torch.Generator | None


def binarize_fixed(images: torch.Tensor, seed: int = FIXED_BINARIZATION_SEED) -> torch.Tensor:
    """Binarize uint8 images once (result uint8 in {0, 1}); each image's draw is seeded by its
    own bytes, so it does not depend on where the image sits in the array."""
    if len(images) == 0:
        return images.clone()
    u = ExampleNoise(images, seed).uniform(tuple(images.shape[1:]))
    return (u.to(images.device) * 255.0 < images.float()).to(torch.uint8)


class PixelMode:
    """How a split of uint8 images is prepared and turned into likelihood values."""

    name: str = ""
    likelihood: str = ""  # the likelihood registry name this mode needs
    binary: bool = False  # values are {0, 1} (Bernoulli targets, or their expectation)
    discrete: bool = True  # values are integers: log p(x) is a probability, not a density
    images: bool = True  # False for rows of tabular features
    streamable: bool = True  # can be prepared batch by batch from shards
    note: str | None = None  # printed by the evaluator beside its numbers

    def prepare(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        """Work done once per split (e.g. a fixed binarization); uint8 in, uint8 out."""
        return torch.as_tensor(images)

    def values(self, batch: torch.Tensor, train: bool, noise: Noise = None) -> torch.Tensor:
        """Float values for the likelihood from a prepared batch. Random draws (training's
        binarization, dequantization) come from `noise` when given (per-example streams, or
        one CPU generator), else torch's RNG."""
        return batch.float()

    def display(self, values: torch.Tensor) -> torch.Tensor:
        """Values shown as images in [0, 1]."""
        return values.float().clamp(0, 1)

    def as_uint8_images(self, prepared: torch.Tensor) -> np.ndarray:
        """A prepared split as the 8-bit images a viewer or a generic coder (PNG) sees."""
        return prepared.cpu().numpy().astype(np.uint8)

    def offset_nats(self, dims: int) -> float:
        """Nats to add to a log-likelihood of values to get one of the 8-bit pixels."""
        return 0.0

    def code_values(self, images: np.ndarray) -> tuple[np.ndarray, int]:
        """Integer values that the model's likelihood codes losslessly, and the factor that
        maps them back to the stored pixels (binary images may be stored as 0/255)."""
        return images, 1

    def __repr__(self) -> str:
        return f"PixelMode({self.name!r})"


def _uniform(batch: torch.Tensor, noise: Noise) -> torch.Tensor:
    if isinstance(noise, ExampleNoise):
        return noise.uniform(tuple(batch.shape[1:]), batch.device)
    if noise is None:
        return torch.rand(batch.shape, device=batch.device)
    return torch.rand(batch.shape, generator=noise).to(batch.device)


class _Binary(PixelMode):
    likelihood = "bernoulli"
    binary = True

    def as_uint8_images(self, prepared: torch.Tensor) -> np.ndarray:
        # binarized splits hold {0, 1}; expected-binary keeps 0..255 and overrides this
        return prepared.cpu().numpy().astype(np.uint8) * np.uint8(255)

    def code_values(self, images: np.ndarray) -> tuple[np.ndarray, int]:
        from vaekit.errors import DataError

        values = np.unique(images)
        if set(values.tolist()) <= {0, 1}:
            return images, 1
        if set(values.tolist()) <= {0, 255}:
            return (images // 255).astype(np.uint8), 255
        raise DataError(
            f"this model codes binary images, but the input holds {len(values)} distinct "
            f"values (e.g. {values[:5].tolist()}): binarize it or use an 8-bit model"
        )


@PIXEL_MODES.register("dynamic-binary")
class DynamicBinary(_Binary):
    """A fresh Bernoulli(x/255) draw each time; each test image binarized once by its own seed."""
    name = "dynamic-binary"

    @override
    def prepare(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        images = torch.as_tensor(images)
        return images if train else binarize_fixed(images, FIXED_BINARIZATION_SEED + 1)

    @override
    def values(self, batch, train, noise=None):
        if train:
            return (_uniform(batch, noise) * 255.0 < batch.float()).float()
        return batch.float()


@PIXEL_MODES.register("static-binary")
class StaticBinary(_Binary):
    """Every image binarized once, by a draw seeded with its own bytes."""
    name = "static-binary"
    streamable = False  # a fixed binarization of the whole split is made once, in memory

    @override
    def prepare(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        return binarize_fixed(
            torch.as_tensor(images), FIXED_BINARIZATION_SEED + (0 if train else 1)
        )


@PIXEL_MODES.register("expected-binary")
class ExpectedBinary(_Binary):
    """x/255 as Bernoulli targets: the dynamic-binary objective's average over binarizations."""
    name = "expected-binary"
    discrete = False
    note = (
        "expected-binary: the ELBO bounds E_b[log p(b)] over binarizations "
        "b ~ Bernoulli(x/255); log_px is the log-marginal of the cross-entropy objective, "
        "not a normalized likelihood, and is not comparable with binary log p(x)"
    )

    as_uint8_images = PixelMode.as_uint8_images  # its splits keep the 8-bit pixels

    @override
    def values(self, batch, train, noise=None):
        return batch.float() / 255.0


@PIXEL_MODES.register("8bit")
class EightBit(PixelMode):
    """Integer levels 0..255 under a discretized logistic mixture."""
    name = "8bit"
    likelihood = "logistic-mixture"

    @override
    def display(self, values: torch.Tensor) -> torch.Tensor:
        return values.float() / 255.0


@PIXEL_MODES.register("continuous")
class Continuous(PixelMode):
    """(x + u)/256 with uniform dequantization noise, under a Gaussian."""
    name = "continuous"
    likelihood = "gaussian"
    discrete = False

    @override
    def values(self, batch, train, noise=None):
        return (batch.float() + _uniform(batch, noise)) / 256.0

    @override
    def offset_nats(self, dims: int) -> float:
        return -dims * math.log(256.0)


@PIXEL_MODES.register("tabular")
class Tabular(PixelMode):
    """Standardized float rows under a Gaussian (the anomaly detector's tables)."""
    name = "tabular"
    likelihood = "gaussian"
    discrete = False
    images = False

    @override
    def display(self, values: torch.Tensor) -> torch.Tensor:
        return values.float()


@PIXEL_MODES.register("8bit-colour")
class EightBitColour(EightBit):
    """8-bit colour images (3 channels) with the channels coupled in one mixture
    (PixelCNN++'s): a mode of its own, so that 3-channel `8bit` runs and files keep theirs."""

    name = "8bit-colour"
    likelihood = "colour-logistic-mixture"



def pixel_mode(name: str | PixelMode) -> PixelMode:
    """The pixel mode registered as `name` (an instance passes through)."""
    if isinstance(name, PixelMode):
        return name
    return PIXEL_MODES.get(name)()


def prepare_split(images: torch.Tensor, mode: str | PixelMode, train: bool) -> torch.Tensor:
    """Work that is done once per split (fixed binarizations); the rest is per batch."""
    return pixel_mode(mode).prepare(torch.as_tensor(images), train)


def to_values(
    batch: torch.Tensor,
    mode: str | PixelMode,
    train: bool,
    noise: Noise = None,
) -> torch.Tensor:
    """Turn a uint8 batch (from `prepare_split`) into float values for the likelihood."""
    return pixel_mode(mode).values(batch, train, noise)
