"""The uses of a trained VAE: generation (here), compression and anomaly detection."""

from vaekit.uses.generation import interpolate_images, reconstruct_images, sample_images
from vaekit.uses.images import save_grid

__all__ = ["interpolate_images", "reconstruct_images", "sample_images", "save_grid"]
