"""The top-down hierarchical VAE: bounds, exact likelihood on a tiny model, every use."""

import json
import math

import numpy as np
import pytest
import torch

from tests.conftest import synthetic_digits, tiny_config
from vaekit.checkpoint import load_checkpoint
from vaekit.coding.files import compress, decompress
from vaekit.config import Config, ModelConfig, validate
from vaekit.errors import VaekitError
from vaekit.evaluation import evaluate
from vaekit.models import HierarchicalVAE, build_model
from vaekit.objectives import elbo, importance_sampled_log_px
from vaekit.training import train


def hvae(
    pixels="static-binary",
    groups=(2, 3, 4),
    shape=(1, 6, 6),
    width=16,
    seed=0,
    noise=0.3,
    prior="standard-normal",
):
    torch.manual_seed(seed)
    cfg = ModelConfig(
        family="hvae",
        pixels=pixels,
        latent_groups=list(groups),
        group_width=width,
        hidden=[32],
        image_shape=list(shape),
        n_mix=2,
        prior=prior,
        prior_components=7,
    )
    model = HierarchicalVAE(cfg).eval()
    with torch.no_grad():  # away from q = p, so that every term is exercised
        for p in model.parameters():
            p.add_(noise * torch.randn_like(p))
    return model


def binary_images(n=32, shape=(1, 6, 6), seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, *shape, generator=g) < 0.3).float()


def test_kl_per_group_is_nonnegative_and_sums_to_the_total():
    model = hvae()
    terms = elbo(model, binary_images())
    assert len(terms.groups) == 3
    for g, d in zip(terms.groups, (2, 3, 4), strict=True):
        assert g.z.shape[-1] == d and (g.kl >= 0).all() and g.kl_per_dim.shape[-1] == d
        assert torch.allclose(g.kl_per_dim.sum(-1), g.kl, atol=1e-5)
        assert (g.kl_per_dim >= -1e-6).all()
    assert torch.allclose(terms.kl, sum(g.kl for g in terms.groups))


def test_analytic_kl_of_a_lower_group_matches_monte_carlo():
    """The lower groups' KL is analytic given the sample above; its MC estimate agrees."""
    model = hvae()
    x = binary_images(1).expand(20000, -1, -1, -1)
    terms = elbo(model, x)
    g = terms.groups[1]
    mc = (g.q.log_prob(g.z) - g.p.log_prob(g.z)).mean()
    kl = float(g.kl.mean().detach())
    assert float(mc.detach()) == pytest.approx(kl, abs=0.05 + 0.02 * kl)


def test_elbo_below_importance_sampled_log_px_and_gap_shrinks_with_k():
    model = hvae()
    x = binary_images(64)
    torch.manual_seed(1)
    bound = elbo(model, x).elbo.mean()
    estimates = [float(importance_sampled_log_px(model, x, k).mean()) for k in (1, 10, 200)]
    assert bound <= estimates[-1]
    assert estimates[0] < estimates[1] < estimates[2]


def test_importance_sampled_log_px_agrees_with_quadrature():
    """Two one-dimensional groups over 2x2 binary images: p(x) by a 2-D quadrature over
    (z_top, z_bottom | z_top) equals the IS estimate, and sums to 1 over all 16 images."""
    model = hvae(groups=(1, 1), shape=(1, 2, 2), width=8, noise=0.1)
    with torch.no_grad():  # q twice as wide as it was: a proposal with light-tailed weights
        for net in model.posterior_nets:
            net[-1].bias[1:] += math.log(2.0)
    u = torch.linspace(-9, 9, 721, dtype=torch.float64)
    du = u[1] - u[0]
    log_w = -0.5 * u**2 - 0.5 * math.log(2 * math.pi) + du.log()  # N(0,1) mass per node
    with torch.no_grad():
        top = u.float()[:, None]  # (T, 1): z_top on the standard-normal prior's grid
        p_low = model.coding_prior([top])  # p(z_bottom | z_top), batch (T,)
        low = p_low.mean[:, None, :] + p_low.stddev[:, None, :] * u.float()[None, :, None]
        z = torch.cat([top[:, None, :].expand(-1, len(u), -1), low], -1)  # (T, U, 2)
        images = torch.tensor(
            [[(i >> b) & 1 for b in range(4)] for i in range(16)], dtype=torch.float32
        ).view(16, 1, 2, 2)
        dist = model.decode(z.reshape(-1, 2))
        log_lik = (
            torch.stack(
                [dist.log_prob(x.expand(len(z.reshape(-1, 2)), -1, -1, -1)) for x in images]
            )
            .double()
            .view(16, len(u), len(u))
        )
        exact = torch.logsumexp(log_lik + log_w[None, :, None] + log_w[None, None, :], (1, 2))
        assert float(torch.logsumexp(exact, 0)) == pytest.approx(0.0, abs=1e-4)
        torch.manual_seed(0)
        estimate = importance_sampled_log_px(model, images, 20_000).double()
        torch.manual_seed(0)
        lw, _ = model.log_weights(images, 20_000, posterior_groups=0)  # proposal: the prior
        from_prior = torch.logsumexp(lw.double(), 0) - math.log(20_000)
    assert torch.allclose(estimate, exact, atol=0.03), (estimate - exact).abs().max()
    assert torch.allclose(from_prior, exact, atol=0.01), (from_prior - exact).abs().max()


