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
from vaekit.models.vae import VAE

__all__ = [
    "MODELS",
    "VAE",
    "HierarchicalVAE",
    "Inference",
    "LatentGroup",
    "LatentVariableModel",
    "build_model",
    "group_kl",
]
