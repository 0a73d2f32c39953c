"""Datasets larger than memory: memory-mapped `.npy` shards read through a DataLoader.

A shard folder holds `train/*.npy` and `test/*.npy` (or only `*.npy`, of which the last
shard is held out for testing), each a uint8 array (N, H, W) or (N, C, H, W). Shards are
opened with `mmap_mode="r"`, so only the pages a batch touches are read and resident
memory stays flat however large the data grows.
"""

from __future__ import annotations

import bisect
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from vaekit.errors import DataError


class NpyShards(Dataset):
    """Memory-mapped `.npy` shards as one dataset of uint8 images (C, H, W)."""

    def __init__(self, paths: list[Path]):
        if not paths:
            raise DataError("no .npy shards given")
        self.paths = [Path(p) for p in paths]
        self._arrays: list[np.ndarray] | None = None  # opened lazily, once per worker
        sizes, shapes = [], set()
        for p in self.paths:
            try:
                arr = np.load(p, mmap_mode="r", allow_pickle=False)
            except (ValueError, OSError) as e:
                raise DataError(f"{p}: not a readable .npy shard ({e})") from e
            if arr.dtype != np.uint8 or arr.ndim not in (3, 4) or arr.shape[0] == 0:
                raise DataError(
                    f"{p}: shards must be non-empty uint8 (N, H, W) or "
                    f"(N, C, H, W) arrays; got {arr.dtype} {arr.shape}"
                )
            sizes.append(arr.shape[0])
            shapes.add(arr.shape[1:] if arr.ndim == 4 else (1, *arr.shape[1:]))
        if len(shapes) > 1:
            raise DataError(f"shards disagree on the image shape: {sorted(shapes)}")
        self.image_shape = tuple(shapes.pop())
        self.offsets = np.cumsum([0, *sizes]).tolist()

    def __len__(self) -> int:
        return self.offsets[-1]

    def __getitem__(self, i: int) -> torch.Tensor:
        if self._arrays is None:
            self._arrays = [np.load(p, mmap_mode="r", allow_pickle=False) for p in self.paths]
        s = bisect.bisect_right(self.offsets, i) - 1
        img = np.asarray(self._arrays[s][i - self.offsets[s]])
        return torch.from_numpy(img.reshape(self.image_shape).copy())

    def __getstate__(self):  # workers reopen the maps instead of pickling them
        state = dict(self.__dict__)
        state["_arrays"] = None
        return state


def open_shards(path: str | Path) -> tuple[NpyShards, NpyShards]:
    """(train, test) shard datasets from a shard folder."""
    path = Path(path)
    train_paths = sorted((path / "train").glob("*.npy"))
    if train_paths:
        test_paths = sorted((path / "test").glob("*.npy"))
        if not test_paths:
            raise DataError(f"{path}: has train/*.npy but no test/*.npy")
    else:
        shards = sorted(path.glob("*.npy"))
        if len(shards) < 2:
            raise DataError(
                f"{path}: streaming needs at least 2 shards (the last is held out "
                f"for testing), or train/ and test/ subfolders"
            )
        train_paths, test_paths = shards[:-1], shards[-1:]
    train, test = NpyShards(train_paths), NpyShards(test_paths)
    if train.image_shape != test.image_shape:
        raise DataError(
            f"{path}: shards disagree on the image shape: train "
            f"{train.image_shape}, test {test.image_shape}"
        )
    return train, test
