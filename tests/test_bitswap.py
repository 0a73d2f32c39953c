"""Bit-Swap: a Markov hierarchy coded with interleaved levels."""

import constriction
import numpy as np
import pytest
import torch

from tests.test_hierarchical import binary_images, hvae
from vaekit.coding import bitsback, latents
from vaekit.coding.files import compress, decompress
from vaekit.config import ModelConfig
from vaekit.models import MarkovHierarchy
from vaekit.objectives import elbo, importance_sampled_log_px


def markov(pixels="static-binary", groups=(3, 3), shape=(1, 6, 6), seed=0, noise=0.2):
    torch.manual_seed(seed)
    cfg = ModelConfig(
        family="bitswap",
        pixels=pixels,
        latent_groups=list(groups),
        group_width=16,
        hidden=[32],
        image_shape=list(shape),
        n_mix=2,
    )
    model = MarkovHierarchy(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(noise * torch.randn_like(p))
    return model


def test_elbo_below_log_px_and_groups_top_down():
    model = markov(groups=(2, 3, 4))
    x = binary_images(64)
    torch.manual_seed(0)
    terms = elbo(model, x)
    assert [g.z.shape[-1] for g in terms.groups] == [2, 3, 4]
    assert model.sample_latents(5, [1.0, 0.0, 0.5]).shape == (5, 9)
    assert model.posterior_means(x).shape == (64, 9)
    bound = float(terms.elbo.mean().detach())
    estimates = [float(importance_sampled_log_px(model, x, k).mean()) for k in (1, 200)]
    assert bound <= estimates[1] and estimates[0] < estimates[1]


@pytest.mark.parametrize("pixels", ["static-binary", "8bit"])
@pytest.mark.parametrize("depth", [1, 2, 4])
def test_bitswap_round_trip_is_exact(pixels, depth):
    shape = (1, 6, 6)
    model = markov(pixels, groups=(3,) * depth, shape=shape)
    rng = np.random.default_rng(depth)
    if pixels == "8bit":
        images = rng.integers(0, 256, (30, *shape), dtype=np.uint8)
    else:
        images = (rng.random((30, *shape)) < 0.3).astype(np.uint8)
    assert np.array_equal(decompress(model, compress(model, images)), images)


class _Watched:
    """An ANS coder that remembers how far below its starting size the stack went."""

    def __init__(self, words: int):
        rng = np.random.default_rng(0)
        self.coder = constriction.stream.stack.AnsCoder(
            rng.integers(1, 2**32, words, dtype=np.uint64).astype(np.uint32)
        )
        self.start = self.lowest = self.coder.num_bits()

    def decode(self, *args):
        out = self.coder.decode(*args)
        self.lowest = min(self.lowest, self.coder.num_bits())
        return out

    def encode_reverse(self, *args):
        self.coder.encode_reverse(*args)


def _initial_bits(model, code_batch) -> int:
    """Bits the first image takes from the stack before its own pushes pay them back."""
    image = (binary_images(1, shape=(1, 6, 6)) > 0).numpy().astype(np.uint8)
    coder = _Watched(4096)
    with torch.no_grad():
        code_batch(
            model,
            latents.LatentCoder(latents.LATENT_BITS),
            coder,
            image,
            torch.from_numpy(image).float(),
        )
    return coder.start - coder.lowest


def test_bitswap_initial_bits_do_not_grow_with_depth():
    """Bit-Swap's first image borrows about one level's bits at any depth; the top-down
    coder borrows every level's, so its need grows with depth."""
    # near-initial models, whose posteriors are near N(0, 1): about 13 bits a latent
    swap = {
        d: _initial_bits(markov(groups=(6,) * d, noise=0.02), bitsback._encode_bitswap)
        for d in (1, 2, 8)
    }
    top_down = {
        d: _initial_bits(hvae(groups=(6,) * d, noise=0.02), bitsback._encode_top_down)
        for d in (1, 2, 8)
    }
    assert swap[8] <= 2 * swap[1], swap  # level 2 pops before x has paid level 1 back
    assert top_down[8] >= 4 * top_down[1], top_down
    plan_words = {d: bitsback.pops_per_image(markov(groups=(6,) * d)) for d in (2, 8)}
    assert plan_words[8] - plan_words[2] == 6  # one more mixture-free push per level only