def test_vampprior_on_the_top_group_is_a_proper_prior():
    """A VampPrior over the top group: its density is the mean of the pseudo-inputs' top
    posteriors; IS log p(x) with q as proposal agrees with sampling the prior itself; the
    ELBO stays below both; and the pseudo-inputs learn."""
    torch.manual_seed(0)
    cfg = ModelConfig(
        family="hvae", latent_groups=[1, 1], group_width=8, hidden=[16],
        image_shape=[1, 2, 2], prior="vamp", prior_components=3,
    )  # fmt: skip
    model = HierarchicalVAE(cfg).double()
    with torch.no_grad():
        model.prior.pseudo_inputs.uniform_(0, 1)
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    z = torch.randn(50, 1, dtype=torch.float64)
    q = model.posterior_of_inputs(model.prior.inputs())
    by_hand = torch.logsumexp(q.log_prob(z[:, None, :]), 1) - math.log(3)
    prior, _ = model._prior(0, model._start((1,)))
    assert torch.allclose(prior.log_prob(z), by_hand)
    images = torch.tensor(
        [[(i >> b) & 1 for b in range(4)] for i in range(16)], dtype=torch.float64
    ).view(16, 1, 2, 2)
    torch.manual_seed(1)
    with torch.no_grad():
        estimate = importance_sampled_log_px(model, images, 20_000)
        lw, _ = model.log_weights(images, 20_000, posterior_groups=0)
        # the expected ELBO: the top group's KL is a one-sample Monte-Carlo estimate
        bound = elbo(model, images.repeat(4000, 1, 1, 1)).elbo.view(4000, 16).mean(0)
    from_prior = torch.logsumexp(lw, 0) - math.log(20_000)
    assert float(torch.logsumexp(from_prior, 0)) == pytest.approx(0.0, abs=0.01)
    assert torch.allclose(estimate, from_prior, atol=0.03), (estimate - from_prior).abs().max()
    assert (bound < estimate).all()
    loss = -elbo(model, images).elbo.mean()
    loss.backward()
    assert model.prior.pseudo_inputs.grad.abs().sum() > 0


def test_temperature_per_group():
    model = hvae()
    with pytest.raises(ValueError, match="3 latent groups"):
        model.sample_latents(2, [1.0, 1.0])
    a, b = model.sample_latents(4, [0.0, 0.0, 0.0]), model.sample_latents(4, 0.0)
    assert torch.equal(a, b) and torch.equal(a[0], a[3])  # all means: one deterministic draw
    torch.manual_seed(0)
    only_bottom = model.sample_latents(256, [0.0, 0.0, 1.0])
    assert torch.equal(only_bottom[:, :5], only_bottom[:1, :5].expand(256, -1))
    assert only_bottom[:, 5:].std(0).min() > 0.01
    with pytest.raises(ValueError, match="finite"):
        model.sample_latents(2, [1.0, float("nan"), 1.0])


