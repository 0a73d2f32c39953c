"""Train/test splits on the device, prepared by the model's pixel mode, and their statistics."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vaekit.config import Config
from vaekit.data.datasets import load_dataset
from vaekit.data.pixels import pixel_mode
from vaekit.data.sources import Dataset, ImageOptions
from vaekit.data.streaming import NpyShards, open_shards
from vaekit.errors import VaekitError
from vaekit.randomness import seeded

STREAM_TEST_LIMIT = 10000  # test images held in memory for the per-epoch ELBO when streaming


@dataclass
class Splits:
    """The train and test splits, prepared by the pixel mode (train: maybe streamed shards)."""
    train: torch.Tensor | NpyShards  # uint8 (N, C, H, W) on the device, or streamed shards
    test: torch.Tensor

    @property
    def image_shape(self) -> list[int]:
        """(C, H, W) of the images."""
        if isinstance(self.train, NpyShards):
            return list(self.train.image_shape)
        return list(self.train.shape[1:])


def image_options(config: Config) -> ImageOptions:
    """How the run reads a folder of image files (`train.image_size`, `train.skip_bad`)."""
    t = config.train
    return ImageOptions(tuple(t.image_size) if t.image_size else None, t.skip_bad)


def load_splits(config: Config, device: torch.device, dataset: Dataset | None = None) -> Splits:
    """Read the configured dataset (or use `dataset`) and prepare both splits."""
    t = config.train
    try:
        mode = pixel_mode(config.model.pixels)
    except ValueError as e:
        raise VaekitError(str(e)) from e
    if t.stream:
        if not mode.streamable:
            raise VaekitError(
                f"{mode.name} needs the whole split in memory; stream with "
                "dynamic-binary, 8bit or continuous pixels"
            )
        train_shards, test_shards = open_shards(t.data)
        n_test = min(len(test_shards), STREAM_TEST_LIMIT, t.limit or STREAM_TEST_LIMIT)
        test = torch.stack([test_shards[i] for i in range(n_test)]).to(device)
        return Splits(train_shards, mode.prepare(test, False))
    ds = dataset if dataset is not None else load_dataset(t.data, t.data_dir, image_options(config))
    train, test = ds.train, ds.test
    if t.limit:
        train, test = train[: t.limit], test[: max(1, t.limit // 6)]
    tr = torch.from_numpy(train).to(device)
    te = torch.from_numpy(test).to(device)
    return Splits(mode.prepare(tr, True), mode.prepare(te, False))


def sample_values(
    train: torch.Tensor | NpyShards, mode_name: str, seed: int, n: int = 10000
) -> torch.Tensor:
    """Up to `n` training examples chosen with `seed`, as the pixel mode's float values."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    idx = torch.randperm(len(train), generator=g)[:n]
    if isinstance(train, NpyShards):
        raw = torch.stack([train[i] for i in idx.tolist()])
    else:
        raw = train[idx.to(train.device)]
    with seeded(seed, raw.device):
        return pixel_mode(mode_name).values(raw, train=True).float()

