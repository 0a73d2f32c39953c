"""The local background model is a normalized autoregressive distribution over binary images."""

import itertools

import pytest
import torch

from vaekit.anomaly.background import LocalPixelModel, fit_local_model


def all_binary_images(h: int, w: int) -> torch.Tensor:
    bits = torch.tensor(list(itertools.product([0.0, 1.0], repeat=h * w)))
    return bits.view(-1, 1, h, w)


def test_probabilities_of_all_images_sum_to_one():
    torch.manual_seed(0)
    model = LocalPixelModel(kernel=5, width=4)
    for p in model.parameters():  # large random weights: a causality leak would show
        p.data.normal_(0, 2.0)
    x = all_binary_images(3, 4)
    total = torch.logsumexp(model.log_prob(x).double(), 0).exp()
    assert abs(total.item() - 1.0) < 1e-5


def test_a_leaky_mask_is_detected():
    """The test above fails for a model that sees the pixel it predicts."""
    torch.manual_seed(0)
    model = LocalPixelModel(kernel=5, width=4)
    for p in model.parameters():
        p.data.normal_(0, 2.0)
    model.mask[..., 2, 2] = 1.0
    x = all_binary_images(3, 4)
    assert abs(torch.logsumexp(model.log_prob(x).double(), 0).exp().item() - 1.0) > 1e-3


def test_fitting_learns_local_structure():
    """Images of vertical bars: the fitted model rates them far above scattered noise with the
    same number of lit pixels."""
    bars = torch.zeros(200, 1, 12, 12, dtype=torch.uint8)
    for i in range(200):
        bars[i, 0, :, (i * 7) % 12] = 1  # prepared static-binary values are 0/1
    model = fit_local_model(bars, "static-binary", epochs=100, batch_size=50, seed=0)
    noise = torch.zeros(200, 1, 12, 12)
    g = torch.Generator().manual_seed(1)
    for i in range(200):
        noise[i].view(-1)[torch.randperm(144, generator=g)[:12]] = 1.0
    with torch.no_grad():
        assert model.log_prob(bars[:50].float()).mean() > model.log_prob(noise).mean() + 20


@pytest.mark.parametrize("mixture", [0, 5])
def test_the_256_level_model_is_normalized_over_every_image(mixture):
    """Every 1x2 image of 8-bit pixels (65,536 of them): probabilities sum to one, so the
    `local` score is a real -log2 p(x), with a softmax over the levels (mixture 0) or a
    discretized logistic mixture; the softmax's channels-last path agrees with plain 1x1
    convolutions."""
    torch.manual_seed(0)
    model = LocalPixelModel(kernel=3, width=8, levels=256, mixture=mixture)
    for p in model.parameters():
        p.data.normal_(0, 1.0)
    v = torch.arange(256.0) / 255.0
    x = torch.cartesian_prod(v, v).view(-1, 1, 1, 2)
    with torch.no_grad():
        total = torch.logsumexp(model.log_prob(x).double(), 0).exp()
        assert abs(total.item() - 1.0) < 1e-4
        model.mask[..., 1, 1] = 1.0  # a leak of the predicted pixel breaks normalization
        assert abs(torch.logsumexp(model.log_prob(x).double(), 0).exp().item() - 1.0) > 1e-2
        model.mask[..., 1, 1] = 0.0
        if mixture:
            return
        y = torch.randint(0, 256, (4, 1, 6, 5)).float() / 255.0
        target = torch.round(y[:, 0] * 255).long()
        plain = -torch.nn.functional.cross_entropy(model.logits(y), target, reduction="none")
        assert torch.allclose(model.log_prob_map(y), plain, atol=1e-5)


def test_the_intensity_model_learns_8bit_strokes():
    """Bars whose pixels are all 255 against bars with shot noise in their intensities (the
    same shapes): a binary model cannot tell them apart, the fitted 256-level model can."""
    g = torch.Generator().manual_seed(0)
    bars = torch.zeros(300, 1, 10, 10, dtype=torch.uint8)
    for i in range(300):
        bars[i, 0, :, (i * 3) % 10] = 255
    model = fit_local_model(bars, None, epochs=5, batch_size=50, seed=0, min_steps=300)
    noisy = bars.clone()
    lit = noisy > 0
    noisy[lit] = (255 - torch.randint(0, 60, (int(lit.sum()),), generator=g)).to(torch.uint8)
    with torch.no_grad():
        clean_bits = -model.log_prob(bars[:50].float() / 255)
        noisy_bits = -model.log_prob(noisy[:50].float() / 255)
    assert clean_bits.max() < noisy_bits.min()


def test_local_scores_are_bits_per_image_and_per_inked_pixel():
    import math

    from vaekit.anomaly.scores import local_scores

    torch.manual_seed(1)
    model = LocalPixelModel(kernel=3, width=8, levels=256)
    images = torch.randint(0, 256, (5, 1, 7, 6), dtype=torch.uint8)
    images[images < 100] = 0
    images[4] = 0  # blank: no inked pixel
    got = local_scores(model, images, batch=2)
    with torch.no_grad():
        bits = -model.log_prob_map(images.float() / 255).double() / math.log(2)
    for i in range(5):
        assert abs(got["local"][i] - bits[i].sum().item()) < 1e-3
        ink = images[i, 0] > 0
        want = bits[i][ink].mean().item() if ink.any() else 0.0
        assert abs(got["local-ink"][i] - want) < 1e-4
