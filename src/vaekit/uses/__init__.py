"""Deprecated: the uses moved to vaekit.generation, vaekit.coding and vaekit.anomaly."""

import warnings

from vaekit.generation import interpolate_images, reconstruct_images, sample_images, save_grid

warnings.warn(
    "vaekit.uses is split into vaekit.generation, vaekit.coding and vaekit.anomaly; "
    "the old path goes in vaekit 0.8",
    DeprecationWarning,
    stacklevel=2,
)
__all__ = ["interpolate_images", "reconstruct_images", "sample_images", "save_grid"]