def test_decode_of_posterior_means_reconstructs_through_the_interface():
    model = hvae()
    x = binary_images(5)
    z = model.posterior_means(x)
    assert z.shape == (5, 9)
    assert model.reconstruct(x).shape == x.shape and model.generate(3).shape == (3, 1, 6, 6)
    lw, rec = model.log_weights(x, 7)
    assert lw.shape == rec.shape == (7, 5)


def test_top_level_likelihood_is_a_proper_bound_of_its_own():
    """With q for the top j groups and the prior below, the weights estimate p_{>j}(x):
    for j = all groups they are the full model's, and every estimate is finite."""
    model = hvae()
    x = binary_images(16)
    torch.manual_seed(0)
    full, _ = model.log_weights(x, 50)
    torch.manual_seed(0)
    also_full, _ = model.log_weights(x, 50, posterior_groups=3)
    assert torch.equal(full, also_full)
    for j in (0, 1, 2):
        lw, _ = model.log_weights(x, 50, posterior_groups=j)
        assert torch.isfinite(lw).all()


def test_config_needs_groups_and_a_prior_the_family_can_build():
    with pytest.raises(VaekitError, match="latent_groups"):
        validate(Config(ModelConfig(family="hvae")))
    with pytest.raises(VaekitError, match="cannot be 'vamp'"):  # no encoder for its top level
        validate(Config(ModelConfig(family="bitswap", latent_groups=[4], prior="vamp")))
    validate(Config(ModelConfig(family="hvae", latent_groups=[4], prior="vamp")))
    with pytest.raises(VaekitError, match="latent_groups"):
        validate(Config(ModelConfig(family="hvae", latent_groups=[4, 0])))
    validate(Config(ModelConfig(family="hvae", latent_groups=[4], prior="mog")))


@pytest.mark.parametrize(
    "pixels, prior",
    [("static-binary", "standard-normal"), ("8bit", "standard-normal"), ("static-binary", "vamp")],
)
def test_bits_back_round_trip_is_exact(pixels, prior):
    shape = (1, 6, 6)
    model = hvae(pixels=pixels, shape=shape, prior=prior)
    rng = np.random.default_rng(0)
    if pixels == "8bit":
        images = rng.integers(0, 256, (40, *shape), dtype=np.uint8)
    else:
        images = (rng.random((40, *shape)) < 0.3).astype(np.uint8)
    for particles in (1, 4) if prior == "vamp" else (1,):
        data = compress(model, images, particles=particles)
        assert np.array_equal(decompress(model, data), images)


def test_every_use_from_a_trained_run(tmp_path, npy_data):
    cfg = tiny_config(npy_data, epochs=2)
    cfg.model.family, cfg.model.latent_groups, cfg.model.group_width = "hvae", [2, 4], 16
    cfg.train.grad_skip = 1e6
    run = train(cfg, tmp_path / "run", progress=False)
    model, cfg, _ = load_checkpoint(run)
    assert isinstance(model, HierarchicalVAE) and model.group_dims == [2, 4]
    values = torch.from_numpy(synthetic_digits(50))[:, None].float() / 255
    res = evaluate(model, (values > 0.5).float(), k=20, batch_size=25)
    assert [g["dims"] for g in res["groups"]] == [2, 4]
    assert res["elbo"] <= res["log_px"] + 1e-6
    assert build_model(cfg.model).group_dims == [2, 4]


def test_level_ratio_score_from_the_top_levels():
    """The level-ratio score is surprise minus the top levels' surprise, example by example,
    and a one-layer model refuses it with a clear message."""
    from tests.conftest import tiny_model
    from vaekit.anomaly.scores import all_scores, anomaly_scores

    model = hvae()
    images = (binary_images(12) * 255).to(torch.uint8)
    scores = all_scores(model, images, k=64, complexity=False)
    again = anomaly_scores(model, images[:5], "level-ratio", k=64)
    assert np.allclose(scores["level-ratio"][:5], again)  # an example's score is its own
    terms_top = all_scores(model, images, k=64, complexity=False, levels=False)
    assert "level-ratio" not in terms_top
    with pytest.raises(VaekitError, match="hierarchical"):
        anomaly_scores(tiny_model(), images, "level-ratio", k=8)


