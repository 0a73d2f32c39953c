"""Properties of the distributions: KL, likelihood normalisation, log-prob formulas."""

import math

import pytest
import torch
from torch.distributions import Normal

from vaekit.distributions import (
    DiscretizedLogisticMixture,
    diagonal_gaussian,
    kl_per_dim,
    make_likelihood,
)
from vaekit.priors import StandardNormalPrior


def test_kl_is_zero_iff_q_equals_p():
    torch.manual_seed(0)
    mean, logvar = torch.randn(50, 8), torch.randn(50, 8)
    q = diagonal_gaussian(mean, logvar)
    assert torch.allclose(kl_per_dim(q, diagonal_gaussian(mean, logvar)), torch.zeros(50, 8))
    p = StandardNormalPrior(8).distribution()
    kl = kl_per_dim(q, p)
    assert (kl > 0).all()
    # q = p exactly gives zero; any small move away from p gives a strictly positive KL.
    assert kl_per_dim(diagonal_gaussian(torch.zeros(1, 8), torch.zeros(1, 8)), p).abs().max() < 1e-7
    near = diagonal_gaussian(torch.full((1, 8), 1e-3), torch.zeros(1, 8))
    assert (kl_per_dim(near, p) > 0).all()


def test_analytic_kl_matches_monte_carlo():
    torch.manual_seed(1)
    q = diagonal_gaussian(torch.randn(4, 3), torch.randn(4, 3) * 0.5)
    p = StandardNormalPrior(3).distribution()
    z = q.sample((200_000,))
    samples = q.log_prob(z) - p.log_prob(z)  # (S, 4)
    mc, se = samples.mean(0), samples.std(0) / math.sqrt(samples.shape[0])
    analytic = kl_per_dim(q, p).sum(-1)
    assert ((mc - analytic).abs() < 5 * se + 1e-4).all(), (mc, analytic, se)


def test_logistic_mixture_normalised_and_consistent():
    torch.manual_seed(2)
    logits, means, log_scales = torch.randn(5, 3), torch.randn(5, 3) * 0.8, torch.randn(5, 3) - 3
    d = DiscretizedLogisticMixture(logits, torch.tanh(means), log_scales)
    probs = d.bin_probs()
    assert torch.allclose(probs.sum(-1), torch.ones(5, dtype=torch.float64), atol=1e-12)
    values = torch.arange(256.0).view(256, 1).expand(256, 5)
    lp = d.log_prob(values)  # (256, 5)
    assert torch.allclose(lp.double().exp().T, probs, atol=1e-5)


def test_logistic_mixture_stable_for_sharp_components():
    # A tiny scale centred on level 128 puts almost all mass in that bin: its log-prob is ~0,
    # and the far bins are very unlikely yet finite (no log(0) from a CDF difference).
    mean = torch.full((1, 1), 128 / 127.5 - 1)
    d = DiscretizedLogisticMixture(torch.zeros(1, 1), mean, torch.full((1, 1), -7.0))
    lp = d.log_prob(torch.tensor([128.0, 127.0, 0.0, 255.0]).view(4, 1)).view(-1)
    assert torch.isfinite(lp).all()
    h = (1 / 255) / math.exp(-7.0)  # half a bin in units of the logistic's scale
    sig = torch.sigmoid
    centre = torch.log(1 - 2 * sig(torch.tensor(-h, dtype=torch.float64)))
    nxt = torch.log(sig(torch.tensor(-h, dtype=torch.float64)) - sig(torch.tensor(-3 * h)))
    assert lp[0].item() == pytest.approx(centre.item(), abs=1e-5)  # -0.027: nearly all mass
    assert lp[1].item() == pytest.approx(nxt.item(), abs=1e-4)  # the next bin: -4.3
    assert (lp[2:] < -200).all()


def test_bernoulli_likelihood_matches_formula():
    lik = make_likelihood("bernoulli")
    params = torch.randn(2, 1, 3, 3)
    x = (torch.rand(2, 1, 3, 3) > 0.5).float()
    p = torch.sigmoid(params)
    manual = (x * p.log() + (1 - x) * (1 - p).log()).flatten(1).sum(1)
    assert torch.allclose(lik.distribution(params).log_prob(x), manual, atol=1e-5)


def test_expected_binary_target_is_the_average_over_binarizations():
    """expected-binary's cross-entropy with x/255 equals E_b[log p(b|z)], b ~ Bernoulli(x/255)."""
    from vaekit.data.pixels import to_values

    torch.manual_seed(0)
    lik = make_likelihood("bernoulli")
    params = torch.randn(1, 1, 6, 6)
    images = torch.randint(0, 256, (1, 1, 6, 6), dtype=torch.uint8)
    exact = lik.distribution(params).log_prob(to_values(images, "expected-binary", train=True))
    draws = torch.stack(
        [
            lik.distribution(params).log_prob(to_values(images, "dynamic-binary", train=True))
            for _ in range(20000)
        ]
    )
    se = draws.std() / math.sqrt(len(draws))
    assert abs(draws.mean() - exact) < 4 * se
    # and it is not just any number: a shifted target is far outside the error bar
    shifted = lik.distribution(params).log_prob(to_values(images // 2, "expected-binary", True))
    assert abs(draws.mean() - shifted) > 20 * se


def test_gaussian_likelihood_matches_normal():
    lik = make_likelihood("gaussian")
    params = torch.randn(2, 2, 3, 3)
    x = torch.rand(2, 1, 3, 3)
    mean, log_scale = params.chunk(2, 1)
    manual = (
        Normal(mean, log_scale.clamp_min(lik.min_log_scale).exp()).log_prob(x).flatten(1).sum(1)
    )
    assert torch.allclose(lik.distribution(params).log_prob(x), manual, atol=1e-5)


def test_likelihood_display_is_the_mean_image():
    """What sample/reconstruct show: the likelihood's mean on the [0, 1] scale of the data."""
    params = torch.randn(3, 1, 4, 4)
    bern = make_likelihood("bernoulli")
    torch.testing.assert_close(bern.display(bern.distribution(params)), torch.sigmoid(params))
    gauss = make_likelihood("gaussian")
    mean = torch.rand(3, 1, 4, 4)
    shown = gauss.display(gauss.distribution(torch.cat([mean, torch.zeros_like(mean)], 1)))
    torch.testing.assert_close(shown, mean)
    mix = make_likelihood("logistic-mixture", n_mix=1)  # one component: mean = tanh(m)
    m = torch.randn(3, 1, 4, 4)
    p = torch.cat([torch.zeros_like(m), m, torch.full_like(m, -3.0)], 1)
    torch.testing.assert_close(mix.display(mix.distribution(p)), (torch.tanh(m) + 1) * 127.5 / 255)
