"""Calibrated two-sided tail probabilities and the combined anomaly score."""

import math

import numpy as np
import pytest
from scipy.stats import norm

from tests.conftest import synthetic_digits
from vaekit import AnomalyDetector
from vaekit.anomaly.calibration import (
    combined_score,
    fisher_statistic,
    fit_reference,
    log_p,
    z_scores,
)
from vaekit.errors import VaekitError


def test_p_values_are_calibrated_for_skewed_scores_and_flag_both_tails():
    """Likelihood scores are skewed: the quantile-normal transform makes p uniform under normal
    data whatever the shape, where a normal fit would not."""
    rng = np.random.default_rng(1)
    ref = fit_reference({"s": rng.gamma(2.0, 3.0, 20_000)})["kinds"]["s"]
    fresh = rng.gamma(2.0, 3.0, 200_000)
    p = np.exp(log_p(fresh, ref))
    for level in (0.01, 0.05, 0.2, 0.5):
        assert np.mean(p < level) == pytest.approx(level, rel=0.1)
    z = z_scores(fresh, ref)
    assert np.mean(z) == pytest.approx(0.0, abs=0.02) and np.std(z) == pytest.approx(1, abs=0.03)
    # the gamma's long right tail: a normal fit by mean and s.d. flags far more than 1%
    naive = 2 * norm.sf(np.abs((fresh - fresh.mean()) / fresh.std()))
    assert np.mean(naive < 0.01) > 0.015


def test_tails_continue_beyond_the_reference_and_still_rank():
    rng = np.random.default_rng(2)
    ref = fit_reference({"s": rng.normal(5.0, 2.0, 50_000)})["kinds"]["s"]
    x = np.array([-200.0, -20.0, -5.0, 5.0, 15.0, 30.0, 300.0])
    z = z_scores(x, ref)
    assert np.all(np.diff(z) > 0)  # monotone, no ties past the reference's extremes
    assert z[2] == pytest.approx(-5.0, abs=0.15) and z[4] == pytest.approx(5.0, abs=0.15)
    far = log_p(np.array([-200.0, 300.0]), ref)
    assert np.all(np.isfinite(far)) and far[1] < far[0] < -1000
    assert np.exp(log_p(np.array([5.0]), ref))[0] == pytest.approx(1.0, abs=0.02)
    assert z_scores(np.array([np.nan]), ref)[0] == np.inf  # NaN is as anomalous as it gets


def test_tied_scores_and_old_references():
    ref = fit_reference({"s": np.r_[np.zeros(900), np.ones(100)]})["kinds"]["s"]
    assert np.all(np.diff(ref) > 0) and np.all(np.isfinite(z_scores(np.array([0.0, 1.0]), ref)))
    # a vaekit 0.4 reference, (median, robust scale), reads as that normal fit
    assert z_scores(np.array([7.0]), [3.0, 2.0])[0] == pytest.approx(2.0)


def test_combined_score_is_fishers_statistic_calibrated_on_the_reference():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, 20_000), rng.gamma(3.0, 1.0, 20_000)
    b = b + 0.5 * a  # dependent kinds: the chi-square law of Fisher's statistic fails
    ref = fit_reference({"a": a, "b": b}, upper=("b",))
    assert ref["upper"] == ["b"]
    scores = {"a": np.array([0.0, 3.0, -3.0, 0.1]), "b": np.array([3.0, 3.0, 3.0, 12.0])}
    stat = fisher_statistic(scores, ref)
    la = log_p(scores["a"], ref["kinds"]["a"])
    lb = log_p(scores["b"], ref["kinds"]["b"], upper=True)
    assert np.allclose(stat, -2 * (la + lb))
    got = combined_score(scores, ref)
    assert np.all(np.argsort(got) == np.argsort(stat))  # a monotone map of the statistic
    assert got[1] > 3 and got[2] > 3 and got[3] > 3  # both tails of a, the upper tail of b
    # a low b is normal for an upper-tailed kind, a low a is not
    assert combined_score({"a": np.array([0.0]), "b": np.array([-5.0])}, ref)[0] < 1.5
    # calibrated under normal data whatever the dependence: p uniform
    a2, b2 = rng.normal(0, 1, 50_000), rng.gamma(3.0, 1.0, 50_000)
    p = 2.0 ** -combined_score({"a": a2, "b": b2 + 0.5 * a2}, ref)
    for level in (0.01, 0.05, 0.2):
        assert np.mean(p < level) == pytest.approx(level, rel=0.2)
    with pytest.raises(ValueError):
        combined_score({"c": np.zeros(2)}, ref)
    with pytest.raises(VaekitError, match="method 'views-9'.*newer version"):
        combined_score(scores, {**ref, "method": "views-9"})
    assert math.isfinite(combined_score({"a": np.array([1e6]), "b": np.array([1.0])}, ref)[0])


