"""What vaekit's latent hierarchies share: groups from `ModelConfig.latent_groups` (top
first), one temperature per group, and the output bias started at the data."""

from __future__ import annotations

import math

import torch
from torch.distributions import Independent, Normal
from typing_extensions import override

from vaekit.config import ModelConfig
from vaekit.data.pixels import pixel_mode
from vaekit.distributions import make_likelihood
from vaekit.models.base import LatentVariableModel
from vaekit.nets import ARCHITECTURES
from vaekit.priors import PRIORS

# Log-variances of conditional priors and posteriors inside a hierarchy are bounded smoothly
# to +-LOGVAR_SOFT: a conditional prior free to shrink its variance without limit makes the
# KL of q's offset from it blow up (it did, to 1e11 nats, within 100 steps of a short run).
LOGVAR_SOFT = 7.0


def soft_bound(logvar: torch.Tensor) -> torch.Tensor:
    """logvar squashed smoothly into (-LOGVAR_SOFT, LOGVAR_SOFT)."""
    return LOGVAR_SOFT * torch.tanh(logvar / LOGVAR_SOFT)


def draw(mean: torch.Tensor, std: torch.Tensor, eps: torch.Tensor | None) -> torch.Tensor:
    """mean + std * eps, with eps standard normal noise (drawn here when None)."""
    if eps is None:
        eps = torch.randn_like(mean)
    return mean + std * eps.to(mean)


def group_temperatures(temperature: float | list[float], groups: int) -> list[float]:
    """One temperature per group (top first) from one number or a list of `groups`."""
    if isinstance(temperature, list | tuple):
        if len(temperature) != groups:
            raise ValueError(
                f"this model has {groups} latent groups; got {len(temperature)} temperatures "
                "(give one, or one per group, top first)"
            )
        temps = [float(t) for t in temperature]
    else:
        temps = [float(temperature)] * groups
    for t in temps:
        if not math.isfinite(t) or t < 0:
            raise ValueError(f"temperature must be a finite number >= 0; got {t}")
    return temps


def with_sample_shape(q: Independent, batch: tuple[int, ...]) -> Independent:
    """q with its batch shape expanded to `batch` (k samples of each example)."""
    return Independent(Normal(q.mean.expand(*batch, -1), q.stddev.expand(*batch, -1)), 1)


class LatentHierarchy(LatentVariableModel):
    """Base of the hierarchical families: `family` names the registered family in messages."""

    family = "hierarchy"
    example_groups = "[16, 32, 64]"

    def __init__(self, config: ModelConfig):
        """The config checked, pixel mode, likelihood and architecture; subclasses add nets."""
        super().__init__()
        problem = self.config_problem(config)
        if problem:
            raise ValueError(problem)
        self.config = config
        self.pixels = pixel_mode(config.pixels)
        self.likelihood = make_likelihood(self.pixels.likelihood, config.n_mix)
        self.architecture = ARCHITECTURES.get(config.arch)

    @override
    @classmethod
    def config_problem(cls, config: ModelConfig) -> str | None:
        if not config.latent_groups:
            return (
                f"the {cls.family} family needs model.latent_groups, e.g. "
                f"{cls.example_groups} (top first)"
            )
        if PRIORS.get(config.prior).needs_encoder and not hasattr(cls, "posterior_of_inputs"):
            return f"the {cls.family} family's top prior cannot be {config.prior!r}; use another"
        return None

    @override
    @property
    def group_dims(self) -> list[int]:
        return list(self.config.latent_groups)

    @override
    @property
    def decode_batch_limit(self) -> int:
        return self.architecture.decode_batch_limit

    @override
    @torch.no_grad()
    def init_from_data(self, values: torch.Tensor, output_bias: bool) -> None:
        if output_bias:
            params = self.likelihood.initial_params(values.mean(0), values.std(0, correction=0))
            if params is not None:
                self.decoder.set_output_bias(params.to(values.device))
        self.prior.init_from_data(self.likelihood.encoder_input(values))
