"""Bits-back ANS coding of images with a latent-variable model (Townsend et al. 2019, "BB-ANS").

Per batch, the encoder pops each latent group from q (top-down, getting bits back), pushes
x under p(x|z), then pushes the groups under their priors; the decoder undoes this in
reverse. The rate approaches -ELBO. The entropy coder is constriction's stack `AnsCoder`.
A Markov hierarchy (`models.markov`, whose q(z_{l+1} | z_l) does not look at x) is coded
with Bit-Swap's interleaving instead: pop z_1, push x, pop z_2, push z_1, ...; the bits an
image needs on the stack before it has pushed anything are then one level's, not all
levels'. A top-down hierarchy cannot interleave: each q(z_l | z_>l, x) needs x, which the
decoder only has after every group has been popped.

The schedule is the model family's `coding_scheme` (`SCHEMES`: top-down or Bit-Swap). The
coder asks the model only for its scheme's conditionals and `decode_params`, the
likelihood's pixel coder (`coding.pixels`) to push and pop pixels, and the latent coder
(`coding.latents`) to push and pop latents: nothing here depends on which likelihood, prior
or model family it codes with.
Encoder and decoder must compute identical probabilities: the batch composition is fixed,
and parameters are rounded onto a coarse float64 grid (`round_to_grid`) before they become
probabilities, so that float noise in the last bits cannot change a table.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import constriction
import numpy as np
import torch
from torch.distributions import Distribution, Independent, Normal
from tqdm.auto import tqdm
from typing_extensions import override

from vaekit.coding.exact_arithmetic import ARITHMETIC, ExactArithmetic, exact_copy, exact_digest
from vaekit.coding.latent_search import SearchedLatentCoder
from vaekit.coding.latents import LATENT_BITS, LatentCoder
from vaekit.coding.pixels import pixel_coder
from vaekit.errors import CodingError
from vaekit.models.base import LatentVariableModel
from vaekit.registry import Registry

PRECISION_BITS = 24  # constriction's probability precision: the most one pop can consume
INIT_SEED = 0x5AE
MAX_PARTICLES = 256
LIKELIHOOD_ROWS = 32  # rows per likelihood call when weighing particles (exact arithmetic)
# Where probabilities come from: "float" (vaekit <= 0.3: float32 networks, rounded onto a
# grid; the same bits only on the same machine and library) or `ARITHMETIC` (exact, any machine)
FLOAT = "float"


@dataclass(frozen=True)
class CodingPlan:
    """What encoder and decoder must agree on, all stored in the file header."""

    sizes: tuple[int, ...]  # images per batch, in coding order
    latent_bits: int = LATENT_BITS
    init_words: int = 0
    particles: int = 1  # importance samples per image (1: plain bits-back)
    arithmetic: str = FLOAT
    exact_digest: str | None = None  # SHA-256 of the exact network (exact arithmetic only)
    # particles of each batch, growing with the stack up to `particles` (vaekit >= 0.5);
    # empty: every batch has `particles` (files of vaekit <= 0.4)
    ramp: tuple[int, ...] = ()

    @property
    def n(self) -> int:
        """Images in the file."""
        return sum(self.sizes)

    def batch_particles(self) -> list[int]:
        """Importance samples per image of each batch, in coding order."""
        return list(self.ramp) if self.ramp else [self.particles] * len(self.sizes)

    def batches(self) -> list[slice]:
        """The images of each batch, as slices in coding order."""
        ends = np.cumsum((0, *self.sizes)).tolist()
        return [slice(a, b) for a, b in zip(ends[:-1], ends[1:], strict=True)]


def pops_per_image(model: LatentVariableModel) -> int:
    """Pops from q and from mixture posteriors p(c|z) an image makes before it has pushed
    anything: each may consume up to `PRECISION_BITS` from the stack."""
    return SCHEMES.get(model.coding_scheme).pops_per_image(model)


def _initial_words(count: int) -> np.ndarray:
    """Deterministic filler the first batch's posterior draws pop from; stored in the file."""
    rng = np.random.default_rng(INIT_SEED)
    return rng.integers(1, 2**32, count, dtype=np.uint64).astype(np.uint32)


