"""The bounds: ELBO <= importance-sampled log p(x) <= exact log p(x), gradients unbiased."""

import math

import torch

from tests.conftest import tiny_model
from vaekit.objectives import elbo, importance_sampled_log_px, iwae_bound
from vaekit.randomness import ExampleNoise


def _binary_batch(n=64, shape=(1, 6, 6), seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand((n, *shape), generator=g) > 0.6).float()


def test_importance_sampled_log_px_exceeds_elbo_and_grows_with_k():
    model = tiny_model()
    x = _binary_batch()
    torch.manual_seed(0)
    with torch.no_grad():
        # Mean ELBO over many samples, so the comparison is not decided by noise.
        bound = torch.stack([elbo(model, x).elbo for _ in range(200)]).mean(0)
        estimates = {
            k: importance_sampled_log_px(model, x, k).mean().item() for k in (1, 10, 100, 1000)
        }
    assert abs(estimates[1] - bound.mean().item()) < 0.5  # K=1 is a one-sample ELBO
    assert estimates[10] > bound.mean().item()
    assert estimates[1] < estimates[10] < estimates[100] < estimates[1000]


def test_an_examples_estimate_depends_on_the_example_alone():
    """With per-example noise, log p(x) of an image is the same whatever the batch around it,
    its position, and however K is split into chunks (float64 model: exact up to rounding)."""
    model = tiny_model().double()
    x = _binary_batch(12).double()
    k = 200
    whole = importance_sampled_log_px(model, x, k, noise=ExampleNoise(x), max_batch=100_000)
    # max_batch=64 forces chunks of one block and sub-batches of one image
    split = importance_sampled_log_px(model, x, k, noise=ExampleNoise(x), max_batch=64)
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    moved = importance_sampled_log_px(model, x[perm], k, noise=ExampleNoise(x[perm]))
    alone = importance_sampled_log_px(model, x[3:4], k, noise=ExampleNoise(x[3:4]))
    torch.testing.assert_close(split, whole, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(moved, whole[perm], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(alone, whole[3:4], rtol=1e-12, atol=1e-12)
    # and the noise is real: another seed gives another estimate
    other = importance_sampled_log_px(model, x, k, noise=ExampleNoise(x, seed=1))
    assert (other - whole).abs().max() > 1e-4


def _exact_log_px_1d(model, x, grid=20001, limit=12.0):
    """log of the integral of p(x|z) p(z) over a 1-D latent by the trapezoid rule."""
    z = torch.linspace(-limit, limit, grid).view(-1, 1)
    with torch.no_grad():
        log_joint = torch.stack(
            [model.decode(z).log_prob(xi.expand(grid, *xi.shape)) for xi in x], 1
        ) + model.prior_distribution().log_prob(z).view(-1, 1)
    dz = z[1, 0] - z[0, 0]
    w = torch.full((grid, 1), math.log(dz))
    w[0] = w[-1] = math.log(dz / 2)
    return torch.logsumexp(log_joint.double() + w.double(), 0)


def test_importance_sampling_converges_to_quadrature():
    model = tiny_model(latent_dim=1, shape=(1, 3, 3), hidden=(16,), seed=4)
    x = _binary_batch(6, (1, 3, 3), seed=1)
    exact = _exact_log_px_1d(model, x)
    torch.manual_seed(5)
    with torch.no_grad():
        est = importance_sampled_log_px(model, x, 50_000).double()
        elbo_mean = torch.stack([elbo(model, x).elbo for _ in range(500)]).mean(0).double()
    assert (est - exact).abs().max() < 0.02, (est, exact)
    assert (elbo_mean <= exact + 1e-3).all()  # Jensen: the ELBO never exceeds log p(x)


def test_iwae_bound_between_elbo_and_exact():
    model = tiny_model(latent_dim=1, shape=(1, 3, 3), hidden=(16,), seed=6)
    x = _binary_batch(6, (1, 3, 3), seed=2)
    exact = _exact_log_px_1d(model, x)
    torch.manual_seed(7)
    with torch.no_grad():
        iw5 = torch.stack([iwae_bound(model, x, 5) for _ in range(400)]).mean(0).double()
        e1 = torch.stack([elbo(model, x).elbo for _ in range(400)]).mean(0).double()
    assert (iw5 >= e1 - 0.02).all() and (iw5 <= exact + 0.02).all()


def test_elbo_gradient_is_unbiased_against_quadrature():
    """vaekit's reparameterised ELBO gradient, averaged over many samples, matches the gradient
    of the exact ELBO of a 1-D-latent model computed by quadrature (E_q[log p(x|z)] on a grid,
    analytic KL): a wrong reparameterisation or KL would move it far off."""
    model = tiny_model(latent_dim=1, shape=(1, 3, 3), hidden=(16,), seed=4).double()
    x = _binary_batch(1, (1, 3, 3), seed=1).double()
    params = [p for p in model.parameters() if p.requires_grad]
    q = model.encode(x)
    z = torch.linspace(-10, 10, 8001, dtype=torch.float64).view(-1, 1)
    dz = z[1, 0] - z[0, 0]
    qz = q.log_prob(z.view(-1, 1, 1)).exp().view(-1)  # q(z|x) on the grid
    rec = model.decode(z).log_prob(x.expand(len(z), -1, -1, -1))
    exact = (qz * rec).sum() * dz - elbo(model, x).kl.sum()
    g_exact = torch.autograd.grad(exact, params)
    torch.manual_seed(0)
    g_mc = torch.autograd.grad(elbo(model, x.expand(200_000, -1, -1, -1)).elbo.mean(), params)
    a, b = torch.cat([g.flatten() for g in g_exact]), torch.cat([g.flatten() for g in g_mc])
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.999
    assert (b.norm() / a.norm() - 1).abs() < 0.02


def test_free_bits_and_beta_change_loss_not_elbo():
    model = tiny_model()
    x = _binary_batch(16)
    torch.manual_seed(0)
    base = elbo(model, x)
    torch.manual_seed(0)
    fb = elbo(model, x, free_bits=5.0)
    torch.manual_seed(0)
    b0 = elbo(model, x, beta=0.0)
    assert torch.equal(base.elbo, fb.elbo)
    assert fb.loss > base.loss  # KL clamped up to 5 nats per dim counts more
    assert torch.allclose(b0.loss, -base.reconstruction.mean())


def test_decoding_k_samples_broadcasts_like_one_at_a_time():
    """decode(z) for z (K, B, D) scores images (B, ...) for every sample, as K separate
    decodes would, for each likelihood (no K-fold copy of the images is made)."""
    import pytest

    for pixels, x in [
        ("static-binary", (torch.rand(5, 1, 6, 6) < 0.4).float()),
        ("continuous", torch.rand(5, 1, 6, 6)),
        ("8bit", torch.randint(0, 256, (5, 1, 6, 6)).float()),
    ]:
        model = tiny_model(pixels)
        z = torch.randn(3, 5, model.latent_dim)
        joint = model.decode(z).log_prob(x)
        assert joint.shape == (3, 5)
        single = torch.stack([model.decode(z[i]).log_prob(x) for i in range(3)])
        assert torch.allclose(joint, single, rtol=1e-5, atol=1e-4), pixels
        assert joint.std() > 0  # distinct samples give distinct likelihoods
    with pytest.raises(RuntimeError):
        model.decode(z).log_prob(x[:4])  # images must match the batch
