"""Decoder likelihoods p(x|z): Bernoulli, discretized logistic mixture, Gaussian.

Each `Likelihood` module knows how many parameter channels the decoder must output per
image channel, builds a `torch.distributions.Distribution` over whole images from them
(`log_prob` sums over pixels, in nats), maps data values to encoder inputs, and gives the
coder its p(x|z) (`coding_distribution`), which the coder never re-derives. A new
likelihood is one class here plus its registration; a codable one adds its pixel coder in
`vaekit.coding.pixels`.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Bernoulli, Distribution, Independent, Normal, constraints
from typing_extensions import override

from vaekit.registry import Registry

LIKELIHOODS: Registry[type[Likelihood]] = Registry("likelihood")

# Network outputs are rounded onto this grid before they become coding probabilities, so
# that float noise in their last bits cannot change a table between encoder and decoder.
PARAM_GRID = 2.0**-16


def full_precision(params: torch.Tensor) -> torch.Tensor:
    """Decoder outputs made under bf16/fp16 autocast, in float32: a log-likelihood summed
    over hundreds of pixels would otherwise keep only ~3 significant digits."""
    if params.dtype in (torch.bfloat16, torch.float16):
        return params.float()
    return params


def round_to_grid(t: torch.Tensor) -> torch.Tensor:
    """`t` in float64 on the CPU, rounded to multiples of `PARAM_GRID` (the coder's
    parameters): whatever device ran the network, the coder's arithmetic runs on the CPU."""
    return torch.round(t.detach().cpu().double() / PARAM_GRID) * PARAM_GRID


class BernoulliImage(Independent):
    """Independent Bernoulli pixels with logits l over the last `ndims` dimensions:
    log p(x) = sum over pixels of x*l - softplus(l).

    When images x (B, ...) are scored under K decoded samples (K, B, ...), as importance
    sampling does, the x*l sum runs as one contraction without K broadcast copies of x:
    1.8x faster than the element-wise cross-entropy here. Same-shape inputs (training) keep
    the cross-entropy kernel, which is faster with gradients.
    """

    def __init__(self, logits: torch.Tensor, ndims: int):
        super().__init__(Bernoulli(logits=logits, validate_args=False), ndims, validate_args=False)

    @override
    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        logits = self.base_dist.logits
        if value.shape == logits.shape:
            return super().log_prob(value)
        n = self.reinterpreted_batch_ndims
        flat_l, flat_v = logits.flatten(-n), value.flatten(-n).to(logits.dtype)
        return torch.einsum("...p,...p->...", flat_l, flat_v) - F.softplus(flat_l).sum(-1)


def level_edge(level: torch.Tensor | float) -> torch.Tensor | float:
    """The lower edge of integer level `level` (0..256) on the [-1, 1] scale of x/127.5 - 1."""
    return (level - 0.5) / 127.5 - 1.0


