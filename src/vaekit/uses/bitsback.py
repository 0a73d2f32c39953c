"""Bits-back ANS coding of images with a VAE (Townsend et al. 2019, "BB-ANS").

Per batch, the encoder pops a discretized z from q(z|x) off the ANS stack (getting bits
back), pushes x under p(x|z), then pushes z under p(z); the decoder undoes this in reverse.
The rate approaches -ELBO. The entropy coder is constriction's stack `AnsCoder`.

Latents live on a grid of width 2^-LATENT_BITS over [-LATENT_RANGE, LATENT_RANGE]; prior and
posterior are `QuantizedGaussian`s on the same grid, so the buckets match exactly. Encoder and
decoder must compute identical probabilities: the batch composition is fixed, and network
outputs are rounded onto a coarse float64 grid before they become probabilities, so that
float noise in the last bits cannot change a table. A checksum of the data guards the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import constriction
import numpy as np
import torch
from tqdm.auto import tqdm

from vaekit.errors import VaekitError
from vaekit.model import VAE

LATENT_BITS = 10
LATENT_RANGE = 16.0
WINDOW_SIGMAS = 8.0  # a posterior is coded on its mean +- this many standard deviations
PARAM_GRID = 2.0**-16  # network outputs are rounded to this before use
INIT_SEED = 0x5AE
_model = constriction.stream.model


class CodingError(VaekitError):
    """Input that this model cannot code, or a stream that does not decode."""


@dataclass(frozen=True)
class CodingPlan:
    """What encoder and decoder must agree on, all stored in the file header."""

    sizes: tuple[int, ...]  # images per batch, in coding order
    latent_bits: int = LATENT_BITS
    init_words: int = 0

    @property
    def n(self) -> int:
        return sum(self.sizes)

    def batches(self) -> list[slice]:
        ends = np.cumsum((0, *self.sizes)).tolist()
        return [slice(a, b) for a, b in zip(ends[:-1], ends[1:], strict=True)]


def _round(t: torch.Tensor) -> np.ndarray:
    return np.round(t.detach().double().cpu().numpy() / PARAM_GRID) * PARAM_GRID


class _Tables:
    """Entropy models for one model: the prior, posteriors and likelihood."""

    def __init__(self, model: VAE, latent_bits: int):
        if model.config.prior != "standard-normal":
            raise CodingError("bits-back coding here needs the standard normal prior")
        self.model = model
        self.scale = 2.0**latent_bits
        r = int(LATENT_RANGE * self.scale)
        self.range = r
        self.latent_family = _model.QuantizedGaussian(-r, r)
        self._windows: dict[int, object] = {}
        self.kind = model.likelihood.name
        if self.kind == "bernoulli":
            self.pixel_family = _model.Bernoulli(perfect=False)
        elif self.kind == "logistic-mixture":
            self.pixel_family = _model.Bernoulli(perfect=False)
        else:
            raise CodingError(
                f"a model with a {self.kind} likelihood has no discrete p(x|z): lossless coding "
                f"needs a binary (bernoulli) or 8-bit (logistic-mixture) model"
            )

    @torch.no_grad()
    def posterior(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        q = self.model.encode(x)
        mean = _round(q.mean * self.scale).ravel()
        std = np.maximum(_round(q.stddev * self.scale), 0.5 * PARAM_GRID * self.scale).ravel()
        return mean, std

    def prior(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(count), np.full(count, self.scale)

    def _posterior_groups(self, mean: np.ndarray, std: np.ndarray):
        """Split latents into groups sharing a window [-w, w] around their rounded means.

        constriction's leaky quantization gives every symbol of a model's support at least
        2^-24; over the full latent range that tail mass makes a few pops land far from the
        posterior and cost hundreds of bits in p(x|z). A window of +-8 sigma, rounded up to
        a power of two so that few families are needed, makes that leak negligible.
        """
        half = self.range // 2
        centre = np.clip(np.round(mean), -half, half)
        need = np.maximum(8.0, WINDOW_SIGMAS * std)
        w = np.minimum(2.0 ** np.ceil(np.log2(need)), half).astype(np.int64)
        for width in np.unique(w):
            idx = np.flatnonzero(w == width)
            if width not in self._windows:
                self._windows[width] = _model.QuantizedGaussian(-int(width), int(width))
            yield self._windows[width], idx, centre[idx]

    def pop_posterior(self, coder, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
        """Decode latent symbols from q(z|x): the bits back."""
        out = np.empty(mean.size, dtype=np.int32)
        for family, idx, centre in self._posterior_groups(mean, std):
            u = coder.decode(family, mean[idx] - centre, std[idx])
            out[idx] = u + centre.astype(np.int32)
        return out

    def push_posterior(self, coder, symbols: np.ndarray, mean: np.ndarray, std: np.ndarray) -> None:
        """Undo `pop_posterior` (groups in reverse order: the coder is a stack)."""
        for family, idx, centre in list(self._posterior_groups(mean, std))[::-1]:
            u = (symbols[idx] - centre.astype(np.int32)).astype(np.int32)
            coder.encode_reverse(u, family, mean[idx] - centre, std[idx])

    def latents(self, symbols: np.ndarray, b: int) -> torch.Tensor:
        return torch.from_numpy(symbols.astype(np.float32) / self.scale).view(b, -1)

    @torch.no_grad()
    def likelihood_params(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Decoder outputs for latents z, rounded, as float64 tensors with one row per pixel."""
        params = self.model.decoder(z)
        if self.kind == "bernoulli":
            return [_round_t(params).reshape(-1)]
        base = self.model.likelihood.distribution(params).base_dist
        k = base.logits.shape[-1]
        w = torch.softmax(_round_t(base.logits).reshape(-1, k), -1)
        means = _round_t(base.means).reshape(-1, k)
        inv_scales = torch.exp(-_round_t(base.log_scales).reshape(-1, k))
        return [w, means, inv_scales]

    def encode_pixels(self, coder, x: np.ndarray, params: list[torch.Tensor]) -> None:
        """Push pixels x (flat) under p(x|z)."""
        if self.kind == "bernoulli":
            p = torch.sigmoid(params[0]).numpy()
            coder.encode_reverse(x.astype(np.int32), self.pixel_family, p)
            return
        # 8 binary decisions per pixel down a binary search of 0..255, each with the exact
        # conditional probability of the upper half; the decoder reads level 1 first, so
        # the encoder pushes level 8 first.
        search = _BinarySearch(params)
        xt = torch.from_numpy(x.astype(np.float64))
        levels = []
        for _ in range(8):
            p = search.upper_probability()
            bit = xt >= search.mid
            levels.append((bit.numpy().astype(np.int32), p.numpy()))
            search.descend(bit)
        for bit, p in reversed(levels):
            coder.encode_reverse(bit, self.pixel_family, p)

    def decode_pixels(self, coder, params: list[torch.Tensor]) -> np.ndarray:
        """Pop pixels (flat) under p(x|z)."""
        if self.kind == "bernoulli":
            return coder.decode(self.pixel_family, torch.sigmoid(params[0]).numpy())
        search = _BinarySearch(params)
        for _ in range(8):
            p = search.upper_probability()
            bit = coder.decode(self.pixel_family, p.numpy())
            search.descend(torch.from_numpy(bit.astype(bool)))
        return search.lo.numpy()


