"""Bits-back ANS coding of images with a latent-variable model (Townsend et al. 2019, "BB-ANS").

Per batch, the encoder pops each latent group from q (top-down, getting bits back), pushes
x under p(x|z), then pushes the groups under their priors; the decoder undoes this in
reverse. The rate approaches -ELBO. The entropy coder is constriction's stack `AnsCoder`.
A Markov hierarchy (`models.markov`, whose q(z_{l+1} | z_l) does not look at x) is coded
with Bit-Swap's interleaving instead: pop z_1, push x, pop z_2, push z_1, ...; the bits an
image needs on the stack before it has pushed anything are then one level's, not all
levels'. A top-down hierarchy cannot interleave: each q(z_l | z_>l, x) needs x, which the
decoder only has after every group has been popped.

The coder asks the model only for `coding_posterior`, `coding_prior` and `decode_params`,
and asks the likelihood to push and pop pixels (`Likelihood.push/pop`): nothing here depends
on which likelihood, prior or model family it codes with. Latents live on a grid of width
2^-LATENT_BITS over [-LATENT_RANGE, LATENT_RANGE]; priors and posteriors are quantized onto
the same buckets. A prior is a diagonal Gaussian or a mixture of them (a VampPrior); a
mixture's component is itself coded by bits-back: popped from p(c | z), pushed under p(c).
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

from vaekit.coding.exact_arithmetic import ARITHMETIC, ExactArithmetic, exact_copy, exact_digest
from vaekit.distributions.likelihoods import PARAM_GRID, round_to_grid
from vaekit.distributions.mixture import DiagonalGaussianMixture
from vaekit.errors import VaekitError
from vaekit.models.base import LatentVariableModel

LATENT_BITS = 10
LATENT_RANGE = 16.0
WINDOW_SIGMAS = 8.0  # a posterior is coded on its mean +- this many standard deviations
PRECISION_BITS = 24  # constriction's probability precision: the most one pop can consume
INIT_SEED = 0x5AE
MAX_PARTICLES = 256
LIKELIHOOD_ROWS = 32  # rows per likelihood call when weighing particles (exact arithmetic)
_model = constriction.stream.model


class CodingError(VaekitError):
    """Input that this model cannot code, or a stream that does not decode."""


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
        return sum(self.sizes)

    def batch_particles(self) -> list[int]:
        """Importance samples per image of each batch, in coding order."""
        return list(self.ramp) if self.ramp else [self.particles] * len(self.sizes)

    def batches(self) -> list[slice]:
        ends = np.cumsum((0, *self.sizes)).tolist()
        return [slice(a, b) for a, b in zip(ends[:-1], ends[1:], strict=True)]


def _np(t: torch.Tensor) -> np.ndarray:
    return round_to_grid(t).cpu().numpy()


def _gaussian_params(dist: Distribution, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation times `scale`, rounded to the parameter grid."""
    if not (isinstance(dist, Independent) and isinstance(dist.base_dist, Normal)):
        raise CodingError(f"bits-back coding needs Gaussian posteriors; got {type(dist).__name__}")
    return _np(dist.base_dist.loc * scale), _np(dist.base_dist.scale * scale)


