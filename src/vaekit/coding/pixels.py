"""Coding pixels under a likelihood: one coder per codable likelihood, registered by the
likelihood's name. A likelihood says what p(x|z) is (`Likelihood.coding_distribution`);
its pixel coder pushes and pops values under it, and says how the generic fallback coder
(xz) sees the values."""

from __future__ import annotations

import numpy as np
import torch
from torch.distributions import Distribution
from typing_extensions import override

from vaekit.coding.interval import IntervalSearch, binary_model, pop_symbols, push_symbols
from vaekit.distributions.likelihoods import DiscretizedLogisticMixture, Likelihood
from vaekit.errors import CodingError
from vaekit.registry import Registry


class PixelCoder:
    """Pushes and pops integer values (B, C, H, W) under a likelihood's coding distribution."""

    def push(self, coder, values: np.ndarray, dist: Distribution) -> None:  # pragma: no cover
        """Encode integer values (B, C, H, W) onto the ANS stack under `dist`."""
        raise NotImplementedError

    def pop(self, coder, dist: Distribution) -> np.ndarray:  # pragma: no cover
        """Decode the values `push` encoded under the same `dist`: int32 (B, C, H, W)."""
        raise NotImplementedError

    def generic_bytes(self, values: np.ndarray) -> bytes:
        """The values as the generic coder sees them: one byte each."""
        return values.tobytes()

    def generic_size(self, values: int) -> int:
        """Bytes `generic_bytes` gives for this many values."""
        return values

    def from_generic_bytes(self, raw: np.ndarray, values: int) -> np.ndarray:
        """Undo `generic_bytes` (uint8 in, the first `values` values out)."""
        return raw


PIXEL_CODERS: Registry[PixelCoder] = Registry("pixel coder")


@PIXEL_CODERS.register("bernoulli")
class BinaryPixels(PixelCoder):
    """Binary pixels, one Bernoulli decision each; the generic coder gets 8 to a byte."""

    @override
    def push(self, coder, values, dist):
        probs = dist.base_dist.probs.reshape(-1).cpu().numpy()
        coder.encode_reverse(values.reshape(-1).astype(np.int32), binary_model(), probs)

    @override
    def pop(self, coder, dist):
        probs = dist.base_dist.probs.reshape(-1).cpu().numpy()
        out = coder.decode(binary_model(), probs)
        return out.astype(np.int32).reshape(dist.base_dist.probs.shape)

    @override
    def generic_bytes(self, values):
        return np.packbits(values).tobytes()

    @override
    def generic_size(self, values):
        return (values + 7) // 8

    @override
    def from_generic_bytes(self, raw, values):
        return np.unpackbits(raw)[:values]


def _level_search(mixture: DiscretizedLogisticMixture) -> IntervalSearch:
    """8-bit levels as 8 decisions down a binary search of 0..255 under the mixture's CDF."""
    shape = mixture.batch_shape
    ones = torch.ones(shape, dtype=torch.float64)
    return IntervalSearch(
        torch.zeros(shape, dtype=torch.int64),
        torch.full(shape, 256, dtype=torch.int64),
        lambda level: mixture.cdf_below(level.double()),
        c_lo=torch.zeros_like(ones),
        c_hi=ones,
    )


@PIXEL_CODERS.register("logistic-mixture")
class EightBitLevels(PixelCoder):
    """8-bit levels under the discretized logistic mixture, every channel on its own."""

    @override
    def push(self, coder, values, dist):
        search = _level_search(dist.base_dist)
        push_symbols(
            coder, torch.from_numpy(values.astype(np.int64)).reshape(search.lo.shape), search
        )

    @override
    def pop(self, coder, dist):
        return pop_symbols(coder, _level_search(dist.base_dist))


@PIXEL_CODERS.register("colour-logistic-mixture")
class ColourLevels(PixelCoder):
    """8-bit colour pixels channel by channel (r, then g given r, then b given both), each
    channel's levels under its mixture given the channels before it."""

    @override
    def push(self, coder, values, dist):
        base = dist.base_dist
        x = torch.from_numpy(values.astype(np.int64))
        xd = x.double()
        # the decoder pops r first, so r is pushed last
        for c in reversed(range(3)):
            search = _level_search(base.channel(c, xd))
            push_symbols(coder, x[:, c].reshape(search.lo.shape), search)

    @override
    def pop(self, coder, dist):
        base = dist.base_dist
        b, h, w = base.logits.shape[0], *base.logits.shape[-2:]
        x = torch.zeros((b, 3, h, w), dtype=torch.float64)
        for c in range(3):
            x[:, c] = torch.from_numpy(pop_symbols(coder, _level_search(base.channel(c, x))))
        return x.numpy().astype(np.int32)


def pixel_coder(likelihood: Likelihood) -> PixelCoder:
    """The coder for `likelihood`'s values, or a CodingError that says why there is none."""
    if likelihood.name not in PIXEL_CODERS:
        raise CodingError(
            f"a model with a {likelihood.name} likelihood has no discrete p(x|z): lossless "
            f"coding needs a binary (bernoulli) or 8-bit (logistic-mixture) model"
        )
    return PIXEL_CODERS.get(likelihood.name)()
