"""Distributions: diagonal Gaussian posteriors/priors and the decoder likelihoods."""

# registers the colour likelihood (after `likelihoods`, whose registry and helpers it uses)
from vaekit.distributions import colour  # noqa: E402, F401, I001
from vaekit.distributions.gaussian import diagonal_gaussian, kl_per_dim, repeat_rows
from vaekit.distributions.likelihoods import (
    LIKELIHOODS,
    BernoulliLikelihood,
    DiscretizedLogisticMixture,
    GaussianLikelihood,
    Likelihood,
    LogisticMixtureLikelihood,
    full_precision,
    make_likelihood,
)
from vaekit.distributions.mixture import DiagonalGaussianMixture

__all__ = [
    "BernoulliLikelihood",
    "DiagonalGaussianMixture",
    "DiscretizedLogisticMixture",
    "GaussianLikelihood",
    "LIKELIHOODS",
    "Likelihood",
    "LogisticMixtureLikelihood",
    "diagonal_gaussian",
    "full_precision",
    "kl_per_dim",
    "make_likelihood",
    "repeat_rows",
]
