"""The colour likelihood: a discretized logistic mixture with the channels coupled
(PixelCNN++). Checked against a hand computation, normalized over all 256^3 values of a
pixel, exactly codable, and a pixel mode of its own beside `8bit`."""

import math

import numpy as np
import pytest
import torch

from tests.conftest import assert_pixels_cost_their_likelihood, tiny_model
from vaekit.coding.files import compress, decompress
from vaekit.distributions.colour import CoupledLogisticMixture


def _one_pixel(k: int = 1, seed: int = 0) -> CoupledLogisticMixture:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, k, 1, 1, generator=g, dtype=torch.float64)
    means = torch.tanh(torch.randn(1, k, 3, 1, 1, generator=g, dtype=torch.float64))
    log_scales = -1.5 - torch.rand(1, k, 3, 1, 1, generator=g, dtype=torch.float64)
    coeffs = torch.tanh(torch.randn(1, k, 3, 1, 1, generator=g, dtype=torch.float64))
    return CoupledLogisticMixture(logits, means, log_scales, coeffs)


def _sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def _bin(level: int, mean: float, log_scale: float) -> float:
    """P(level) of a logistic discretized to 0..255 on the [-1, 1] scale, by hand."""
    s = math.exp(log_scale)
    hi = _sigmoid(((level + 0.5) / 127.5 - 1.0 - mean) / s) if level < 255 else 1.0
    lo = _sigmoid(((level - 0.5) / 127.5 - 1.0 - mean) / s) if level > 0 else 0.0
    return hi - lo


@pytest.mark.parametrize("pixel", [(100, 150, 30), (0, 255, 128), (255, 0, 0)])
def test_one_pixel_against_a_hand_computation(pixel):
    d = _one_pixel(k=1)
    m, ls, c = d.means[0, 0, :, 0, 0], d.log_scales[0, 0, :, 0, 0], d.coeffs[0, 0, :, 0, 0]
    r, g, b = pixel
    sr, sg = r / 127.5 - 1.0, g / 127.5 - 1.0
    mean_g = float(m[1]) + float(c[0]) * sr
    mean_b = float(m[2]) + float(c[1]) * sr + float(c[2]) * sg
    p = _bin(r, float(m[0]), float(ls[0])) * _bin(g, mean_g, float(ls[1]))
    p *= _bin(b, mean_b, float(ls[2]))
    x = torch.tensor(pixel, dtype=torch.float64).view(1, 3, 1, 1)
    assert d.log_prob(x).item() == pytest.approx(math.log(p), rel=1e-9)


def test_the_probabilities_of_all_256_cubed_values_of_a_pixel_sum_to_one():
    d = _one_pixel(k=2, seed=3)
    levels = torch.arange(256, dtype=torch.float64)
    gb = torch.cartesian_prod(levels, levels)  # (65536, 2)
    total = 0.0
    for r in range(256):
        x = torch.cat([torch.full((len(gb), 1), float(r), dtype=torch.float64), gb], 1)
        total += torch.exp(d.log_prob(x.view(-1, 3, 1, 1))).sum().item()
    assert total == pytest.approx(1.0, abs=1e-9)


def test_each_channels_mixture_gives_the_joint_by_the_chain_rule():
    """p(r) p(g | r) p(b | r, g) from `channel`, the coder's view, is the joint `log_prob`."""
    d = _one_pixel(k=3, seed=5)
    x = torch.tensor([[[[40.0]], [[200.0]], [[90.0]]]], dtype=torch.float64)
    chain = 0.0
    for c in range(3):
        probs = d.channel(c, x).bin_probs()  # (1, 1, 1, 256)
        chain += math.log(probs[0, 0, 0, int(x[0, c, 0, 0])].item())
    assert chain == pytest.approx(d.log_prob(x).item(), rel=1e-9)


def test_colour_images_round_trip_exactly_and_cost_their_likelihood():
    model = tiny_model("8bit-colour", latent_dim=4, shape=(3, 5, 5), hidden=(32,), seed=2)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (1, 3, 5, 5))
    images = np.clip(base + rng.integers(-20, 20, (12, 3, 5, 5)), 0, 255).astype(np.uint8)
    blob = compress(model, images)
    assert np.array_equal(decompress(model, blob), images)
    assert_pixels_cost_their_likelihood(model, images, seed=1)


def test_a_colour_model_needs_three_channels():
    with pytest.raises(ValueError, match="3 channels"):
        tiny_model("8bit-colour", shape=(1, 5, 5)).decode(torch.zeros(1, 4))
