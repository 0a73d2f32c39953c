"""The subset estimator of a whole test set's log p(x) (evaluation.subset_mean)."""

import math

import pytest
import torch

from vaekit.evaluation import subset_mean


def _population(n: int = 2000, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    elbo = -90.0 + 5.0 * torch.randn(n, generator=g, dtype=torch.float64)
    gap = 3.0 + 1.0 * torch.randn(n, generator=g, dtype=torch.float64)
    return elbo, elbo + gap


def test_a_constant_gap_gives_the_exact_mean_with_no_error():
    elbo, _ = _population()
    log_px = elbo + 2.5
    idx = torch.randperm(elbo.numel(), generator=torch.Generator().manual_seed(1))[:30]
    est, err = subset_mean(elbo, idx, log_px[idx])
    assert est == pytest.approx(log_px.mean().item(), abs=1e-9)
    assert err == pytest.approx(0.0, abs=1e-9)


def test_the_whole_set_as_subset_is_the_plain_mean():
    elbo, log_px = _population(200)
    idx = torch.randperm(200, generator=torch.Generator().manual_seed(2))
    est, err = subset_mean(elbo, idx, log_px[idx])
    assert est == pytest.approx(log_px.mean().item(), abs=1e-9)
    assert err == 0.0


def test_unbiased_with_an_honest_error_and_tighter_than_the_subset_alone():
    elbo, log_px = _population()
    truth = log_px.mean().item()
    g = torch.Generator().manual_seed(3)
    ests, errs, plain = [], [], []
    for _ in range(400):
        idx = torch.randperm(elbo.numel(), generator=g)[:50]
        est, err = subset_mean(elbo, idx, log_px[idx])
        ests.append(est)
        errs.append(err)
        plain.append(log_px[idx].mean().item())
    ests_t = torch.tensor(ests)
    spread = ests_t.std().item()
    # unbiased: the mean of 400 estimates sits within 4 of its standard errors of the truth
    assert abs(ests_t.mean().item() - truth) < 4 * spread / math.sqrt(len(ests))
    # the reported error matches the estimates' real spread
    assert 0.8 < sum(errs) / len(errs) / spread < 1.2
    # the gap varies 5x less than log p(x) here: the plain subset mean spreads far more
    assert torch.tensor(plain).std().item() > 3 * spread


@pytest.mark.parametrize(
    "idx, n_target",
    [([0, 0, 1], 3), ([0, 5000], 2), ([-1, 2], 2), ([0, 1], 3), ([], 0)],
)
def test_a_bad_subset_is_refused(idx, n_target):
    elbo, log_px = _population(100)
    with pytest.raises(ValueError):
        subset_mean(elbo, torch.tensor(idx, dtype=torch.long), torch.zeros(n_target))


def _tiny_hierarchy(tmp_path, npy_data):
    from tests.conftest import tiny_config
    from vaekit.checkpoint import load_checkpoint
    from vaekit.data.splits import load_splits
    from vaekit.training import train

    cfg = tiny_config(npy_data, epochs=1)
    cfg.model.family, cfg.model.latent_groups, cfg.model.group_width = "hvae", [2, 4], 16
    model, cfg, _ = load_checkpoint(train(cfg, tmp_path / "run", progress=False))
    return model, load_splits(cfg, torch.device("cpu")).test


@pytest.mark.parametrize("control_k", [0, 8])
def test_a_sample_of_every_image_gives_evaluates_log_px(tmp_path, npy_data, control_k):
    from vaekit.evaluation import evaluate, evaluate_sampled

    model, test = _tiny_hierarchy(tmp_path, npy_data)
    full = evaluate(model, test, k=30)
    res = evaluate_sampled(
        model, test, k=30, sample=len(test), control_samples=3, control_k=control_k
    )
    # the whole set as the sample: the K=30 evaluation exactly, whatever the control
    assert res["log_px"] == pytest.approx(full["log_px"], abs=1e-9)
    assert res["log_px_stderr"] == pytest.approx(0.0, abs=1e-12)
    assert res["jensen_gap"] == pytest.approx(res["log_px"] - res["elbo"])
    # everything but log p(x) is the evaluation with the control's samples (K=0: one sample)
    plain = evaluate(model, test, k=control_k)
    assert res["elbo"] == pytest.approx(plain["elbo"], abs=1e-12)
    assert [g["kl"] for g in res["groups"]] == pytest.approx([g["kl"] for g in plain["groups"]])
    if control_k:
        assert f"IS log p(x) with K={control_k}" in res["estimators"]["log_px"]


def test_a_random_sample_estimates_log_px_within_its_error(tmp_path, npy_data):
    from vaekit.evaluation import evaluate, evaluate_sampled

    model, test = _tiny_hierarchy(tmp_path, npy_data)
    full = evaluate(model, test, k=30)
    for seed in range(3):
        res = evaluate_sampled(model, test, k=30, sample=12, sample_seed=seed)
        idx = res["sampled"]["index"]
        assert len(set(idx)) == 12 and idx == sorted(idx)
        assert res["log_px_stderr"] > 0
        assert abs(res["log_px"] - full["log_px"]) < 4 * res["log_px_stderr"]
        assert "12 images drawn at random" in res["estimators"]["log_px"]
        # the per-image record reproduces the estimate from the sampled gaps alone
        s = res["sampled"]
        per_image = {k: torch.tensor(s[k], dtype=torch.float64) for k in s if "per_image" in k}
        gaps = per_image["log_px_per_image"] - per_image["control_per_image"]
        assert len(gaps) == 12
        assert s["control"] + gaps.mean().item() == pytest.approx(res["log_px"], abs=1e-9)
    with pytest.raises(ValueError):
        evaluate_sampled(model, test, k=30, sample=1)
    for control_k in (-1, 30):
        with pytest.raises(ValueError):
            evaluate_sampled(model, test, k=30, sample=12, control_k=control_k)


def test_an_importance_sampled_control_estimates_log_px_with_less_spread(tmp_path, npy_data):
    from vaekit.evaluation import evaluate, evaluate_sampled

    model, test = _tiny_hierarchy(tmp_path, npy_data)
    full = evaluate(model, test, k=30)
    for seed in range(3):
        is_ctl = evaluate_sampled(model, test, k=30, sample=12, sample_seed=seed, control_k=8)
        elbo_ctl = evaluate_sampled(model, test, k=30, sample=12, sample_seed=seed)
        assert abs(is_ctl["log_px"] - full["log_px"]) < 4 * is_ctl["log_px_stderr"]
        # IS with 8 samples follows IS with 30 more closely than ELBOs do: a smaller error
        assert is_ctl["sampled"]["difference_sd"] < elbo_ctl["sampled"]["difference_sd"]
        assert is_ctl["log_px_stderr"] < elbo_ctl["log_px_stderr"]