@pytest.mark.parametrize("pixels", ["static-binary", "8bit"])
@pytest.mark.parametrize("family", ["vae", "hvae"])
def test_importance_weighted_bits_back_round_trip_is_exact(pixels, family):
    from tests.conftest import tiny_model
    from vaekit.coding.files import read_header

    shape = (1, 6, 6)
    model = hvae(pixels, shape=shape) if family == "hvae" else tiny_model(pixels, shape=shape)
    rng = np.random.default_rng(3)
    if pixels == "8bit":
        images = rng.integers(0, 256, (25, *shape), dtype=np.uint8)
    else:
        images = (rng.random((25, *shape)) < 0.3).astype(np.uint8)
    for arithmetic in ("float", "exact-1"):
        data = compress(model, images, particles=4, arithmetic=arithmetic)
        header, _ = read_header(data)
        assert header["plan"].particles == 4 and data[4] == 6
        assert header["plan"].arithmetic == arithmetic
        assert np.array_equal(decompress(model, data), images)


@pytest.mark.parametrize("family", ["vae", "hvae", "hvae-conv"])
def test_a_posterior_for_particles_is_the_posterior_of_repeated_images(family):
    """`coding_posterior(x, upper, K)` runs the encoder once per image; under exact
    arithmetic its K x B rows are, bit for bit, those of x repeated K times."""
    from tests.conftest import tiny_model
    from vaekit.coding.exact_arithmetic import ExactArithmetic, exact_copy

    shape = (1, 8, 8)
    torch.manual_seed(4)
    if family == "vae":
        model = tiny_model("8bit", shape=shape)
    else:
        model = hvae("8bit", shape=shape)
        if family == "hvae-conv":
            cfg = model.config
            cfg.arch, cfg.channels, cfg.blocks, cfg.feature_norm = "conv", 4, 1, True
            model = build_model(cfg).eval()
    twin, k = exact_copy(model), 3
    x = torch.randint(0, 256, (5, *shape), generator=torch.Generator().manual_seed(6)).float()
    upper = []
    with torch.no_grad(), ExactArithmetic():
        for _ in model.group_dims:
            once = twin.coding_posterior(x, upper, k)
            repeated = twin.coding_posterior(x.repeat(k, 1, 1, 1), upper)
            assert once.mean.shape[0] == k * len(x)
            for a, b in ((once.mean, repeated.mean), (once.stddev, repeated.stddev)):
                assert a.double().sub(b.double()).abs().max().item() == 0.0
            upper.append(once.mean + once.stddev)


def test_importance_weighted_coding_runs_each_network_once_per_row(monkeypatch):
    """Exact importance-weighted coding takes the rows it codes under from the outputs on all
    K x B rows: encoding runs the decoder once per particle and the encoder once per image
    (its work on x is the same for every particle); decoding runs the encoder once per image
    and the decoder once per particle, plus once more for the chosen particle (popped before
    the others exist)."""
    from vaekit.coding.files import read_header

    model = hvae("8bit", shape=(1, 6, 6))
    images = np.random.default_rng(5).integers(0, 256, (60, 1, 6, 6), dtype=np.uint8)
    rows = {"decoder": 0, "encoder": 0}

    def counting(name, method):
        def run(self, t, *args):
            rows[name] += t.shape[0]
            return method(self, t, *args)

        return run

    monkeypatch.setattr(
        HierarchicalVAE, "decode_params", counting("decoder", HierarchicalVAE.decode_params)
    )
    monkeypatch.setattr(
        HierarchicalVAE, "bottom_up", counting("encoder", HierarchicalVAE.bottom_up)
    )
    data = compress(model, images, particles=4)
    plan = read_header(data)[0]["plan"]
    batches = list(zip(plan.batch_particles(), plan.sizes, strict=True))
    particles = sum(k * b for k, b in batches)
    assert max(plan.batch_particles()) == 4 and particles > 3 * len(images)
    assert rows == {"decoder": particles, "encoder": len(images)}
    rows.update(decoder=0, encoder=0)
    assert np.array_equal(decompress(model, data), images)
    chosen = sum(b for k, b in batches if k > 1)
    assert rows == {"decoder": particles + chosen, "encoder": len(images)}