def test_views_combine_by_their_smallest_calibrated_p_value():
    """Fisher's method within each view, the smallest view p-value across them, calibrated on
    the reference; kinds the scores lack are left out, and so are views left empty."""
    rng = np.random.default_rng(4)
    n = 20_000
    a1 = rng.normal(0, 1, n)
    normal = {"a1": a1, "a2": 0.6 * a1 + rng.normal(0, 1, n), "b": rng.gamma(3.0, 1.0, n)}
    views = (("a1", "a2", "missing"), ("b",), ("absent",))
    ref = fit_reference(normal, upper=("b",), views=views)
    assert ref["method"] == "views-1" and len(ref["views"]) == 2
    assert set(ref["views"][0]["kinds"]) == {"a1", "a2"} and ref["views"][1]["upper"] == ["b"]
    x = {k: rng.permutation(v)[:500] + rng.normal(0, 2, 500) for k, v in normal.items()}
    got = combined_score(x, ref)
    per_view = np.max([combined_score(x, v) for v in ref["views"]], axis=0)
    assert np.all(np.argsort(got) == np.argsort(per_view))  # a monotone map of the smallest p
    fresh = {"a1": (a := rng.normal(0, 1, 50_000)), "a2": 0.6 * a + rng.normal(0, 1, 50_000)}
    fresh["b"] = rng.gamma(3.0, 1.0, 50_000)
    p = 2.0 ** -combined_score(fresh, ref)
    for level in (0.01, 0.05, 0.2):
        assert np.mean(p < level) == pytest.approx(level, rel=0.2)


