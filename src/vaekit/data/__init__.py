"""Data: readers (IDX, .npy, image folders), dataset discovery and pixel modes."""

from vaekit.data.datasets import load_dataset
from vaekit.data.idx import idx_bytes, read_idx
from vaekit.data.pixels import PIXEL_MODES, prepare_split, to_values
from vaekit.data.sources import Dataset, read_images

__all__ = [
    "PIXEL_MODES",
    "Dataset",
    "idx_bytes",
    "load_dataset",
    "prepare_split",
    "read_idx",
    "read_images",
    "to_values",
]