class LatentCoder:
    """Quantized latents: pops from q(z|·) and pushes under p(z|·) on one grid."""

    def __init__(self, latent_bits: int):
        self.scale = 2.0**latent_bits
        self.range = int(LATENT_RANGE * self.scale)
        self.family = _model.QuantizedGaussian(-self.range, self.range)
        self.categorical = _model.Categorical(perfect=False)
        self._windows: dict[int, object] = {}
        self._top_prior: Distribution | None = None

    exact = False

    def prior(self, model: LatentVariableModel, upper: list[torch.Tensor]) -> Distribution:
        """p(z_l | z_>l) for coding; the top group's, which no input changes, is computed
        once (a VampPrior runs its encoder on every pseudo-input to get it)."""
        if upper:
            return model.coding_prior(upper)
        if self._top_prior is None:
            self._top_prior = model.coding_prior([])
        return self._top_prior

    def symbols_to_latents(self, symbols: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(symbols.astype(np.float32) / self.scale)

    # ---- posterior: pop (bits back) and push --------------------------------------------

    def posterior_params(self, q: Distribution) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation in grid units, rounded (the scale is a power of two,
        so scaling before rounding is exact)."""
        mean, std = _gaussian_params(q, self.scale)
        return mean, np.maximum(std, 0.5 * PARAM_GRID * self.scale)

    def window(self, mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Centre (rounded mean) and half-width (a power of two, >= 8 sigma) of the symbols
        a posterior is coded over."""
        half = self.range // 2
        centre = np.clip(np.round(mean), -half, half)
        need = np.maximum(8.0, WINDOW_SIGMAS * std)
        return centre, np.minimum(2.0 ** np.ceil(np.log2(need)), half).astype(np.int64)

    def _windowed(self, mean: np.ndarray, std: np.ndarray):
        """Split latents into groups sharing a window [-w, w] around their rounded means.

        constriction's leaky quantization gives every symbol of a model's support at least
        2^-24; over the full latent range that tail mass makes a few pops land far from the
        posterior and cost hundreds of bits in p(x|z). A window of +-8 sigma, rounded up to
        a power of two so that few families are needed, makes that leak negligible.
        """
        centre, w = self.window(mean, std)
        for width in np.unique(w):
            idx = np.flatnonzero(w == width)
            if width not in self._windows:
                self._windows[width] = _model.QuantizedGaussian(-int(width), int(width))
            yield self._windows[width], idx, centre[idx]

    def pop_posterior(self, coder, q: Distribution) -> np.ndarray:
        """Decode latent symbols (B, D) from q: the bits back."""
        mean, std = self.posterior_params(q)
        shape, mean, std = mean.shape, mean.ravel(), std.ravel()
        out = np.empty(mean.size, dtype=np.int32)
        for family, idx, centre in self._windowed(mean, std):
            out[idx] = coder.decode(family, mean[idx] - centre, std[idx]) + centre.astype(np.int32)
        return out.reshape(shape)

    def push_posterior(self, coder, symbols: np.ndarray, q: Distribution) -> None:
        """Undo `pop_posterior` (windows in reverse order: the coder is a stack)."""
        mean, std = self.posterior_params(q)
        flat, mean, std = symbols.ravel(), mean.ravel(), std.ravel()
        for family, idx, centre in list(self._windowed(mean, std))[::-1]:
            u = (flat[idx] - centre.astype(np.int32)).astype(np.int32)
            coder.encode_reverse(u, family, mean[idx] - centre, std[idx])

    # ---- prior: push and pop ------------------------------------------------------------

    def _on_grid(self, loc: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return loc * self.scale, np.maximum(scale * self.scale, 0.5 * PARAM_GRID)

    def _mixture(self, p: DiagonalGaussianMixture):
        logits, loc, scale = _np(p.logits), _np(p.loc), _np(p.scale)
        weights = np.exp(logits - logits.max())
        return weights / weights.sum(), loc, scale

    def _component_posterior(self, symbols, weights, loc, scale) -> np.ndarray:
        """p(c | z) per row of symbols (B, D), from the component densities at z (float64,
        elementwise numpy: the same on both sides of the stream)."""
        z = symbols.astype(np.float64)[:, None, :] / self.scale  # (B, 1, D)
        log_n = -0.5 * ((z - loc) / scale) ** 2 - np.log(scale)  # (B, K, D)
        log_post = log_n.sum(-1) + np.log(weights)
        log_post -= log_post.max(-1, keepdims=True)
        post = np.exp(log_post)
        return post / post.sum(-1, keepdims=True)

    def _push_grid(self, coder, symbols: np.ndarray, loc: np.ndarray, scale: np.ndarray):
        """Encode symbols under N(loc, scale) (latent units, shaped like the symbols) on the
        whole grid."""
        m, s = self._on_grid(loc, scale)
        coder.encode_reverse(symbols.ravel().astype(np.int32), self.family, m.ravel(), s.ravel())

    def _pop_grid(self, coder, loc: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """Decode symbols shaped like `loc` pushed by `_push_grid`."""
        m, s = self._on_grid(loc, scale)
        return coder.decode(self.family, m.ravel(), s.ravel()).reshape(loc.shape)

    def _weight_rows(self, weights, b: int) -> np.ndarray:
        """The mixture weights as the categorical's probabilities for b rows."""
        return np.tile(weights, (b, 1))

    def push_prior(self, coder, symbols: np.ndarray, p: Distribution) -> None:
        """Encode latent symbols (B, D) under p(z|·)."""
        b = symbols.shape[0]
        if isinstance(p, DiagonalGaussianMixture):
            weights, loc, scale = self._mixture(p)
            post = self._component_posterior(symbols, weights, loc, scale)
            c = coder.decode(self.categorical, post).astype(np.int64)  # bits back for c
            self._push_grid(coder, symbols, loc[c], scale[c])
            coder.encode_reverse(
                c.astype(np.int32), self.categorical, self._weight_rows(weights, b)
            )
            return
        loc, scale = _gaussian_params(p)
        shape = symbols.shape
        self._push_grid(coder, symbols, np.broadcast_to(loc, shape), np.broadcast_to(scale, shape))

    def pop_prior(self, coder, p: Distribution, b: int, d: int) -> np.ndarray:
        """Decode latent symbols (b, d) pushed by `push_prior`."""
        if isinstance(p, DiagonalGaussianMixture):
            weights, loc, scale = self._mixture(p)
            c = coder.decode(self.categorical, self._weight_rows(weights, b)).astype(np.int64)
            symbols = self._pop_grid(coder, loc[c], scale[c])
            post = self._component_posterior(symbols, weights, loc, scale)
            coder.encode_reverse(c.astype(np.int32), self.categorical, post)
            return symbols
        loc, scale = _gaussian_params(p)
        return self._pop_grid(coder, np.broadcast_to(loc, (b, d)), np.broadcast_to(scale, (b, d)))

    # ---- importance weights --------------------------------------------------------------

    def log_ratio(self, p: Distribution, q: Distribution, z: torch.Tensor) -> torch.Tensor:
        """log p(z) - log q(z) per row (float64, CPU)."""
        return (p.log_prob(z).double() - q.log_prob(z).double()).cpu()

    def index_probabilities(self, log_w: torch.Tensor, k: int, b: int) -> np.ndarray:
        """P(j | x) of each image's particle index j, from the log weights (K*B,)."""
        lw = log_w.numpy().reshape(k, b).T  # (B, K)
        # a particle whose weight overflowed (a latent clipped at the grid's edge far from
        # q's mean) is never picked; where all did, the index is uniform
        lw = np.where(np.isfinite(lw), lw, -1e300)
        w = np.exp(lw - lw.max(1, keepdims=True))
        w[w < 1e-30] = 0.0  # constriction refuses weights far below float32's range
        # C order: constriction reads the buffer row by row whatever numpy's strides say
        return np.ascontiguousarray(w / w.sum(1, keepdims=True))


def pops_per_image(model: LatentVariableModel) -> int:
    """Pops from q and from mixture posteriors p(c|z) an image makes before it has pushed
    anything: each may consume up to `PRECISION_BITS` from the stack. All groups for a
    top-down model; one level for a Markov hierarchy, whose levels interleave (Bit-Swap)."""
    if getattr(model, "markov", False):
        return max(model.group_dims) + len(model.group_dims)
    return model.latent_dim + len(model.group_dims)


def _initial_words(count: int) -> np.ndarray:
    """Deterministic filler the first batch's posterior draws pop from; stored in the file."""
    rng = np.random.default_rng(INIT_SEED)
    return rng.integers(1, 2**32, count, dtype=np.uint64).astype(np.uint32)


def check_codable(model: LatentVariableModel, values: np.ndarray) -> None:
    """Refuse what this model cannot code, with the reason."""
    if not model.likelihood.codable:
        raise CodingError(
            f"a model with a {model.likelihood.name} likelihood has no discrete p(x|z): lossless "
            f"coding needs a binary (bernoulli) or 8-bit (logistic-mixture) model"
        )
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
    model.likelihood.push(coder, x_np, _decoded(model, latents, symbols))
    _push_priors(model, latents, coder, symbols)


def _decode_top_down(model, latents: LatentCoder, coder, b: int) -> np.ndarray:
    symbols = _pop_priors(model, latents, coder, b)
    x_np = model.likelihood.pop(coder, _decoded(model, latents, symbols))
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
        model.likelihood.push(coder, x_np, dist)
        _push_under(latents.push_prior, coder, mine, [_take(p, chosen) for p in priors])
    else:
        _push_posteriors(model, latents, coder, xr[others], theirs)
        model.likelihood.push(coder, x_np, _decoded(model, latents, mine))
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
    x_np = model.likelihood.pop(coder, _decoded(model, latents, picked))
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
    model.likelihood.push(coder, x_np, _decoded(model, latents, [sym]))
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
    x_np = model.likelihood.pop(coder, _decoded(model, latents, [sym]))
    shape = tuple(model.config.image_shape)
    x = torch.from_numpy(x_np.astype(np.uint8).reshape(b, *shape)).float().to(dev)
    latents.push_posterior(coder, sym, model.chain_posterior(0, x))
    return x_np


def _coders(model: LatentVariableModel, particles: int):
    """The (encode, decode) pair of batch functions for this model and particle count."""
    if particles > 1:
        if getattr(model, "markov", False):
            raise CodingError("importance-weighted bits-back needs a top-down model, not bitswap")
        return (
            lambda m, lat, c, x_np, x: _encode_importance_weighted(m, lat, c, x_np, x, particles),
            lambda m, lat, c, b: _decode_importance_weighted(m, lat, c, b, particles),
        )
    if getattr(model, "markov", False):
        return _encode_bitswap, _decode_bitswap
    return _encode_top_down, _decode_top_down


def _arithmetic(model: LatentVariableModel, arithmetic: str, latent_bits: int):
    """The network, latent coder and context that compute probabilities the named way."""
    model.eval()
    if arithmetic == FLOAT:
        return model, LatentCoder(latent_bits), contextlib.nullcontext
    if arithmetic == ARITHMETIC:
        from vaekit.coding.latent_search import SearchedLatentCoder

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
