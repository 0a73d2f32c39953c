"""A colour likelihood: a discretized logistic mixture with the channels coupled, as in
PixelCNN++ (Salimans et al. 2017) and the hierarchical VAEs of NVAE and VDVAE.

Per pixel, K components shared by the three channels. Within component k, on the [-1, 1]
scale of x/127.5 - 1:

    r ~ L(mu_r, s_r),   g ~ L(mu_g + alpha r, s_g),   b ~ L(mu_b + beta r + gamma g, s_b),

each logistic discretized to the 256 levels (the edge bins take the tails), and
p(x) = sum_k pi_k p_k(r) p_k(g | r) p_k(b | r, g). Coding takes the channels in order: r under
the mixture with weights pi, g under the weights pi_k p_k(r) renormalized, b under
pi_k p_k(r) p_k(g | r): each a one-channel `DiscretizedLogisticMixture`, so the coder's
interval search and exact arithmetic carry over unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.distributions import Distribution, Independent, constraints
from typing_extensions import override

from vaekit.distributions.likelihoods import (
    LIKELIHOODS,
    DiscretizedLogisticMixture,
    LogisticMixtureLikelihood,
    full_precision,
    level_edge,
    round_to_grid,
)


def log_bin(x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor) -> torch.Tensor:
    """log P(level x) under discretized logistics L(means, exp(log_scales)) on 0..255 (the
    edge bins take the tails); `x` integer levels broadcast against the parameters."""
    inv_s = torch.exp(-log_scales)
    upper = (level_edge(x + 1.0) - means) * inv_s
    width = inv_s * (1.0 / 127.5)
    lower = upper - width
    log_upper = F.logsigmoid(upper)
    log_one_minus_lower = F.logsigmoid(-lower)
    log_mid = log_upper + log_one_minus_lower + torch.log(-torch.expm1(-width))
    return torch.where(x <= 0, log_upper, torch.where(x >= 255, log_one_minus_lower, log_mid))


def _scaled(levels: torch.Tensor) -> torch.Tensor:
    """Integer levels on the [-1, 1] scale the means live on."""
    return levels / 127.5 - 1.0


class CoupledLogisticMixture(Distribution):
    """Colour pixels (..., 3, H, W) under a mixture whose components couple the channels.

    `logits` (..., K, H, W); `means`, `log_scales` (..., K, 3, H, W); `coeffs`
    (..., K, 3, H, W), tanh-bounded: alpha, beta, gamma in channels 0, 1, 2. The batch shape
    is (..., H, W); an image's log-probability sums over its pixels (`Independent`)."""

    arg_constraints: dict = {}
    support = constraints.integer_interval(0, 255)
    has_rsample = False

    def __init__(self, logits, means, log_scales, coeffs):
        self.logits, self.means, self.log_scales, self.coeffs = logits, means, log_scales, coeffs
        super().__init__(batch_shape=logits.shape[:-3] + logits.shape[-2:], validate_args=False)

    def channel_means(self, x: torch.Tensor) -> torch.Tensor:
        """Each component's means of r, g, b given the pixel's own earlier channels, with x
        (..., 3, H, W) integer levels: (..., K, 3, H, W)."""
        v = _scaled(x.to(self.means.dtype)).unsqueeze(-4)  # (..., 1, 3, H, W)
        r, g = v[..., 0, :, :], v[..., 1, :, :]
        a, b, c = self.coeffs.unbind(-3)
        m_r, m_g, m_b = self.means.unbind(-3)
        return torch.stack(torch.broadcast_tensors(m_r, m_g + a * r, m_b + b * r + c * g), -3)

    def component_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """log p_k(c-th channel | earlier channels) per component and channel: (..., K, 3, H, W)."""
        return log_bin(x.unsqueeze(-4), self.channel_means(x), self.log_scales)

    @override
    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        per_channel = self.component_log_probs(value)
        log_w = F.log_softmax(self.logits, -3)
        return torch.logsumexp(log_w + per_channel.sum(-3), dim=-3)

    def channel(self, c: int, x: torch.Tensor) -> DiscretizedLogisticMixture:
        """Channel c's mixture given the pixel's channels before it (x's later channels are
        ignored): components weighted by their probability of those channels."""
        log_w = F.log_softmax(self.logits, -3)
        if c:
            lp = self.component_log_probs(x)  # (..., K, 3, H, W)
            log_w = log_w + lp[..., :c, :, :].sum(-3)
        means = self.channel_means(x)[..., c, :, :]
        return DiscretizedLogisticMixture(log_w, means, self.log_scales[..., c, :, :], mix_dim=-3)

    @override
    @property
    def mean(self) -> torch.Tensor:
        """Levels 0..255 (..., 3, H, W): each channel's mean given the earlier channels' means."""
        w = torch.softmax(self.logits, -3).unsqueeze(-3)  # (..., K, 1, H, W)
        out = torch.zeros(
            self.means.shape[:-4] + self.means.shape[-3:],
            dtype=self.means.dtype,
            device=self.means.device,
        )
        for c in range(3):
            m = (w * self.channel_means(out)).sum(-4)[..., c, :, :]
            out[..., c, :, :] = (m.clamp(-1, 1) + 1.0) * 127.5
        return out

    @override
    def sample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        with torch.no_grad():
            shape = torch.Size(sample_shape)
            comp = torch.distributions.Categorical(logits=self.logits.movedim(-3, -1)).sample(shape)
            pick = F.one_hot(comp, self.logits.shape[-3]).movedim(-1, -3).unsqueeze(-3)
            pick = pick.to(self.means.dtype)  # (*shape, ..., K, 1, H, W)
            x = torch.zeros(
                shape + self.means.shape[:-4] + self.means.shape[-3:],
                dtype=self.means.dtype,
                device=self.means.device,
            )
            log_s = (self.log_scales * pick).sum(-4)
            for c in range(3):
                m = (self.channel_means(x) * pick).sum(-4)[..., c, :, :]
                u = torch.rand_like(m).clamp(1e-5, 1 - 1e-5)
                v = m + torch.exp(log_s[..., c, :, :]) * (torch.log(u) - torch.log1p(-u))
                x[..., c, :, :] = torch.round((v.clamp(-1, 1) + 1.0) * 127.5)
            return x