def _round_t(t: torch.Tensor) -> torch.Tensor:
    return torch.round(t.detach().double() / PARAM_GRID) * PARAM_GRID


class _BinarySearch:
    """Per-pixel interval [lo, hi) of levels with the mixture CDF at both ends, narrowed one
    bit at a time; each step evaluates the CDF only at the midpoint."""

    def __init__(self, params: list[torch.Tensor]):
        self.w, means, inv_scales = params
        # sigmoid((edge - mean) / scale) = sigmoid(edge * a + b): one fused op per level.
        self.a, self.b = inv_scales, -means * inv_scales
        n = self.w.shape[0]
        self.lo = torch.zeros(n, dtype=torch.float64)
        self.hi = torch.full((n,), 256.0, dtype=torch.float64)
        self.c_lo = torch.zeros(n, dtype=torch.float64)
        self.c_hi = torch.ones(n, dtype=torch.float64)

    def upper_probability(self) -> torch.Tensor:
        """P(x >= mid | lo <= x < hi), 1/2 where the interval has (numerically) no mass."""
        self.mid = (self.lo + self.hi) / 2
        edge = ((self.mid - 0.5) / 127.5 - 1.0).unsqueeze(-1)
        self.c_mid = (self.w * torch.sigmoid(torch.addcmul(self.b, edge, self.a))).sum(-1)
        mass = self.c_hi - self.c_lo
        p = torch.where(mass > 1e-300, (self.c_hi - self.c_mid) / mass.clamp_min(1e-300), 0.5)
        return p.clamp(0.0, 1.0)

    def descend(self, upper: torch.Tensor) -> None:
        self.lo = torch.where(upper, self.mid, self.lo)
        self.c_lo = torch.where(upper, self.c_mid, self.c_lo)
        self.hi = torch.where(upper, self.hi, self.mid)
        self.c_hi = torch.where(upper, self.c_hi, self.c_mid)