class DiscretizedLogisticMixture(Distribution):
    """Mixture of logistics discretized to the 256 integer levels 0..255 (PixelCNN++ style).

    Parameters hold the K components on axis `mix_dim` (default: last): mixture logits,
    means and log-scales, with means on the [-1, 1] scale of x/127.5 - 1. The edge bins
    absorb the tails, so the 256 probabilities sum to one and bits/dim are exact discrete
    likelihoods. `log_prob` and the coder's `cdf_below` standardize bin edges through the
    same `_standardized`. The likelihood keeps the components before the pixel axes
    (mix_dim=-4), where the decoder's output puts them: every element-wise op then runs on
    contiguous memory instead of a transposed view.
    """

    arg_constraints: dict = {}
    support = constraints.integer_interval(0, 255)
    has_rsample = False

    def __init__(
        self,
        logits: torch.Tensor,
        means: torch.Tensor,
        log_scales: torch.Tensor,
        mix_dim: int = -1,
    ):
        self.logits, self.means, self.log_scales = logits, means, log_scales
        self.mix_dim = mix_dim
        shape = list(means.shape)
        del shape[mix_dim]
        super().__init__(batch_shape=torch.Size(shape), validate_args=False)

    @functools.cached_property
    def _inv_scale_and_offset(self) -> tuple[torch.Tensor, torch.Tensor]:
        inv_s = torch.exp(-self.log_scales)
        return inv_s, -self.means * inv_s

    @functools.cached_property
    def _weights(self) -> torch.Tensor:
        return torch.softmax(self.logits, self.mix_dim)

    def _standardized(self, edge: torch.Tensor) -> torch.Tensor:
        """(edge - mean) / scale per component, for bin edges shaped like the pixels (the
        coder asks for eight edges per pixel: scale and offset are computed once)."""
        inv_s, offset = self._inv_scale_and_offset
        return torch.addcmul(offset, edge.unsqueeze(self.mix_dim), inv_s)

    @override
    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        # upper = (x + 1/255 - mean) / s and lower = upper - (2/255) / s for x = v/127.5 - 1
        upper = self._standardized(level_edge(value + 1.0))
        width = self._inv_scale_and_offset[0] * (1.0 / 127.5)
        lower = upper - width
        # log(sigmoid(a) - sigmoid(b)) = logsigmoid(a) + logsigmoid(-b) + log(1 - e^(b-a)),
        # exact and stable for any a > b; the edge bins keep only their open side.
        log_upper = F.logsigmoid(upper)
        log_one_minus_lower = F.logsigmoid(-lower)
        log_mid = log_upper + log_one_minus_lower + torch.log(-torch.expm1(-width))
        v = value.unsqueeze(self.mix_dim)
        log_bin = torch.where(
            v <= 0, log_upper, torch.where(v >= 255, log_one_minus_lower, log_mid)
        )
        log_w = F.log_softmax(self.logits, self.mix_dim)
        return torch.logsumexp(log_bin + log_w, dim=self.mix_dim)

    def cdf_below(self, level: torch.Tensor) -> torch.Tensor:
        """P(x < level) per pixel for integer levels 1..255 (batch-shaped tensor)."""
        cdf = torch.sigmoid(self._standardized(level_edge(level)))
        return (self._weights * cdf).sum(self.mix_dim)

    def bin_probs(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Probabilities of all 256 levels per pixel, shape (..., 256), from CDF differences."""
        d = DiscretizedLogisticMixture(
            self.logits.to(dtype), self.means.to(dtype), self.log_scales.to(dtype), self.mix_dim
        )
        levels = torch.arange(1, 256, dtype=dtype, device=self.means.device)
        cdf = torch.stack([d.cdf_below(lv.expand(self.batch_shape)) for lv in levels], -1)
        zeros = torch.zeros_like(cdf[..., :1])
        cdf = torch.cat([zeros, cdf, torch.ones_like(zeros)], dim=-1)
        return (cdf[..., 1:] - cdf[..., :-1]).clamp_min(0.0)

    @override
    @property
    def mean(self) -> torch.Tensor:
        w = torch.softmax(self.logits, self.mix_dim)
        return ((w * self.means).sum(self.mix_dim).clamp(-1, 1) + 1.0) * 127.5

    @override
    def sample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        with torch.no_grad():
            logits, means, log_scales = (
                t.movedim(self.mix_dim, -1) for t in (self.logits, self.means, self.log_scales)
            )
            shape = torch.Size(sample_shape) + means.shape
            comp = torch.distributions.Categorical(logits=logits).sample(sample_shape)
            pick = F.one_hot(comp, means.shape[-1]).to(means.dtype)
            m = (means.expand(shape) * pick).sum(-1)
            ls = (log_scales.expand(shape) * pick).sum(-1)
            u = torch.rand_like(m).clamp(1e-5, 1 - 1e-5)
            x = m + torch.exp(ls) * (torch.log(u) - torch.log1p(-u))
            return torch.round((x.clamp(-1, 1) + 1.0) * 127.5)


class Likelihood(nn.Module):
    """Maps decoder outputs (..., params_per_channel * C, H, W) to a distribution over images
    with batch shape (...). Where its values are discrete, `coding_distribution` is p(x|z)
    for the coder (whose pixel coders, in `vaekit.coding.pixels`, are registered by name)."""

    name: str = ""
    params_per_channel: int = 1

    @classmethod
    def build(cls, n_mix: int = 5) -> Likelihood:
        """An instance from the model config's likelihood settings."""
        return cls()

    def encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        """Scale data values to the range the encoder is fed."""
        return x

    def distribution(self, params: torch.Tensor) -> Distribution:  # pragma: no cover
        """p(x|z) over whole images from decoder outputs `params`."""
        raise NotImplementedError

    def initial_params(self, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor | None:
        """Decoder outputs (P*C, H, W) that fit the data's per-pixel mean and std of values
        (each (C, H, W)) when z is ignored: a starting point for the output layer's bias.
        None where there is no simple closed form."""
        return None

    def display(self, dist: Distribution) -> torch.Tensor:
        """Images in [0, 1] that show a decoded distribution (its mean)."""
        return dist.mean.clamp(0, 1)

    # ---- entropy coding ------------------------------------------------------------------

    def coding_distribution(self, params: torch.Tensor) -> Distribution:
        """The distribution the coder uses: parameters in float64 on the `PARAM_GRID`."""
        raise NotImplementedError(f"the {self.name} likelihood has no discrete values to code")


@LIKELIHOODS.register("bernoulli")
class BernoulliLikelihood(Likelihood):
    """Independent Bernoulli pixels, for binarized images; x in {0, 1}."""

    name = "bernoulli"

    @override
    def distribution(self, params: torch.Tensor) -> Distribution:
        return BernoulliImage(full_precision(params), 3)

    @override
    def initial_params(self, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        p = mean.clamp(1e-3, 1 - 1e-3)
        return torch.log(p) - torch.log1p(-p)

    @override
    def coding_distribution(self, params: torch.Tensor) -> Distribution:
        return BernoulliImage(round_to_grid(params), 3)


@LIKELIHOODS.register("logistic-mixture")
class LogisticMixtureLikelihood(Likelihood):
    """Discretized logistic mixture per pixel, for 8-bit images; x in {0, ..., 255}."""

    name = "logistic-mixture"

    @override
    @classmethod
    def build(cls, n_mix: int = 5) -> Likelihood:
        return cls(n_mix)

    def __init__(self, n_mix: int = 5, min_log_scale: float = -7.0):
        super().__init__()
        self.n_mix, self.min_log_scale = n_mix, min_log_scale
        self.params_per_channel = 3 * n_mix

    @override
    def encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        return x / 255.0

    def _parts(self, params: torch.Tensor):
        """logits, means, log-scales, each (..., K, C, H, W): the decoder's own layout."""
        *lead, _, h, w = params.shape
        logits, means, log_scales = params.view(*lead, 3, self.n_mix, -1, h, w).unbind(-5)
        return logits, torch.tanh(means), log_scales.clamp_min(self.min_log_scale)

    @override
    def distribution(self, params: torch.Tensor) -> Distribution:
        parts = self._parts(full_precision(params))
        return Independent(DiscretizedLogisticMixture(*parts, mix_dim=-4), 3)

    @override
    def display(self, dist: Distribution) -> torch.Tensor:
        return dist.mean / 255.0

    @override
    def coding_distribution(self, params: torch.Tensor) -> Distribution:
        # components last, as the coder has always summed them: its arithmetic, and so every
        # file's bits, stay what they were
        parts = [
            round_to_grid(t).movedim(-4, -1).contiguous()
            for t in self._parts(full_precision(params.detach()))
        ]
        return Independent(DiscretizedLogisticMixture(*parts), 3)


@LIKELIHOODS.register("gaussian")
class GaussianLikelihood(Likelihood):
    """Gaussian per pixel with learned mean and variance, for continuous values in [0, 1]."""

    name = "gaussian"
    params_per_channel = 2

    def __init__(self, min_log_scale: float = math.log(1.0 / 512.0)):
        super().__init__()
        self.min_log_scale = min_log_scale

    @override
    def distribution(self, params: torch.Tensor) -> Distribution:
        mean, log_scale = full_precision(params).chunk(2, dim=-3)
        scale = torch.exp(log_scale.clamp_min(self.min_log_scale))
        return Independent(Normal(mean, scale, validate_args=False), 3)

    @override
    def initial_params(self, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        return torch.cat([mean, torch.log(std.clamp_min(math.exp(self.min_log_scale)))])


def make_likelihood(name: str, n_mix: int = 5) -> Likelihood:
    """Build a registered likelihood by name (`n_mix` is for mixtures)."""
    return LIKELIHOODS.get(name).build(n_mix=n_mix)
