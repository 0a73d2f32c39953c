"""Noise that belongs to an example: the same input gets the same random numbers wherever it
sits (which batch, which position, which batch size), so a score, a fixed binarization or a
dequantization depends on the example alone.

Each example gets its own torch generator, seeded by a hash of its bytes and a seed. Draws
come in fixed-size blocks (`BLOCK` importance samples), so how a caller chunks K never changes
what an example receives.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

import numpy as np
import torch

BLOCK = 64  # importance samples drawn per example at a time


def example_keys(examples: torch.Tensor | np.ndarray, seed: int) -> list[int]:
    """A 63-bit key per example (first axis) from its bytes, its shape and `seed`."""
    arr = examples.detach().cpu().numpy() if torch.is_tensor(examples) else np.asarray(examples)
    arr = np.ascontiguousarray(arr)
    salt = f"{seed}:{arr.dtype.str}:{arr.shape[1:]}".encode()
    return [
        int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8, key=salt).digest()) >> 1
        for row in arr
    ]


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run a block with torch's RNG seeded, leaving the caller's RNG state as it was: the
    CPU generator and, on CUDA, the device's (which `torch.manual_seed` also reseeds)."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


class ExampleNoise:
    """Independent random streams, one per example, seeded by the example's content."""

    def __init__(self, examples: torch.Tensor | np.ndarray, seed: int = 0):
        self.generators = []
        for key in example_keys(examples, seed):
            g = torch.Generator(device="cpu")
            g.manual_seed(key)
            self.generators.append(g)

    def subset(self, start: int, stop: int) -> ExampleNoise:
        """The streams of examples start..stop-1 (shared, not copied)."""
        out = ExampleNoise.__new__(ExampleNoise)
        out.generators = self.generators[start:stop]
        return out

    def __len__(self) -> int:
        return len(self.generators)

    def uniform(self, shape: tuple[int, ...], device: torch.device | str = "cpu") -> torch.Tensor:
        """U[0, 1) of shape (B, *shape), row i from example i's stream."""
        rows = [torch.rand(shape, generator=g) for g in self.generators]
        return torch.stack(rows).to(device)

    def normal(self, k: int, dim: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Standard normals (k, B, dim): sample j of example i is the same for any caller that
        asks for k >= j + 1 samples in any split, since draws come in blocks of `BLOCK`."""
        blocks = []
        for _ in range(-(-k // BLOCK)):
            rows = [torch.randn(BLOCK, dim, generator=g) for g in self.generators]
            blocks.append(torch.stack(rows, 1))
        return torch.cat(blocks)[:k].to(device)
