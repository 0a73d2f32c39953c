"""Priors: the mixture density is right, the VampPrior is the model's own aggregate of
posteriors, and a model with it passes the same bounds as with N(0, I)."""

import math

import numpy as np
import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from tests.conftest import synthetic_digits
from vaekit.coding.files import compress, decompress
from vaekit.config import ModelConfig
from vaekit.distributions import DiagonalGaussianMixture
from vaekit.models import VAE
from vaekit.objectives import elbo, importance_sampled_log_px
from vaekit.priors import PRIORS, VampPrior


def vamp_model(latent_dim=2, shape=(1, 8, 8), components=5, seed=0) -> VAE:
    torch.manual_seed(seed)
    cfg = ModelConfig(
        pixels="static-binary",
        latent_dim=latent_dim,
        hidden=[16],
        image_shape=list(shape),
        prior="vamp",
        prior_components=components,
    )
    return VAE(cfg).eval()


def test_mixture_log_prob_matches_torch_mixture():
    g = torch.Generator().manual_seed(0)
    logits, loc = torch.randn(7, generator=g), 2 * torch.randn(7, 3, generator=g)
    scale = torch.rand(7, 3, generator=g) + 0.05
    ours = DiagonalGaussianMixture(logits, loc, scale)
    ref = MixtureSameFamily(Categorical(logits=logits), Independent(Normal(loc, scale), 1))
    z = 3 * torch.randn(4, 5, 3, generator=g)
    torch.testing.assert_close(ours.log_prob(z), ref.log_prob(z), rtol=1e-4, atol=1e-4)
    torch.manual_seed(1)
    draws = ours.sample((200_000,))
    torch.testing.assert_close(draws.mean(0), ref.mean, atol=0.03, rtol=0)


def test_vamp_prior_is_the_mean_of_the_pseudo_input_posteriors():
    model = vamp_model()
    p = model.prior_distribution()
    u = model.prior.inputs()
    z = torch.randn(10, 2)
    q = model.posterior_of_inputs(u)  # batch of 5 posteriors
    by_hand = torch.logsumexp(q.log_prob(z.unsqueeze(1)), 1) - math.log(5)
    torch.testing.assert_close(p.log_prob(z), by_hand, rtol=1e-5, atol=1e-5)
    assert "vamp" in PRIORS and not VampPrior.analytic_kl


def test_vamp_kl_is_monte_carlo_and_free_bits_still_act():
    model = vamp_model()
    x = torch.from_numpy((synthetic_digits(8, 8) > 100).astype(np.float32))[:, None]
    torch.manual_seed(0)
    terms = elbo(model, x)
    assert terms.kl_per_dim is None and terms.groups[0].kl_estimator == "1-sample Monte Carlo"
    torch.manual_seed(0)
    freed = elbo(model, x, free_bits=50.0)  # 50 nats x 2 dims: far above this model's KL
    assert torch.equal(freed.elbo, terms.elbo)
    assert freed.loss.item() == pytest.approx(-terms.reconstruction.mean().item() + 100.0)


def _exact_log_px(model, x, limit=8.0, n=801):
    """log p(x) of a 2-D-latent model by a grid over z."""
    g = torch.linspace(-limit, limit, n, dtype=torch.float64)
    z = torch.cartesian_prod(g, g)
    dz = (g[1] - g[0]) ** 2
    with torch.no_grad():
        log_prior = model.prior_distribution().log_prob(z)
        out = []
        for xi in x:
            ll = model.decode(z).log_prob(xi.expand(len(z), *xi.shape).double())
            out.append(torch.logsumexp(ll + log_prior, 0) + torch.log(dz))
    return torch.stack(out)


def test_vamp_importance_sampling_converges_to_the_exact_likelihood():
    model = vamp_model(seed=3).double()
    x = torch.from_numpy((synthetic_digits(4, 8, seed=2) > 100).astype(np.float64))[:, None]
    exact = _exact_log_px(model, x)
    torch.manual_seed(0)
    with torch.no_grad():
        est = importance_sampled_log_px(model, x, 20_000)
        bound = torch.stack([elbo(model, x).elbo for _ in range(2000)]).mean(0)
    assert (est - exact).abs().max() < 0.02, (est, exact)
    assert (bound <= exact + 1e-3).all()


def test_vamp_model_codes_losslessly_near_its_elbo():
    model = vamp_model(latent_dim=4, shape=(1, 12, 12), components=20, seed=1)
    x = (synthetic_digits(60, 12) > 100).astype(np.uint8)[:, None]
    data = compress(model, x)
    assert np.array_equal(decompress(model, data), x)


def test_vamp_pseudo_inputs_start_at_training_inputs():
    model = vamp_model(components=4)
    values = torch.rand(50, 1, 8, 8)
    model.init_from_data(values, output_bias=False)
    u = model.prior.inputs()
    assert all(any(torch.equal(ui, v) for v in values) for ui in u)


@pytest.mark.parametrize("prior", ["vamp", "mog"])
def test_a_learned_prior_goes_through_every_use(prior, tmp_path, npy_data):
    """Train, evaluate (IS >= ELBO, MC KL named), sample, reconstruct and code losslessly,
    with nothing but the prior's name changed."""
    from tests.conftest import tiny_config
    from vaekit.checkpoint import load_checkpoint
    from vaekit.data.splits import load_splits
    from vaekit.evaluation import evaluate
    from vaekit.generation import interpolate_images, reconstruct_images, sample_images
    from vaekit.training import train

    cfg = tiny_config(npy_data, pixels="static-binary", epochs=2)
    cfg.model.prior, cfg.model.prior_components = prior, 6
    model, cfg, _ = load_checkpoint(train(cfg, tmp_path / prior, progress=False))
    test = load_splits(cfg, torch.device("cpu")).test
    res = evaluate(model, test, k=50)
    assert res["log_px"] >= res["elbo"] and res["kl"] > 0
    assert res["estimators"]["kl"].startswith("1-sample Monte Carlo") and res["kl_per_dim"] is None
    assert sample_images(model, 6, temperature=0.5).shape == (6, 1, 12, 12)
    assert reconstruct_images(model, test[:3]).shape == (6, 1, 12, 12)
    assert interpolate_images(model, test[:2], test[2:4], 3).shape == (10, 1, 12, 12)
    x = test[:40].numpy()
    assert np.array_equal(decompress(model, compress(model, x)), x)


@pytest.mark.parametrize("prior", ["vamp", "mog"])
def test_the_anomaly_detector_takes_a_learned_prior(prior):
    from vaekit.anomaly.detector import AnomalyDetector

    normal = synthetic_digits(200, 12)
    odd = (np.random.default_rng(1).random((10, 12, 12)) < 0.3).astype(np.uint8) * 255
    overrides = (
        "model.hidden=[32]",
        "model.latent_dim=2",
        f"model.prior={prior}",
        "model.prior_components=5",
        "train.lr=3e-3",
    )
    det = AnomalyDetector(k=10, epochs=6, overrides=overrides).fit(normal)
    scores = det.anomaly_score(np.concatenate([synthetic_digits(30, 12, seed=4), odd]))
    assert scores[30:].min() > np.median(scores[:30])
