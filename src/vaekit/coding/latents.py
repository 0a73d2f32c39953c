"""Latents on the coding grid: pops from q(z|x) (the bits back) and pushes under p(z).

Latents live on a grid of width 2^-LATENT_BITS over [-LATENT_RANGE, LATENT_RANGE]; priors
and posteriors are quantized onto the same buckets. A posterior is coded over a window of
its mean +- WINDOW_SIGMAS standard deviations. A prior is a diagonal Gaussian or a mixture
of them (a VampPrior), whose component is itself coded by bits-back: popped from p(c | z),
pushed under p(c). `LatentCoder` takes its probabilities from constriction's quantized
Gaussian (float formats); `latent_search.SearchedLatentCoder` computes them exactly.
"""

from __future__ import annotations

import constriction
import numpy as np
import torch
from torch.distributions import Distribution, Independent, Normal

from vaekit.distributions.likelihoods import PARAM_GRID, round_to_grid
from vaekit.distributions.mixture import DiagonalGaussianMixture
from vaekit.errors import CodingError
from vaekit.models.base import LatentVariableModel

LATENT_BITS = 10
LATENT_RANGE = 16.0
WINDOW_SIGMAS = 8.0  # a posterior is coded on its mean +- this many standard deviations
_model = constriction.stream.model


def on_grid(t: torch.Tensor) -> np.ndarray:
    """`t` rounded onto the parameter grid, as numpy."""
    return round_to_grid(t).cpu().numpy()


def gaussian_params(dist: Distribution, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation times `scale`, rounded to the parameter grid."""
    if not (isinstance(dist, Independent) and isinstance(dist.base_dist, Normal)):
        raise CodingError(f"bits-back coding needs Gaussian posteriors; got {type(dist).__name__}")
    return on_grid(dist.base_dist.loc * scale), on_grid(dist.base_dist.scale * scale)


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
        """Latent values (float32) of integer grid symbols."""
        return torch.from_numpy(symbols.astype(np.float32) / self.scale)

    # ---- posterior: pop (bits back) and push --------------------------------------------

    def posterior_params(self, q: Distribution) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation in grid units, rounded (the scale is a power of two,
        so scaling before rounding is exact)."""
        mean, std = gaussian_params(q, self.scale)
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
        logits, loc, scale = on_grid(p.logits), on_grid(p.loc), on_grid(p.scale)
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
        loc, scale = gaussian_params(p)
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
        loc, scale = gaussian_params(p)
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