@LIKELIHOODS.register("colour-logistic-mixture")
class ColourLogisticMixtureLikelihood(LogisticMixtureLikelihood):
    """8-bit colour images (3 channels) under `CoupledLogisticMixture`; x in {0, ..., 255}.

    The decoder gives 4K parameters per channel, (4, K, 3, H, W): mixture logits (channel
    0's; the other two channels' are unused), means, log-scales, coupling coefficients.
    Everything else (inputs scaled to [0, 1], the mean shown) is the one-channel mixture's."""

    name = "colour-logistic-mixture"

    def __init__(self, n_mix: int = 5, min_log_scale: float = -7.0):
        super().__init__(n_mix, min_log_scale)
        self.params_per_channel = 4 * n_mix

    @override
    def _parts(self, params: torch.Tensor):
        *lead, ch, h, w = params.shape
        if ch != 3 * self.params_per_channel:
            raise ValueError(
                f"the colour likelihood needs 3 channels; got {ch // self.params_per_channel}"
            )
        logits, means, log_scales, coeffs = params.view(*lead, 4, self.n_mix, 3, h, w).unbind(-5)
        return (
            logits[..., 0, :, :],
            torch.tanh(means),
            log_scales.clamp_min(self.min_log_scale),
            torch.tanh(coeffs),
        )

    @override
    def distribution(self, params: torch.Tensor) -> Distribution:
        return Independent(CoupledLogisticMixture(*self._parts(full_precision(params))), 2)

    @override
    def coding_distribution(self, params: torch.Tensor) -> Distribution:
        parts = [
            round_to_grid(t).contiguous() for t in self._parts(full_precision(params.detach()))
        ]
        return Independent(CoupledLogisticMixture(*parts), 2)