def _initial_words(count: int) -> np.ndarray:
    """Deterministic filler the first batch's posterior draws pop from; stored in the file."""
    rng = np.random.default_rng(INIT_SEED)
    return rng.integers(1, 2**32, count, dtype=np.uint64).astype(np.uint32)


def _check_images(model: VAE, images: np.ndarray) -> np.ndarray:
    if images.ndim != 4 or list(images.shape[1:]) != list(model.config.image_shape):
        raise CodingError(
            f"images shaped {tuple(images.shape)} do not match the model's "
            f"(N, {', '.join(map(str, model.config.image_shape))})"
        )
    if images.shape[0] == 0:
        raise CodingError("no images to code")
    if images.dtype != np.uint8:
        raise CodingError(f"images must be uint8, got {images.dtype}")
    if model.likelihood.name == "bernoulli" and images.max() > 1:
        raise CodingError(
            "this model codes binary images (values 0/1); the input has other values: "
            "binarize it first or use an 8-bit model"
        )
    return images


def encode(
    model: VAE, images: np.ndarray, batch_size: int = 100, progress: bool = False
) -> tuple[np.ndarray, CodingPlan]:
    """Bits-back encode uint8 images (N, C, H, W) into ANS words (uint32)."""
    images = _check_images(model, images)
    model.eval()
    tables = _Tables(model, LATENT_BITS)
    # A decoded latent consumes at most the coder's 24-bit probability precision. Each batch is
    # sized so that this worst case is covered by bits already on the stack: popping from an
    # underflowing stack would get no bits back. Batches start at one image and grow
    # geometrically to `batch_size`; only the first image's pops use the initial words.
    worst_bits = model.latent_dim * 24
    init = math.ceil(worst_bits / 32) + 2
    coder = constriction.stream.stack.AnsCoder(_initial_words(init))
    sizes: list[int] = []
    done = 0
    bar = tqdm(total=len(images), desc="compress", unit="img", disable=not progress)
    while done < len(images):
        b = int(min(batch_size, len(images) - done, max(1, coder.num_bits() // worst_bits)))
        x_np = images[done : done + b]
        mean, std = tables.posterior(torch.from_numpy(x_np).float())
        z_sym = tables.pop_posterior(coder, mean, std)
        params = tables.likelihood_params(tables.latents(z_sym, b))
        tables.encode_pixels(coder, x_np.reshape(-1), params)
        coder.encode_reverse(z_sym, tables.latent_family, *tables.prior(z_sym.size))
        sizes.append(b)
        done += b
        bar.update(b)
    bar.close()
    return coder.get_compressed(), CodingPlan(tuple(sizes), LATENT_BITS, init)


def decode(model: VAE, words: np.ndarray, plan: CodingPlan, progress: bool = False) -> np.ndarray:
    """Invert `encode`: ANS words back to the uint8 images (N, C, H, W)."""
    model.eval()
    tables = _Tables(model, plan.latent_bits)
    shape = tuple(model.config.image_shape)
    d = model.latent_dim
    out = np.empty((plan.n, *shape), dtype=np.uint8)
    try:
        coder = constriction.stream.stack.AnsCoder(np.ascontiguousarray(words, dtype=np.uint32))
        for sl in tqdm(plan.batches()[::-1], desc="decompress", unit="batch", disable=not progress):
            b = sl.stop - sl.start
            z_sym = coder.decode(tables.latent_family, *tables.prior(b * d))
            params = tables.likelihood_params(tables.latents(z_sym, b))
            x_np = tables.decode_pixels(coder, params).astype(np.uint8).reshape(b, *shape)
            out[sl] = x_np
            mean, std = tables.posterior(torch.from_numpy(x_np).float())
            tables.push_posterior(coder, z_sym, mean, std)
        rest = coder.get_compressed()
    except (ValueError, RuntimeError, AssertionError, OverflowError, KeyError, IndexError) as e:
        raise CodingError(f"the bitstream does not decode with this model ({e})") from e
    if not np.array_equal(rest, _initial_words(plan.init_words)):
        raise CodingError(
            "the bitstream did not decode back to its initial state: the file is corrupt or "
            "was made with another model"
        )
    return out
