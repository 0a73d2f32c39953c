"""Bit-Swap's hierarchy (Kingma, Abbeel & Ho 2019): Markov chains in both directions.

    generation  p(z_L) p(z_{L-1} | z_L) ... p(z_1 | z_2) p(x | z_1)
    inference   q(z_1 | x) q(z_2 | z_1) ... q(z_L | z_{L-1})

Each conditional is a diagonal Gaussian from a small network. Because q(z_{l+1} | z_l) does
not look at x, a bits-back coder can interleave the levels: pop z_1, push x, pop z_2, push
z_1, ... (`coding.bitsback`), so the bits a first image needs on the stack are those of one
level, not of all of them. The price is a weaker posterior than the top-down family's
(`hvae`), whose q(z_l | z_>l, x) sees x at every level and so cannot be interleaved.

Groups are listed top-down (`ModelConfig.latent_groups`), as everywhere in vaekit; the
networks are indexed bottom-up (level 0 is z_1, next to x).
"""

from __future__ import annotations

import itertools

import torch
from torch import nn
from torch.distributions import Distribution, Independent
from typing_extensions import override

from vaekit.config import ModelConfig
from vaekit.distributions import diagonal_gaussian, full_precision
from vaekit.distributions.sampling import sample_with_temperature
from vaekit.models.base import MODELS, MONTE_CARLO, Inference, LatentGroup
from vaekit.models.groups import (
    LatentHierarchy,
    draw,
    group_temperatures,
    soft_bound,
    with_sample_shape,
)
from vaekit.models.hierarchical import _mlp
from vaekit.priors import make_prior


@MODELS.register("bitswap")
class MarkovHierarchy(LatentHierarchy):
    """A Markov hierarchy over `config.latent_groups` (sizes, top group first)."""

    family = "bitswap"
    example_groups = "[8, 8, 8, 8]"

    coding_scheme = "bitswap"  # the bits-back coder interleaves its levels (Bit-Swap)

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        up = list(config.latent_groups)[::-1]  # bottom-up sizes
        w, act = config.group_width, config.activation
        self.encoder, self.decoder = self.architecture.build(
            config, up[0], self.likelihood.params_per_channel
        )
        self.q_nets = nn.ModuleList(
            [_mlp([a, w, w, 2 * b], act, 0.1) for a, b in itertools.pairwise(up)]
        )
        self.p_nets = nn.ModuleList(
            [_mlp([b, w, w, 2 * a], act, 0.1) for a, b in itertools.pairwise(up)]
        )
        self.prior = make_prior(config.prior, up[-1], config)

    @property
    def levels(self) -> int:
        """Latent levels in the chain."""
        return len(self.group_dims)

    # ---- the chain's conditionals, bottom-up level index ---------------------------------

    def chain_posterior(self, level: int, below: torch.Tensor) -> Independent:
        """q(z_{level+1} | below): `below` is x for level 0, else z_level (bottom-up index)."""
        if level == 0:
            mean, logvar = self.encoder(self.likelihood.encoder_input(below))
        else:
            mean, logvar = self.q_nets[level - 1](below).chunk(2, -1)
        return diagonal_gaussian(full_precision(mean), soft_bound(full_precision(logvar)))

    def chain_prior(self, level: int, above: torch.Tensor | None) -> Distribution:
        """p(z_{level+1} | z_{level+2}); the top level's prior takes no `above`."""
        if level == self.levels - 1:
            return self.prior.distribution(self)
        mean, logvar = self.p_nets[level](above).chunk(2, -1)
        return diagonal_gaussian(full_precision(mean), soft_bound(full_precision(logvar)))

    def _noise(self, noise: torch.Tensor | None, level: int) -> torch.Tensor | None:
        if noise is None:
            return None
        offsets = [0, *itertools.accumulate(self.group_dims)]
        top = self.levels - 1 - level  # noise is laid out top-down, like the latents
        return noise[..., offsets[top] : offsets[top + 1]]

    def _chain(self, x: torch.Tensor, batch: tuple[int, ...], noise, use_means=False):
        """Bottom-up draws from q: lists (bottom-up) of z and q."""
        zs, qs = [], []
        below = x
        for level in range(self.levels):
            q = self.chain_posterior(level, below)
            if level == 0 and len(batch) > 1:  # k samples of each example
                q = with_sample_shape(q, batch)
            z = q.mean if use_means else draw(q.mean, q.stddev, self._noise(noise, level))
            zs.append(z)
            qs.append(q)
            below = z
        return zs, qs

    def _groups(self, zs, qs) -> list[LatentGroup]:
        groups = []
        for level in reversed(range(self.levels)):
            above = zs[level + 1] if level + 1 < self.levels else None
            p = self.chain_prior(level, above)
            z, q = zs[level], qs[level]
            ratio = q.log_prob(z) - p.log_prob(z)
            groups.append(LatentGroup(z, q, p, ratio, None, MONTE_CARLO))
        return groups

    def _decoded(self, z1: torch.Tensor) -> Distribution:
        params = self.decoder(z1.reshape(-1, z1.shape[-1]))
        return self.likelihood.distribution(params.view(*z1.shape[:-1], *params.shape[1:]))

    # ---- the model interface -------------------------------------------------------------

    @override
    def infer(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> Inference:
        zs, qs = self._chain(x, (x.shape[0],), noise)
        return Inference(self._groups(zs, qs), self._decoded(zs[0]))

    @override
    def log_weights(self, x, k, noise=None, posterior_groups=None):
        if posterior_groups is not None:
            raise ValueError("a Markov hierarchy infers its levels from the bottom up only")
        zs, qs = self._chain(x, (k, x.shape[0]), noise)
        log_px_z = self._decoded(zs[0]).log_prob(x)
        log_w = log_px_z - sum(g.kl for g in self._groups(zs, qs))
        return log_w, log_px_z

    @override
    def posterior_means(self, x: torch.Tensor) -> torch.Tensor:
        zs, _ = self._chain(x, (x.shape[0],), None, use_means=True)
        return torch.cat(zs[::-1], -1)

    @override
    def decode_params(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z[..., -self.group_dims[-1] :])

    @override
    @torch.no_grad()
    def sample_latents(self, n: int, temperature: float | list[float] = 1.0) -> torch.Tensor:
        temps = group_temperatures(temperature, self.levels)
        z = sample_with_temperature(self.chain_prior(self.levels - 1, None), n, temps[0])
        out = [z]
        for level, t in zip(reversed(range(self.levels - 1)), temps[1:], strict=True):
            p = self.chain_prior(level, z)
            z = p.mean + t * p.stddev * torch.randn_like(p.mean)
            out.append(z)
        return torch.cat(out, -1)