def test_importance_weighted_particles_grow_with_the_stack():
    """The initial words cover one particle whatever K is (a file's fixed cost does not grow
    with K); the particles per batch rise from 1 to K before the batches grow."""
    from vaekit.coding.files import read_header

    model = hvae("static-binary", groups=(2, 2), shape=(1, 6, 6))
    images = (binary_images(200, shape=(1, 6, 6)) > 0).numpy().astype(np.uint8)
    plans = {k: read_header(compress(model, images, particles=k))[0]["plan"] for k in (1, 8)}
    assert plans[8].init_words == plans[1].init_words
    ramp, sizes = plans[8].batch_particles(), plans[8].sizes
    assert ramp[0] == 1 and ramp[-1] == 8 and ramp == sorted(ramp)
    assert all(b == 1 for b, k in zip(sizes, ramp, strict=True) if k < 8)
    assert max(sizes) > 1


def test_importance_weighted_bits_back_codes_below_the_elbo():
    """With K particles the rate approaches -log of the K-sample bound, below -ELBO: on a
    model whose posterior is far from exact the gain is large and clear of coding noise."""
    from vaekit.coding.files import read_header

    model = hvae("static-binary", groups=(2, 2), shape=(1, 6, 6), noise=0.3)
    images = (binary_images(300, shape=(1, 6, 6)) > 0).numpy().astype(np.uint8)

    def bits(k):
        return 32 * len(read_header(compress(model, images, particles=k))[1])

    plain, weighted = bits(1), bits(8)
    x = torch.from_numpy(images).float()
    torch.manual_seed(0)
    with torch.no_grad():
        log_px = float((torch.logsumexp(model.log_weights(x, 2000)[0], 0) - math.log(2000)).sum())
    assert weighted < plain - 100, (plain, weighted)
    # no code beats -log p(x) (here estimated with K=2000); the K=8 bound itself is no floor
    # for a code of quantized, windowed latents, whose cost per latent is bounded
    assert weighted > -0.98 * log_px / math.log(2), (weighted, -log_px / math.log(2))


def test_a_new_user_runs_every_command_on_a_hierarchy(tmp_path, npy_data):
    """train, evaluate (KL per group), sample with a temperature per group, compress and
    decompress, score with the level ratio: the README's hierarchy commands, on tiny data."""
    from click.testing import CliRunner

    from vaekit.cli import main

    run, cli = tmp_path / "run", CliRunner()
    overrides = [
        "--set", "model.family=hvae", "--set", "model.latent_groups=[2,3]",
        "--set", "model.group_width=16", "--set", "model.hidden=[32]", "--set", "train.epochs=2",
    ]  # fmt: skip
    res = cli.invoke(main, ["train", "--data", str(npy_data), "--out", str(run), *overrides])
    assert res.exit_code == 0, res.output
    res = cli.invoke(main, ["evaluate", str(run), "--k", "10", "--json"])
    assert res.exit_code == 0, res.output
    groups = json.loads(res.output[res.output.index("{") :])["groups"]
    assert [g["dims"] for g in groups] == [2, 3] and all(g["kl"] >= 0 for g in groups)
    out = tmp_path / "s.png"
    res = cli.invoke(main, ["sample", str(run), "--temperature", "1,0.5", "--out", str(out)])
    assert res.exit_code == 0 and out.exists(), res.output
    res = cli.invoke(main, ["sample", str(run), "--temperature", "1,0.5,0.2"])
    assert res.exit_code != 0 and "2 latent groups" in res.output
    images = np.where(synthetic_digits(20) > 127, 255, 0).astype(np.uint8)  # binary pixels
    np.save(tmp_path / "x.npy", images)
    vkz = tmp_path / "x.vkz"
    res = cli.invoke(main, ["compress", str(run), str(tmp_path / "x.npy"), "-o", str(vkz)])
    assert res.exit_code == 0 and "payload by" in res.output, res.output
    res = cli.invoke(main, ["decompress", str(run), str(vkz), "-o", str(tmp_path / "y.npy")])
    assert res.exit_code == 0, res.output
    assert np.array_equal(np.load(tmp_path / "y.npy"), images)
    csv = tmp_path / "scores.csv"
    args = ["score", str(run), str(tmp_path / "x.npy"), "--score", "level-ratio", "--k", "8"]
    res = cli.invoke(main, [*args, "--out", str(csv)])
    assert res.exit_code == 0 and "level-ratio" in res.output, res.output
    assert len(csv.read_text().splitlines()) == 21
