"""A top-down hierarchical VAE (Ladder VAE / NVAE / VDVAE family).

Inference: one bottom-up deterministic pass turns x into features u_1..u_L (bottom to top).
Generation and inference then share one top-down path over the groups z_L ... z_1:

    h <- h0 (learned)
    for each group l, top first:
        p(z_l | z_>l)    = N(mu_p(h), sigma_p(h))          (the top group: the configured prior)
        q(z_l | z_>l, x) = N(mu_p + dmu(h, u_l), sigma_p * exp(dlog(h, u_l) / 2))
        h <- h + A_l z_l + f_l(h, z_l)                        (a residual update)
    p(x | z) = decoder(z_L, ..., z_1)

q is parametrized relative to p, as in NVAE (Vahdat & Kautz 2020): at initialisation q is
close to p and every group's KL starts near zero, and a group whose posterior stays on its
prior costs nothing. The architecture's registered encoder is the bottom-up feature network
(its two heads together give the features) and its decoder maps the concatenated groups to
p(x|z), so `arch=mlp` gives the CPU model and `arch=conv` the convolutional one.

Groups are listed top-down (`ModelConfig.latent_groups`), like the interface's `groups`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Distribution, Independent
from typing_extensions import override

from vaekit.config import ModelConfig
from vaekit.distributions import diagonal_gaussian, full_precision
from vaekit.distributions.gaussian import LOGVAR_MAX, LOGVAR_MIN
from vaekit.distributions.sampling import sample_with_temperature
from vaekit.models.base import MODELS, Inference, LatentGroup, group_kl
from vaekit.models.groups import (
    LatentHierarchy,
    draw,
    group_temperatures,
    soft_bound,
)
from vaekit.nets.mlp import activation_class, mlp
from vaekit.priors import make_prior


def _mlp(sizes: list[int], activation: str, last_scale: float = 1.0) -> nn.Sequential:
    """A residual branch's MLP: activations between layers, He init, a scaled last layer."""
    return mlp(sizes, activation, final_activation=False, he_init=True, last_scale=last_scale)


@dataclass
class _Pass:
    """A top-down pass: the groups visited (the decoder reads them, not the final state)."""

    groups: list[LatentGroup]

    @property
    def z(self) -> torch.Tensor:
        return torch.cat([g.z for g in self.groups], -1)


