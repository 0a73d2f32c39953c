"""The local background model is a normalized autoregressive distribution over binary images."""

import itertools

import torch

from vaekit.uses.background import LocalPixelModel, fit_local_model


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