def check_codable(model: LatentVariableModel, values: np.ndarray) -> None:
    """Refuse what this model cannot code, with the reason."""
    pixel_coder(model.likelihood)  # refuses a likelihood without discrete values
    if values.ndim != 4 or list(values.shape[1:]) != list(model.config.image_shape):
        raise CodingError(
            f"images shaped {tuple(values.shape)} do not match the model's "
            f"(N, {', '.join(map(str, model.config.image_shape))})"
        )
    if values.shape[0] == 0:
        raise CodingError("no images to code")
    if values.dtype != np.uint8:
        raise CodingError(f"images must be uint8, got {values.dtype}")


def _device(model: LatentVariableModel) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def _posteriors(
    model, latents: LatentCoder, coder, x: torch.Tensor, particles: int = 1
) -> tuple[list[np.ndarray], list[Distribution]]:
    """Pop every group from q (top-down), for `particles` particles of each image of x: the
    symbols, and the posteriors they came from."""
    symbols, posteriors, upper = [], [], []
    for _ in model.group_dims:
        q = model.coding_posterior(x, upper, particles)
        sym = latents.pop_posterior(coder, q)
        symbols.append(sym)
        posteriors.append(q)
        upper.append(latents.symbols_to_latents(sym).to(x.device))
    return symbols, posteriors


def _latents(latents: LatentCoder, symbols: list[np.ndarray], device) -> torch.Tensor:
    return torch.cat([latents.symbols_to_latents(s) for s in symbols], -1).to(device)


@torch.no_grad()
def _decoded(model, latents: LatentCoder, symbols: list[np.ndarray]) -> Distribution:
    z = _latents(latents, symbols, _device(model))
    return model.likelihood.coding_distribution(model.decode_params(z))


def _push_under(push, coder, symbols: list[np.ndarray], dists: list[Distribution]) -> None:
    """Push every group with `push` under its distribution, bottom group first (the stack
    then pops them top-down)."""
    for sym, dist in list(zip(symbols, dists, strict=True))[::-1]:
        push(coder, sym, dist)


def _posteriors_given(model, latents: LatentCoder, x: torch.Tensor, symbols) -> list:
    upper = [latents.symbols_to_latents(s).to(x.device) for s in symbols]
    return [model.coding_posterior(x, upper[:i]) for i in range(len(symbols))]


def _priors(model, latents: LatentCoder, symbols: list[np.ndarray]) -> list[Distribution]:
    """p(z_l | z_>l) of every group given the groups above."""
    upper = [latents.symbols_to_latents(s).to(_device(model)) for s in symbols]
    return [latents.prior(model, upper[:i]) for i in range(len(symbols))]


def _push_posteriors(model, latents: LatentCoder, coder, x: torch.Tensor, symbols) -> None:
    """Undo `_posteriors`: push every group under q, bottom group first."""
    posteriors = _posteriors_given(model, latents, x, symbols)
    _push_under(latents.push_posterior, coder, symbols, posteriors)


def _push_priors(model, latents: LatentCoder, coder, symbols: list[np.ndarray]) -> None:
    """Push every group under p(z_l | z_>l), bottom group first."""
    _push_under(latents.push_prior, coder, symbols, _priors(model, latents, symbols))


def _pop_priors(model, latents: LatentCoder, coder, b: int) -> list[np.ndarray]:
    """Undo `_push_priors`: pop every group from its prior, top group first."""
    symbols: list[np.ndarray] = []
    upper: list[torch.Tensor] = []
    for d in model.group_dims:
        sym = latents.pop_prior(coder, latents.prior(model, upper), b, d)
        symbols.append(sym)
        upper.append(latents.symbols_to_latents(sym).to(_device(model)))
    return symbols


def _as_values(model, x_np: np.ndarray, b: int) -> torch.Tensor:
    shape = tuple(model.config.image_shape)
    return torch.from_numpy(x_np.astype(np.uint8).reshape(b, *shape)).float().to(_device(model))


def _encode_top_down(model, latents: LatentCoder, coder, x_np: np.ndarray, x: torch.Tensor):
    """BB-ANS: pop every group from q (top-down), push x, push every group under p."""
    symbols, _ = _posteriors(model, latents, coder, x)
    pixel_coder(model.likelihood).push(coder, x_np, _decoded(model, latents, symbols))
    _push_priors(model, latents, coder, symbols)


