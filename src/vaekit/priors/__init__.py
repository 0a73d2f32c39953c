"""Priors p(z): a registry of modules that each return a `torch.distributions` object.

A prior may depend on the model (the VampPrior's components are the model's own posteriors
of learned pseudo-inputs) and may have no analytic KL against a Gaussian posterior; the
objectives then use a Monte-Carlo KL and say so.
"""

from vaekit.priors.base import PRIORS, Prior, make_prior
from vaekit.priors.mixture_of_gaussians import MixtureOfGaussiansPrior
from vaekit.priors.standard_normal import StandardNormalPrior
from vaekit.priors.vamp import VampPrior

__all__ = [
    "PRIORS",
    "MixtureOfGaussiansPrior",
    "Prior",
    "StandardNormalPrior",
    "VampPrior",
    "make_prior",
]