@MODELS.register("hvae")
class HierarchicalVAE(LatentHierarchy):
    """Top-down hierarchical VAE over `config.latent_groups` (sizes, top group first)."""

    family = "hvae"

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        w, act, dims = config.group_width, config.activation, list(config.latent_groups)
        self.encoder, _ = self.architecture.build(config, w // 2, 1)
        # p(x | z) reads every group directly, as a one-layer VAE's decoder reads its z; the
        # top-down state carries the groups' dependence on each other (their priors and
        # posteriors). Fed the state alone, the decoder saw latents only through the stack of
        # update networks, and learned several-fold slower in short runs.
        _, self.decoder = self.architecture.build(
            config, sum(dims), self.likelihood.params_per_channel
        )
        n = len(dims)
        # Bottom-up features per group, index 0 = top group: the bottom group reads the
        # encoder's 2W outputs, each group above reads the features of the one below.
        f = 2 * (w // 2)
        self.up = nn.ModuleList(
            [
                nn.Sequential(activation_class(act)(), nn.Linear(f, f))
                if i < n - 1
                else nn.Identity()
                for i in range(n)
            ]
        )
        # Features normalised per example before they reach a posterior: a convolutional
        # encoder's raw features are large enough at initialisation that q's offsets from p,
        # and so the KL, blew up to 1e9 nats within ten steps.
        self.feature_norms = nn.ModuleList(
            [nn.LayerNorm(f) if config.feature_norm else nn.Identity() for _ in range(n)]
        )
        self.h0 = nn.Parameter(torch.zeros(w))
        self.posterior_nets = nn.ModuleList(
            # One linear map each: a two-layer posterior on top of the encoder learned
            # markedly slower in short runs (-163 against -143 nats after 400 steps).
            [_mlp([w + 2 * (w // 2), 2 * d], act, 0.1 if i else 1.0) for i, d in enumerate(dims)]
        )
        self.prior_nets = nn.ModuleList(
            [None if i == 0 else _mlp([w, w, 2 * d], act, 0.1) for i, d in enumerate(dims)]
        )
        self.update_nets = nn.ModuleList([_mlp([w + d, w, w], act) for d in dims])
        # z also enters the state through a linear map at unit gain, so that the groups
        # below see it undimmed by the update network's layers.
        self.z_maps = nn.ModuleList([nn.Linear(d, w, bias=False) for d in dims])
        for lin, d in zip(self.z_maps, dims, strict=True):
            nn.init.normal_(lin.weight, std=d**-0.5)
        self.prior = make_prior(config.prior, dims[0], config)

    # ---- the two passes ------------------------------------------------------------------

    def bottom_up(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features u_l for each group (top first), each (B, W)."""
        return self._features(self.likelihood.encoder_input(x))

    def _features(self, u: torch.Tensor) -> list[torch.Tensor]:
        a, b = self.encoder(u)
        u = torch.cat([a, b], -1)
        feats = []
        for net, norm in zip(reversed(self.up), reversed(self.feature_norms), strict=True):
            u = net(u)
            feats.append(norm(u))
        return feats[::-1]

    def posterior_of_inputs(self, u: torch.Tensor) -> Independent:
        """q(z_top | ·) for inputs already in the encoder's space: the components of a
        VampPrior on the top group (Tomczak & Welling 2018 use it on a two-level model)."""
        h = self._start((u.shape[0],))
        return self._posterior(0, h, self._features(u)[0], None)

    def _prior(self, i: int, h: torch.Tensor) -> tuple[Distribution, bool]:
        """p(z_i | z_<i in top-down order) and whether its KL is analytic per dimension."""
        if i == 0:
            p = self.prior.distribution(self)
            return p, self.prior.analytic_kl
        mean, logvar = full_precision(self.prior_nets[i](h)).chunk(2, -1)
        return diagonal_gaussian(mean, soft_bound(logvar)), True

    def _posterior(
        self, i: int, h: torch.Tensor, u: torch.Tensor, p: Distribution | None
    ) -> Independent:
        hu = torch.cat([h, u], -1)
        dmean, dlogvar = full_precision(self.posterior_nets[i](hu)).chunk(2, -1)
        if i == 0:  # the configured prior may be a mixture: q is parametrized directly
            return diagonal_gaussian(dmean, dlogvar.clamp(LOGVAR_MIN, LOGVAR_MAX))
        mean = p.base_dist.loc + dmean
        logvar = 2 * p.base_dist.scale.log() + soft_bound(dlogvar)
        return diagonal_gaussian(mean, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX))

    def _update(self, i: int, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        z = z.to(h.dtype)
        return h + self.z_maps[i](z) + self.update_nets[i](torch.cat([h, z], -1))

    def _start(self, shape: tuple[int, ...]) -> torch.Tensor:
        return self.h0.expand(*shape, self.h0.shape[0])

    def top_down(
        self,
        feats: list[torch.Tensor] | None,
        batch_shape: tuple[int, ...],
        noise: torch.Tensor | None = None,
        given: list[torch.Tensor] | None = None,
        posterior_groups: int | None = None,
        temperature: list[float] | None = None,
        use_means: bool = False,
        depth: int | None = None,
        with_kl: bool = True,
    ) -> _Pass:
        """Visit the groups top-down. Each group's z is `given[i]` where given, else drawn
        from q (the first `posterior_groups` groups; all when None and `feats` is known) or
        from p (at `temperature[i]`); `use_means` takes the mean instead of a draw. With
        `depth`, only the top `depth` groups are visited; `with_kl=False` leaves every KL at
        zero (the coder needs the distributions only, and a Monte-Carlo KL against a
        mixture prior is arithmetic it would refuse)."""
        dims = self.group_dims[:depth]
        h = self._start(batch_shape)
        limit = len(dims) if posterior_groups is None else posterior_groups
        if feats is None:
            limit = 0
        offsets = [0, *itertools.accumulate(dims)]
        groups: list[LatentGroup] = []
        for i in range(len(dims)):
            p, analytic = self._prior(i, h)
            eps = None if noise is None else noise[..., offsets[i] : offsets[i + 1]]
            if i < limit:
                q = self._posterior(i, h, feats[i].expand(*batch_shape, -1), p)
            else:
                q = None
            if given is not None and i < len(given):
                z = given[i]
            elif q is not None:
                z = q.mean if use_means else draw(q.mean, q.stddev, eps)
            else:
                t = 1.0 if temperature is None else temperature[i]
                z = self._sample_prior(p, batch_shape, t, eps, use_means)
            if q is not None and with_kl:
                kl, per_dim, estimator = group_kl(q, p, z, analytic)
                groups.append(LatentGroup(z, q, p, kl, per_dim, estimator))
            elif q is not None:
                groups.append(LatentGroup(z, q, p, z.new_zeros(z.shape[:-1]), None, "skipped"))
            else:
                zero = torch.zeros(z.shape[:-1], device=z.device)
                groups.append(LatentGroup(z, p, p, zero, None, "prior"))
            h = self._update(i, h, z)
        return _Pass(groups)

    @staticmethod
    def _sample_prior(p, batch_shape, t, eps, use_means) -> torch.Tensor:
        if isinstance(p, Independent) and p.base_dist.loc.dim() > 1:
            if use_means:
                return p.mean
            return draw(p.mean, t * p.stddev, eps)
        # the top prior has no batch shape
        return sample_with_temperature(p, math.prod(batch_shape), t).view(*batch_shape, -1)

    def _decoded(self, z: torch.Tensor) -> Distribution:
        params = self.decoder(z.reshape(-1, z.shape[-1]))
        return self.likelihood.distribution(params.view(*z.shape[:-1], *params.shape[1:]))

    # ---- the model interface -------------------------------------------------------------

    @override
    def infer(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> Inference:
        run = self.top_down(self.bottom_up(x), (x.shape[0],), noise)
        return Inference(run.groups, self._decoded(run.z))

    def log_weights(self, x, k, noise=None, posterior_groups: int | None = None):
        """log p(x, z) - log q(z|x) and log p(x|z) for k samples, each (k, B). With
        `posterior_groups = j`, only the top j groups come from q and the rest from their
        priors, whose density ratio then cancels: the weights of p_{>j}(x), the likelihood
        the top levels alone assign (Havtorn et al. 2021)."""
        feats = self.bottom_up(x)
        run = self.top_down(feats, (k, x.shape[0]), noise, posterior_groups=posterior_groups)
        log_px_z = self._decoded(run.z).log_prob(x)
        log_w = log_px_z.clone()
        for g in run.groups:
            if g.q is not g.p:
                log_w = log_w + g.p.log_prob(g.z) - g.q.log_prob(g.z)
        return log_w, log_px_z

    @override
    def posterior_means(self, x: torch.Tensor) -> torch.Tensor:
        run = self.top_down(self.bottom_up(x), (x.shape[0],), use_means=True)
        return torch.cat([g.z for g in run.groups], -1)

    def split(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Concatenated latents (..., latent_dim) as one tensor per group."""
        return list(z.split(self.group_dims, -1))

    @override
    def decode_params(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    @override
    @torch.no_grad()
    def sample_latents(self, n: int, temperature: float | list[float] = 1.0) -> torch.Tensor:
        temps = group_temperatures(temperature, len(self.group_dims))
        run = self.top_down(None, (n,), temperature=temps)
        return torch.cat([g.z for g in run.groups], -1)

    @override
    def coding_posterior(self, x, upper, particles=1):
        i = len(upper)
        # the coder asks for every group of the same x in turn: its bottom-up features are
        # computed once (held only for that tensor), on each image once whatever the particles
        cached = getattr(self, "_coding_features", None)
        if cached is None or cached[0] is not x or cached[1] != particles:
            feats = self.bottom_up(x)
            if particles > 1:
                feats = [f.repeat(particles, 1) for f in feats]
            cached = (x, particles, feats)
            self._coding_features = cached
        rows = x.shape[0] * particles
        h = self._coding_state(upper, rows)
        p = self._prior(i, h)[0] if i else None
        return self._posterior(i, h, cached[2][i].expand(rows, -1), p)

    @override
    def coding_prior(self, upper):
        i = len(upper)
        return self._prior(i, self._coding_state(upper, upper[0].shape[0] if upper else 1))[0]

    def _coding_state(self, upper: list[torch.Tensor], b: int) -> torch.Tensor:
        """The top-down state after the groups `upper`. The coder asks group after group of
        one batch, each time with the list of the groups above grown by one: the states of
        the longest prefix of the same tensors as the last call are reused, so each update
        runs once per batch instead of once per group below it (the same operations on the
        same inputs: the same bits)."""
        known, states = getattr(self, "_coding_states", ((), ()))
        n = 0
        while n < min(len(known), len(upper)) and known[n] is upper[n]:
            n += 1
        states = list(states[:n])
        h = states[-1] if n else self._start((b,))
        for j in range(n, len(upper)):
            h = self._update(j, h, upper[j])
            states.append(h)
        self._coding_states = (tuple(upper), tuple(states))
        return h
