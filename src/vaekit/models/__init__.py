"""Models: the interface every use goes through, and its implementations (registered)."""

from vaekit.models.base import (
    MODELS,
    Inference,
    LatentGroup,
    LatentVariableModel,
    build_model,
    group_kl,
)
from vaekit.models.hierarchical import HierarchicalVAE
from vaekit.models.markov import MarkovHierarchy
from vaekit.models.vae import VAE

__all__ = [
    "MODELS",
    "VAE",
    "HierarchicalVAE",
    "MarkovHierarchy",
    "Inference",
    "LatentGroup",
    "LatentVariableModel",
    "build_model",
    "group_kl",
]