def _decode_top_down(model, latents: LatentCoder, coder, b: int) -> np.ndarray:
    symbols = _pop_priors(model, latents, coder, b)
    x_np = pixel_coder(model.likelihood).pop(coder, _decoded(model, latents, symbols))
    _push_posteriors(model, latents, coder, _as_values(model, x_np, b), symbols)
    return x_np


# ---- importance-weighted bits-back (Ruan et al. 2021) ------------------------------------
#
# With K particles z^1..z^K ~ q(z|x) and an index j drawn in proportion to the importance
# weights w_k = p(x, z^k) / q(z^k | x), the file codes (j, z^j, x, the other particles)
# under P = (1/K) p(x, z^j) prod_{k != j} q(z^k | x), having taken back the bits of
# Q = prod_k q(z^k | x) w_j / sum(w). The net cost is -log P + log Q = -log (1/K) sum_k w_k:
# the K-sample importance-weighted bound instead of the ELBO. Particles are rows of one batch
# of K x B images (x repeated, particle-major).
#
# Both sides run each network once on the K x B rows, and take the rows they code under
# from those outputs: exact arithmetic computes every row on its own (per-sample grids), so
# a row's outputs do not depend on the batch around it. For the same reason the encoder's
# work on x, the same for every particle, runs once per image. Float arithmetic (files of vaekit
# <= 0.3) depends on the batch's composition, so there each subset is recomputed as its own
# batch, on both sides, as those files were written.


def _take(dist: Distribution, rows: np.ndarray) -> Distribution:
    """Some rows of a batch of diagonal Gaussians; a distribution without a batch (the top
    group's prior, shared by every row) as it is."""
    if isinstance(dist, Independent) and dist.base_dist.batch_shape[:-1]:
        base, idx = dist.base_dist, torch.from_numpy(rows).to(dist.base_dist.loc.device)
        return Independent(Normal(base.loc[idx], base.scale[idx], validate_args=False), 1)
    return dist


@torch.no_grad()
def _joint(model, latents: LatentCoder, symbols: list[np.ndarray]):
    """The priors of every group and the decoder's parameters, on every row of `symbols`."""
    z = _latents(latents, symbols, _device(model))
    return _priors(model, latents, symbols), model.decode_params(z)


