"""The batches of one epoch, on this process's shard of the data."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from vaekit.data.streaming import NpyShards


def epoch_batches(
    train: torch.Tensor | NpyShards,
    t,
    world,
    data_gen: torch.Generator,
    b: int,
    steps: int,
    epoch: int,
    device: torch.device,
):
    """This rank's uint8 batches for one epoch: slices of an in-memory tensor through a
    permutation, or streamed shards through a DataLoader with workers."""
    n = len(train)
    if isinstance(train, NpyShards):
        if world.active:
            sampler = DistributedSampler(train, world.size, world.rank, seed=t.seed, drop_last=True)
            sampler.set_epoch(epoch)
        else:
            sampler = RandomSampler(train, generator=data_gen)
        loader = DataLoader(
            train,
            batch_size=b,
            sampler=sampler,
            drop_last=True,
            num_workers=t.workers,
            persistent_workers=False,
        )
        for batch in loader:
            yield batch.to(device, non_blocking=True)
        return
    shard = n // world.size
    perm = torch.randperm(n, generator=data_gen)[world.rank : shard * world.size : world.size]
    perm = perm.to(device)
    for i in range(steps):
        yield train[perm[i * b : (i + 1) * b]]
