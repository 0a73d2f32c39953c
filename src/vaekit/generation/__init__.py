"""Generation: samples, reconstructions, interpolations, samplers, their quality, the report."""

from vaekit.generation.grids import save_grid
from vaekit.generation.images import interpolate_images, reconstruct_images, sample_images

__all__ = ["interpolate_images", "reconstruct_images", "sample_images", "save_grid"]
