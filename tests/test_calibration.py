"""Calibrated two-sided tail probabilities and the combined anomaly score."""

import math

import numpy as np
import pytest
from scipy.stats import norm

from tests.conftest import synthetic_digits
from vaekit import AnomalyDetector
from vaekit.uses.calibration import combined_score, fit_reference, log_two_sided_p


def test_reference_is_median_and_robust_scale():
    rng = np.random.default_rng(0)
    values = rng.normal(3.0, 2.0, 200_000)
    values[:100] = 1e9  # outliers barely move a robust fit
    ((med, scale),) = fit_reference({"s": values}).values()
    assert med == pytest.approx(3.0, abs=0.02) and scale == pytest.approx(2.0, rel=0.01)


def test_two_sided_p_values_are_calibrated_and_flag_both_tails():
    rng = np.random.default_rng(1)
    normal = rng.normal(0.0, 1.0, 100_000)
    p = np.exp(log_two_sided_p(normal, 0.0, 1.0))
    assert np.mean(p < 0.05) == pytest.approx(0.05, abs=0.003)  # uniform under normal data
    assert np.exp(log_two_sided_p(np.array([-4.0, 4.0]), 0.0, 1.0)) == pytest.approx(
        2 * norm.sf(4.0)
    )
    far = log_two_sided_p(np.array([-60.0, 60.0]), 0.0, 1.0)
    assert np.all(np.isfinite(far)) and far[0] == far[1] < -1000  # far tails still rank


def test_combined_score_is_the_harmonic_mean_of_the_kinds():
    ref = {"a": (0.0, 1.0), "b": (10.0, 2.0)}
    scores = {"a": np.array([0.0, 3.0, -3.0]), "b": np.array([10.0, 10.0, 16.0])}
    got = combined_score(scores, ref)
    pa = 2 * norm.sf(np.abs(scores["a"]))
    pb = 2 * norm.sf(np.abs((scores["b"] - 10.0) / 2.0))
    hm = np.minimum(1.0, 2 / (1 / pa + 1 / pb))
    assert np.allclose(got, -np.log2(hm))
    assert got[0] == 0.0 and got[1] > 0 and got[2] > 0
    assert np.all(got >= -np.log2(np.minimum(1, 2 * np.minimum(pa, pb))) - 1e-9)
    with pytest.raises(ValueError):
        combined_score({"c": np.zeros(2)}, ref)
    assert math.isfinite(combined_score({"a": np.array([1e6])}, ref)[0])


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
        k=5, overrides=("model.hidden=[16]", "model.latent_dim=2", "train.epochs=1")
    ).fit(synthetic_digits(100, 12))
    with pytest.raises(VaekitError, match="score_kind='combined'"):
        det.anomaly_score(synthetic_digits(5, 12), "combined")