def test_a_view_that_sees_nothing_does_not_dilute_one_that_does():
    """An anomaly that shows in one kind only (shot noise, seen by the intensity model alone):
    kinds with no signal, summed with it by Fisher's method, bury it; as their own view they
    cost it much less."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(5)
    null = [f"a{i}" for i in range(4)]

    def draw(n, shift):
        scores = {k: rng.normal(0, 1, n) for k in null}
        scores["b"] = rng.normal(shift, 1, n)
        return scores

    ref_scores, normal, odd = draw(20_000, 0.0), draw(2000, 0.0), draw(2000, 2.0)
    labels = np.r_[np.zeros(2000), np.ones(2000)]
    auroc = {}
    for name, views in (("fisher", None), ("views", (tuple(null), ("b",)))):
        ref = fit_reference(ref_scores, upper=("b",), views=views)
        both = np.r_[combined_score(normal, ref), combined_score(odd, ref)]
        auroc[name] = roc_auc_score(labels, both)
    alone = roc_auc_score(labels, np.r_[normal["b"], odd["b"]])
    assert auroc["fisher"] < auroc["views"] - 0.05 and auroc["views"] < alone


def test_weighted_views_trade_a_views_false_alarms_for_the_others_power():
    """Weighted Bonferroni across views: equal weights are today's views; a small weight on a
    view with no signal for an anomaly costs that anomaly less, the combined p-value stays
    calibrated, and a strong anomaly seen by the light view alone is still flagged."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(6)

    def draw(n, a=0.0, b=0.0):
        return {"a": rng.normal(a, 1, n), "b": rng.normal(b, 1, n)}

    ref_scores, normal = draw(20_000), draw(3000)
    views = (("a",), ("b",))
    plain = fit_reference(ref_scores, upper=("a", "b"), views=views)
    even = fit_reference(ref_scores, upper=("a", "b"), views=views, weights=(3.0, 3.0))
    assert even["method"] == "views-2" and even["weights"] == [0.5, 0.5]
    assert np.allclose(combined_score(normal, even), combined_score(normal, plain))
    light = fit_reference(ref_scores, upper=("a", "b"), views=views, weights=(0.9, 0.1))
    labels = np.r_[np.zeros(3000), np.ones(3000)]

    def auroc(ref, odd):
        return roc_auc_score(labels, np.r_[combined_score(normal, ref), combined_score(odd, ref)])

    in_a = draw(3000, a=2.0)
    assert auroc(light, in_a) > auroc(even, in_a) + 0.01
    assert auroc(light, draw(3000, b=5.0)) > 0.99  # the light view still flags what it sees
    p = 2.0 ** -combined_score(draw(50_000), light)
    for level in (0.01, 0.05, 0.2):
        assert np.mean(p < level) == pytest.approx(level, rel=0.2)
    with pytest.raises(ValueError, match="one positive weight per view"):
        fit_reference(ref_scores, views=views, weights=(1.0, 0.0))


def test_a_saved_0_4_reference_still_scores_as_it_did():
    """vaekit 0.4 saved {kind: [median, robust scale]} and combined by the harmonic mean."""
    ref = {"a": [0.0, 1.0], "b": [10.0, 2.0]}
    scores = {"a": np.array([0.0, 3.0, -3.0]), "b": np.array([10.0, 10.0, 16.0])}
    pa = 2 * norm.sf(np.abs(scores["a"]))
    pb = 2 * norm.sf(np.abs((scores["b"] - 10.0) / 2.0))
    hm = np.minimum(1.0, 2 / (1 / pa + 1 / pb))
    assert np.allclose(combined_score(scores, ref), -np.log2(hm))


def test_combined_flags_blank_images_that_surprise_calls_most_normal(tmp_path):
    """Blank images are the most likely inputs of all to a likelihood model (surprise rates
    them below every real digit); the two-sided combined score flags them."""
    digits = synthetic_digits(400, 12)
    det = AnomalyDetector(
        score_kind="combined",
        k=20,
        overrides=("model.hidden=[64]", "model.latent_dim=4", "train.epochs=15", "train.lr=3e-3"),
    ).fit(digits)
    test = synthetic_digits(60, 12, seed=7)
    blank = np.zeros((20, 12, 12), np.uint8)
    assert det.anomaly_score(blank, "surprise").max() < np.median(
        det.anomaly_score(test, "surprise")
    )
    combined = det.anomaly_score(np.concatenate([test, blank]))
    assert combined[60:].min() > np.quantile(combined[:60], 0.9)
    again = AnomalyDetector.load(det.save(tmp_path / "det"))
    assert np.allclose(again.anomaly_score(blank), combined[60:])


def test_combined_on_a_detector_fitted_for_another_kind_says_what_to_do():
    from vaekit.errors import VaekitError

    det = AnomalyDetector(
        score_kind="ratio",
        k=5,
        overrides=("model.hidden=[16]", "model.latent_dim=2", "train.epochs=1"),
    ).fit(synthetic_digits(100, 12))
    assert det.reference_ is None and det.intensity_ is None  # nothing fitted it does not use
    for kind in ("combined", "local"):
        with pytest.raises(VaekitError, match="score_kind='combined'"):
            det.anomaly_score(synthetic_digits(5, 12), kind)