def _index_probabilities(model, latents, x, symbols, posteriors, priors, params, k: int):
    """P(j | x) of each image's particle index from log p(x, z) - log q(z | x) of each row
    (float64), z on the latent grid."""
    log_w = torch.zeros(x.shape[0], dtype=torch.float64)
    for sym, q, p in zip(symbols, posteriors, priors, strict=True):
        z = latents.symbols_to_latents(sym).to(x.device)
        log_w = log_w + latents.log_ratio(p, q, z)
    xd = x.cpu().double()
    # Exact arithmetic computes each row on its own, so the likelihood can run on a few
    # rows at a time, whose float64 temporaries stay in cache (8-bit, K=4: 1.3-1.4x faster
    # coding on 2 cores, BENCHMARKS.md); float files keep their one call over the batch.
    step = LIKELIHOOD_ROWS if latents.exact else x.shape[0]
    log_px = [
        model.likelihood.coding_distribution(params[i : i + step]).log_prob(xd[i : i + step])
        for i in range(0, x.shape[0], step)
    ]
    log_w = log_w + torch.cat(log_px).double()
    return latents.index_probabilities(log_w, k, x.shape[0] // k)


def _rows(j: np.ndarray, k: int, b: int) -> tuple[np.ndarray, np.ndarray]:
    """The chosen particle's row of each image, and every other row (ascending)."""
    chosen = j * b + np.arange(b)
    keep = np.ones(k * b, dtype=bool)
    keep[chosen] = False
    return chosen, np.flatnonzero(keep)


def _encode_importance_weighted(model, latents, coder, x_np, x, k: int) -> None:
    b = x.shape[0]
    xr = x.repeat(k, *([1] * (x.dim() - 1)))
    # K particles: bits back
    if latents.exact:
        symbols, posteriors = _posteriors(model, latents, coder, x, k)
    else:
        symbols, posteriors = _posteriors(model, latents, coder, xr)
    priors, params = _joint(model, latents, symbols)
    probs = _index_probabilities(model, latents, xr, symbols, posteriors, priors, params, k)
    j = coder.decode(latents.categorical, probs).astype(np.int64)  # the index: bits back
    chosen, others = _rows(j, k, b)
    mine, theirs = [s[chosen] for s in symbols], [s[others] for s in symbols]
    if latents.exact:
        _push_under(latents.push_posterior, coder, theirs, [_take(q, others) for q in posteriors])
        dist = model.likelihood.coding_distribution(params[torch.from_numpy(chosen)])
        pixel_coder(model.likelihood).push(coder, x_np, dist)
        _push_under(latents.push_prior, coder, mine, [_take(p, chosen) for p in priors])
    else:
        _push_posteriors(model, latents, coder, xr[others], theirs)
        pixel_coder(model.likelihood).push(coder, x_np, _decoded(model, latents, mine))
        _push_priors(model, latents, coder, mine)
    coder.encode_reverse(j.astype(np.int32), latents.categorical, np.full((b, k), 1.0 / k))


@torch.no_grad()
def _pop_others(model, latents, coder, x: torch.Tensor, k: int, picked, chosen, others):
    """Pop the other particles' groups top-down, each from q computed on all K x B rows (the
    chosen rows' latents already known), as the encoder's posteriors were: the symbols of
    every row, and those posteriors."""
    symbols, posteriors, upper = [], [], []
    for mine in picked:
        q = model.coding_posterior(x, upper, k)
        full = np.empty((k * x.shape[0], mine.shape[1]), dtype=mine.dtype)
        full[chosen] = mine
        full[others] = latents.pop_posterior(coder, _take(q, others))
        symbols.append(full)
        posteriors.append(q)
        upper.append(latents.symbols_to_latents(full).to(x.device))
    return symbols, posteriors


def _decode_importance_weighted(model, latents, coder, b: int, k: int) -> np.ndarray:
    j = coder.decode(latents.categorical, np.full((b, k), 1.0 / k)).astype(np.int64)
    picked = _pop_priors(model, latents, coder, b)
    x_np = pixel_coder(model.likelihood).pop(coder, _decoded(model, latents, picked))
    x = _as_values(model, x_np, b)
    xr = x.repeat(k, *([1] * (x.dim() - 1)))
    chosen, others = _rows(j, k, b)
    if latents.exact:
        symbols, posteriors = _pop_others(model, latents, coder, x, k, picked, chosen, others)
    else:
        rest, _ = _posteriors(model, latents, coder, xr[others])
        symbols = []
        for mine, theirs in zip(picked, rest, strict=True):
            full = np.empty((k * b, mine.shape[1]), dtype=mine.dtype)
            full[chosen], full[others] = mine, theirs
            symbols.append(full)
        posteriors = _posteriors_given(model, latents, xr, symbols)
    priors, params = _joint(model, latents, symbols)
    probs = _index_probabilities(model, latents, xr, symbols, posteriors, priors, params, k)
    coder.encode_reverse(j.astype(np.int32), latents.categorical, probs)
    _push_under(latents.push_posterior, coder, symbols, posteriors)
    return x_np


def _encode_bitswap(model, latents: LatentCoder, coder, x_np: np.ndarray, x: torch.Tensor):
    """Bit-Swap (Kingma et al. 2019): pop z_1 from q(z_1|x), push x; then for each level pop
    z_{l+1} from q(z_{l+1}|z_l) and push z_l under p(z_l|z_{l+1}); push the top under p."""
    sym = latents.pop_posterior(coder, model.chain_posterior(0, x))
    z = latents.symbols_to_latents(sym).to(x.device)
    pixel_coder(model.likelihood).push(coder, x_np, _decoded(model, latents, [sym]))
    for level in range(1, model.levels):
        above_sym = latents.pop_posterior(coder, model.chain_posterior(level, z))
        above = latents.symbols_to_latents(above_sym).to(x.device)
        latents.push_prior(coder, sym, model.chain_prior(level - 1, above))
        sym, z = above_sym, above
    latents.push_prior(coder, sym, model.chain_prior(model.levels - 1, None))


def _decode_bitswap(model, latents: LatentCoder, coder, b: int) -> np.ndarray:
    dev, dims = _device(model), model.group_dims[::-1]  # bottom-up sizes
    top = model.levels - 1
    sym = latents.pop_prior(coder, model.chain_prior(top, None), b, dims[top])
    z = latents.symbols_to_latents(sym).to(dev)
    for level in reversed(range(1, model.levels)):
        below_sym = latents.pop_prior(coder, model.chain_prior(level - 1, z), b, dims[level - 1])
        below = latents.symbols_to_latents(below_sym).to(dev)
        latents.push_posterior(coder, sym, model.chain_posterior(level, below))
        sym, z = below_sym, below
    x_np = pixel_coder(model.likelihood).pop(coder, _decoded(model, latents, [sym]))
    shape = tuple(model.config.image_shape)
    x = torch.from_numpy(x_np.astype(np.uint8).reshape(b, *shape)).float().to(dev)
    latents.push_posterior(coder, sym, model.chain_posterior(0, x))
    return x_np


class CodingScheme:
    """The order in which a model family's latents and pixels are pushed and popped. A
    model declares its scheme's name as `coding_scheme` (models.base)."""

    @staticmethod
    def pops_per_image(model: LatentVariableModel) -> int:  # pragma: no cover
        """Pops an image makes before it has pushed anything (each up to PRECISION_BITS)."""
        raise NotImplementedError

    @staticmethod
    def coders(particles: int):  # pragma: no cover
        """The (encode, decode) pair of batch functions for this many particles."""
        raise NotImplementedError


SCHEMES: Registry[type[CodingScheme]] = Registry("coding scheme")


@SCHEMES.register("top-down")
class TopDown(CodingScheme):
    """Pop every group from q top-down, push x, push the groups under their priors; with K
    particles, importance-weighted bits-back. Needs `coding_posterior` and `coding_prior`."""

    @override
    @staticmethod
    def pops_per_image(model: LatentVariableModel) -> int:
        return model.latent_dim + len(model.group_dims)

    @override
    @staticmethod
    def coders(particles: int):
        if particles > 1:
            return (
                lambda m, lat, c, x_np, x: _encode_importance_weighted(
                    m, lat, c, x_np, x, particles
                ),
                lambda m, lat, c, b: _decode_importance_weighted(m, lat, c, b, particles),
            )
        return _encode_top_down, _decode_top_down


@SCHEMES.register("bitswap")
class BitSwap(CodingScheme):
    """Bit-Swap's interleaving for a Markov hierarchy: pop z_1, push x, pop z_2, push z_1,
    ...; an image needs one level's bits on the stack, not all levels'. Needs
    `chain_posterior` and `chain_prior`."""

    @override
    @staticmethod
    def pops_per_image(model: LatentVariableModel) -> int:
        return max(model.group_dims) + len(model.group_dims)

    @override
    @staticmethod
    def coders(particles: int):
        if particles > 1:
            raise CodingError("importance-weighted bits-back needs a top-down model, not bitswap")
        return _encode_bitswap, _decode_bitswap


def _coders(model: LatentVariableModel, particles: int):
    """The (encode, decode) pair of batch functions for this model and particle count."""
    return SCHEMES.get(model.coding_scheme).coders(particles)


def _arithmetic(model: LatentVariableModel, arithmetic: str, latent_bits: int):
    """The network, latent coder and context that compute probabilities the named way."""
    model.eval()
    if arithmetic == FLOAT:
        return model, LatentCoder(latent_bits), contextlib.nullcontext
    if arithmetic == ARITHMETIC:
        return exact_copy(model), SearchedLatentCoder(latent_bits), ExactArithmetic
    raise CodingError(
        f"unknown arithmetic {arithmetic!r} (this vaekit knows {FLOAT}, {ARITHMETIC})"
    )


def encode(
    model: LatentVariableModel,
    values: np.ndarray,
    batch_size: int = 100,
    progress: bool = False,
    particles: int = 1,
    arithmetic: str = ARITHMETIC,
) -> tuple[np.ndarray, CodingPlan]:
    """Bits-back encode integer values (N, C, H, W) as uint8 into ANS words (uint32).
    `particles` > 1 codes at the K-sample importance-weighted bound instead of -ELBO, for K
    times the network work after the encoder per image (the first images with fewer, as many
    as the stack covers: the file's fixed cost is one particle's whatever K is). `arithmetic`:
    exact (decodes on any machine) or the float path of vaekit <= 0.3 (kept to measure
    against)."""
    check_codable(model, values)
    if not 1 <= particles <= MAX_PARTICLES:
        raise CodingError(f"particles must be between 1 and {MAX_PARTICLES}; got {particles}")
    _coders(model, particles)  # refuses what cannot be coded with this many, before any work
    model, latents, context = _arithmetic(model, arithmetic, LATENT_BITS)
    # Each batch is sized so that its worst-case pops are covered by bits already on the
    # stack (popping from an underflowing stack would get no bits back). The initial words
    # cover one image with one particle; then the particle count grows with the stack to
    # `particles`, and after it the batch grows to `batch_size`. Sizing the initial words for
    # K particles at once would cost K times one particle's pops in every file (5 KB at K=16
    # on MNIST), bits that no image ever gets back.
    pops = pops_per_image(model)
    init = math.ceil(_worst_bits(pops, 1) / 32) + 2
    coder = constriction.stream.stack.AnsCoder(_initial_words(init))
    sizes: list[int] = []
    ramp: list[int] = []
    done = 0
    bar = tqdm(total=len(values), desc="compress", unit="img", disable=not progress)
    while done < len(values):
        k, b = _next_batch(coder.num_bits(), pops, particles, min(batch_size, len(values) - done))
        x_np = values[done : done + b]
        x = torch.from_numpy(x_np).float().to(_device(model))
        with torch.no_grad(), context():
            _coders(model, k)[0](model, latents, coder, x_np, x)
        sizes.append(b)
        ramp.append(k)
        done += b
        bar.update(b)
    bar.close()
    digest = exact_digest(model) if arithmetic != FLOAT else None
    plan = CodingPlan(
        tuple(sizes),
        LATENT_BITS,
        init,
        particles,
        arithmetic,
        digest,
        tuple(ramp) if particles > 1 else (),
    )
    return coder.get_compressed(), plan


def _worst_bits(pops: int, k: int) -> int:
    """The most bits one image's pops with `k` particles can take from the stack (the
    particles' latents, and their index when there are several)."""
    return (k * pops + (k > 1)) * PRECISION_BITS


def _next_batch(bits: int, pops: int, particles: int, most: int) -> tuple[int, int]:
    """(particles, images) of the next batch with `bits` on the stack: as many particles as
    the stack covers for one image, up to `particles`, then as many images as it covers."""
    k = particles
    while k > 1 and _worst_bits(pops, k) > bits:
        k -= 1
    return k, int(min(most, max(1, bits // _worst_bits(pops, k))))


def decode(
    model: LatentVariableModel, words: np.ndarray, plan: CodingPlan, progress: bool = False
) -> np.ndarray:
    """Invert `encode`: ANS words back to the uint8 values (N, C, H, W)."""
    model, latents, context = _arithmetic(model, plan.arithmetic, plan.latent_bits)
    if plan.arithmetic != FLOAT and plan.exact_digest is not None:
        digest = exact_digest(model)
        if digest != plan.exact_digest:
            raise CodingError(
                "this vaekit derives another exact network from the model than the one that "
                f"wrote the file (digest {plan.exact_digest[:12]}…, here {digest[:12]}…)"
            )
    shape = tuple(model.config.image_shape)
    out = np.empty((plan.n, *shape), dtype=np.uint8)
    try:
        coder = constriction.stream.stack.AnsCoder(np.ascontiguousarray(words, dtype=np.uint32))
        batches = list(zip(plan.batches(), plan.batch_particles(), strict=True))
        bar = tqdm(total=plan.n, desc="decompress", unit="img", disable=not progress)
        with torch.no_grad(), context(), bar:
            for sl, k in batches[::-1]:
                b = sl.stop - sl.start
                decoded = _coders(model, k)[1](model, latents, coder, b)
                out[sl] = decoded.astype(np.uint8).reshape(b, *shape)
                bar.update(b)
        rest = coder.get_compressed()
    except (ValueError, RuntimeError, AssertionError, OverflowError, KeyError, IndexError) as e:
        raise CodingError(f"the bitstream does not decode with this model ({e})") from e
    if not np.array_equal(rest, _initial_words(plan.init_words)):
        raise CodingError(
            "the bitstream did not decode back to its initial state: the file is corrupt or "
            "was made with another model"
        )
    return out
