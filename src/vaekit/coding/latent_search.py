"""Latents coded as binary decisions down a search of their window, for exact coding.

`latents.LatentCoder` hands (mean, std) to constriction's quantized Gaussian, which
evaluates the normal CDF with the platform's math library. `SearchedLatentCoder` computes
every probability itself with `exact_arithmetic` (the same bits on any machine) and codes
a latent symbol in [lo, hi) as the decisions of a binary search, each with the exact
conditional probability P(symbol >= mid | lo <= symbol < hi): their product is the symbol's
probability under the Gaussian restricted to the window. Grid, windows and rates are the
same as `LatentCoder`'s; only where probabilities come from differs.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.distributions import Distribution
from typing_extensions import override

from vaekit.coding import exact_arithmetic as ex
from vaekit.coding import interval
from vaekit.coding.interval import IntervalSearch
from vaekit.coding.latents import WINDOW_SIGMAS, LatentCoder, gaussian_params, on_grid
from vaekit.distributions.likelihoods import PARAM_GRID
from vaekit.distributions.mixture import DiagonalGaussianMixture
from vaekit.errors import CodingError


def _gaussian_search(lo, hi, mean: torch.Tensor, std: torch.Tensor) -> IntervalSearch:
    """The interval search over integer symbols [lo, hi) under N(mean, std) (grid units):
    P(symbol < k) is the mass below the bucket [k - 1/2, k + 1/2) of symbol k."""
    if not bool(torch.isfinite(mean).all() & torch.isfinite(std).all()):
        raise CodingError("the model gave a non-finite latent mean or scale")
    mean, inv_std = mean.double(), 1.0 / std.double()
    return IntervalSearch(
        lo, hi, lambda k: ex.finite_normal_cdf((k.double() - 0.5 - mean) * inv_std)
    )


def _numpy(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.cpu().numpy())


@ex.raw
def pop_symbols(coder, lo, hi, mean, std) -> np.ndarray:
    """Decode one symbol per element from [lo, hi) under N(mean, std) (flat tensors)."""
    return interval.pop_symbols(coder, _gaussian_search(lo, hi, mean, std))


@ex.raw
def push_symbols(coder, symbols: np.ndarray, lo, hi, mean, std) -> None:
    """Encode `symbols` so that `pop_symbols` with the same arguments decodes them."""
    s = torch.from_numpy(symbols.astype(np.int64))
    interval.push_symbols(coder, s, _gaussian_search(lo, hi, mean, std))


class SearchedLatentCoder(LatentCoder):
    """`LatentCoder` with probabilities from exact arithmetic: call inside `ExactArithmetic`."""

    exact = True

    def _posterior_window(self, q: Distribution):
        mean, std = gaussian_params(q, self.scale)
        mean = torch.from_numpy(mean).reshape(-1)
        std = torch.from_numpy(np.maximum(std, 0.5 * PARAM_GRID * self.scale)).reshape(-1)
        # the half-width: the power of two at or above max(8, 8 sigma), found exactly
        need = (std * WINDOW_SIGMAS).clamp_min(8.0)
        m, e = torch.frexp(need)
        e = torch.where(m == 0.5, e - 1, e).long()
        w = torch.minimum(torch.ones_like(e) << e.clamp(0, 62), torch.tensor(self.range // 2))
        # the window stays on the grid but reaches its ends: a posterior whose mean lies
        # beyond +-range/2 (latents of +-8 and more occur) is still coded around its mean
        # (`LatentCoder` clamps the centre to +-range/2: such latents cost it many bits)
        centre = torch.round(mean).long()
        centre = torch.maximum(torch.minimum(centre, self.range - w), w - self.range)
        return centre - w, centre + w + 1, mean, std

    @override
    def pop_posterior(self, coder, q: Distribution) -> np.ndarray:
        shape = q.base_dist.loc.shape
        return pop_symbols(coder, *self._posterior_window(q)).reshape(shape)

    @override
    def push_posterior(self, coder, symbols: np.ndarray, q: Distribution) -> None:
        push_symbols(coder, symbols.ravel(), *self._posterior_window(q))

    def _full_range(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.full((n,), -self.range), torch.full((n,), self.range + 1)

    def _grid_params(self, loc, scale) -> tuple[torch.Tensor, torch.Tensor]:
        m, s = self._on_grid(loc, scale)
        flat = (torch.from_numpy(np.ascontiguousarray(v)).reshape(-1) for v in (m, s))
        return tuple(flat)

    def _push_grid(self, coder, symbols, loc, scale) -> None:
        m, s = self._grid_params(loc, scale)
        push_symbols(coder, symbols.ravel(), *self._full_range(symbols.size), m, s)

    def _pop_grid(self, coder, loc, scale) -> np.ndarray:
        m, s = self._grid_params(loc, scale)
        return pop_symbols(coder, *self._full_range(m.numel()), m, s).reshape(loc.shape)

    def _weight_rows(self, weights, b: int) -> np.ndarray:
        return _numpy(weights.expand(b, -1))

    def _mixture(self, p: DiagonalGaussianMixture):
        weights = ex.softmax(torch.from_numpy(on_grid(p.logits)), -1)
        return weights, on_grid(p.loc), on_grid(p.scale)

    def _component_posterior(self, symbols, weights, loc, scale) -> np.ndarray:
        z = torch.from_numpy(symbols.astype(np.float64))[:, None, :] / self.scale
        log_n = ex.gaussian_log_density(z, torch.from_numpy(loc), torch.from_numpy(scale))
        log_post = ex.exact_sum(log_n, -1) + ex.log(weights)
        return _numpy(ex.softmax(log_post, -1))

    def log_ratio(self, p: Distribution, q: Distribution, z: torch.Tensor) -> torch.Tensor:
        """log p(z) - log q(z) per row, exactly computed (float64, CPU)."""
        return (_log_density(p, z) - _log_density(q, z)).cpu()

    @override
    def index_probabilities(self, log_w: torch.Tensor, k: int, b: int) -> np.ndarray:
        lw = log_w.reshape(k, b).T
        lw = torch.where(torch.isfinite(lw), lw, -1e300)
        w = ex.exp(lw - lw.amax(1, keepdim=True))
        w = torch.where(w < 1e-30, 0.0, w)
        return _numpy(w / ex.exact_sum(w, 1, keepdim=True))


def _log_density(dist: Distribution, z: torch.Tensor) -> torch.Tensor:
    if isinstance(dist, DiagonalGaussianMixture):
        log_n = ex.gaussian_log_density(z.double()[..., None, :], dist.loc, dist.scale)
        return ex.log_sum_exp(ex.exact_sum(log_n, -1) + ex.log_softmax(dist.logits, -1), -1)
    base = dist.base_dist
    return ex.exact_sum(ex.gaussian_log_density(z, base.loc, base.scale), -1)
