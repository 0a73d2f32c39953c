"""Tail probabilities of anomaly scores under normal data, and one score that combines them.

An input can be anomalous in either direction: less likely than the data (noise, other
objects) or more likely, simpler or smoother than it (blank, blurred or constant images,
which a likelihood rates as *more* normal than real data; Nalisnick et al. 2019's typicality
argument). Each score kind is therefore turned into a tail probability under the scores of
held-out normal data, two-sided for kinds where both directions are anomalous and upper for
kinds that are already corrected for simplicity, and the kinds are combined into one score.

- Per kind, a quantile-normal transform: the reference scores' quantiles at the normal
  probabilities of a grid of z values map a score to z by interpolation, so z is standard
  normal under normal data whatever the shape of the kind's distribution (likelihoods are
  skewed; a normal fit would call the long tail of normal data anomalous). Beyond the
  reference's outer quantiles z continues linearly, with the slope of the outermost unit of
  z: a normal tail of the locally fitted width, so that far tails still rank (an empirical
  p-value would tie every input beyond the reference's extremes). Two-sided
  p = 2 P(N(0,1) > |z|), upper p = P(N(0,1) > z), in log space.
- Combined: Fisher's statistic -2 sum log p_k, which adds up evidence that several kinds
  show a little of (a rotated digit is a little unlikely, a little unusual in its intensities
  and a little less compressible) instead of keeping only the strongest kind, as the
  harmonic mean of p-values does (measured: it ranks worse here). The kinds depend on each
  other, so the statistic's chi-square law (independent p-values) does not hold; its tail
  probability is taken from the same quantile-normal transform of the reference's own
  statistics instead, so the combined p-value is calibrated too.
- The combined score is -log2 of that p-value, in bits, higher = more anomalous, like every
  other score kind. Its threshold is still set by `calibrate` or `contamination`.

- Views (`fit_reference(..., views=...)`): kinds that come from the same model are one view
  (the VAE's surprise, complexity and ratio; the local intensity model's two kinds), combined
  by Fisher's method and calibrated as above; the views are then combined by the smallest of
  their p-values (Tippett's method), calibrated once more on the reference. Fisher's sum
  across every kind lets kinds that see nothing of an anomaly dilute one that sees it (shot
  noise in the strokes is visible to the intensity model alone); the smallest p of two views
  pays for the second view only once. Measured on validation sets (`benchmarks/
  anomaly_selection.py`), not on the test sets the benchmarks report.

A reference is JSON-ready: {"method": "fisher-1", "kinds": {kind: quantiles at `Z_GRID`},
"upper": [upper-tailed kinds], "combined": quantiles of the statistic}, or {"method":
"views-1", "views": [fisher-1 references], "combined": quantiles of the statistic}, or
method "views-2" with "weights" (one per view, summing to 1) beside them. A
reference keeps its method, so a saved detector scores as it did when it was fitted.
References saved by vaekit 0.4 ({kind: [median, robust scale]}) still score as they did: a
normal fit per kind, two-sided, combined by the harmonic mean.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.special import logsumexp
from scipy.stats import norm

from vaekit._version import __version__
from vaekit.errors import VaekitError
from vaekit.registry import Registry

Z_GRID = np.linspace(-3.0, 3.0, 49)  # beyond ±3 a reference of 2,000 has too few points
_TAIL_SPAN = 8  # grid steps (one unit of z) that set a tail's slope

Reference = dict[str, Any]


def _quantiles(values: np.ndarray) -> list[float] | None:
    """The values' quantiles at the normal probabilities of `Z_GRID` (None if too few)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return None
    q = np.quantile(v, norm.cdf(Z_GRID))
    # strictly increasing, so that interpolation is defined where scores tie
    spread = max(float(q[-1] - q[0]), 1e-6 * max(1.0, abs(float(np.median(v)))))
    return (q + np.arange(len(q)) * (1e-9 * spread)).tolist()


def fit_reference(
    scores: dict[str, np.ndarray],
    upper: tuple[str, ...] = (),
    views: tuple[tuple[str, ...], ...] | None = None,
    weights: tuple[float, ...] | None = None,
) -> Reference:
    """The combined score's reference from normal data's scores of each kind; kinds in
    `upper` are tested in their upper tail only, the others in both. With `views`, groups of
    kinds each combined by Fisher's method and then by their smallest p-value (kinds not in
    `scores` are left out, and so are views left empty); with `weights` too (one per view),
    by the smallest p_v / w_v (weighted Bonferroni: at a level a, a view of weight w adds at
    most w a of normal data's false alarms)."""
    if views is not None:
        kept = [i for i, view in enumerate(views) if any(k in scores for k in view)]
        refs = [fit_reference({k: scores[k] for k in views[i] if k in scores}, upper) for i in kept]
        ref: Reference = {"method": "views-1", "views": refs}
        if weights is not None:
            if len(weights) != len(views) or min(weights) <= 0:
                raise ValueError(f"one positive weight per view, not {weights}")
            w = np.asarray([weights[i] for i in kept], dtype=np.float64)
            ref.update(method="views-2", weights=(w / w.sum()).tolist())
        ref["combined"] = _quantiles(_views_statistic(scores, ref))
        return ref
    kinds = {k: q for k, v in scores.items() if (q := _quantiles(v)) is not None}
    ref = {"method": "fisher-1", "kinds": kinds, "upper": sorted(set(upper) & set(kinds))}
    ref["combined"] = _quantiles(fisher_statistic(scores, ref))
    return ref


def z_scores(values: np.ndarray, quantiles: list[float]) -> np.ndarray:
    """Standard-normal scores of `values` under a reference kind's quantiles."""
    x = np.asarray(values, dtype=np.float64)
    q = np.asarray(quantiles, dtype=np.float64)
    if len(q) == 2:  # a vaekit 0.4 reference: (median, robust scale)
        return (x - q[0]) / q[1]
    z = np.interp(x, q, Z_GRID)
    k = _TAIL_SPAN
    with np.errstate(invalid="ignore"):  # inf - inf where a score is infinite
        lo = Z_GRID[0] + (x - q[0]) * (Z_GRID[k] - Z_GRID[0]) / (q[k] - q[0])
        hi = Z_GRID[-1] + (x - q[-1]) * (Z_GRID[-1] - Z_GRID[-1 - k]) / (q[-1] - q[-1 - k])
    z = np.where(x < q[0], lo, np.where(x > q[-1], hi, z))
    return np.where(np.isnan(x), np.inf, z)  # a score that is NaN is as far out as it gets


def log_p(values: np.ndarray, quantiles: list[float], upper: bool = False) -> np.ndarray:
    """log of the tail probability of the values' z scores: P(N(0,1) > z) when `upper`, else
    2 P(N(0,1) > |z|) (at most log 1)."""
    z = z_scores(values, quantiles)
    if upper:
        return norm.logsf(z)
    return np.minimum(0.0, math.log(2.0) + norm.logsf(np.abs(z)))


def fisher_statistic(scores: dict[str, np.ndarray], reference: Reference) -> np.ndarray:
    """-2 sum over the reference's kinds of log p (every kind must be in `scores`)."""
    missing = [k for k in reference["kinds"] if k not in scores]
    if missing or not reference["kinds"]:
        raise ValueError(f"score kinds missing for the reference: {missing}")
    upper = set(reference["upper"])
    terms = [log_p(scores[k], q, k in upper) for k, q in reference["kinds"].items()]
    return -2.0 * np.sum(terms, axis=0)


def _fisher_log_p(scores: dict[str, np.ndarray], reference: Reference) -> np.ndarray:
    """log of the calibrated p-value of Fisher's statistic under a fisher-1 reference."""
    return norm.logsf(z_scores(fisher_statistic(scores, reference), reference["combined"]))


def _views_statistic(scores: dict[str, np.ndarray], reference: Reference) -> np.ndarray:
    """-log of the smallest view's calibrated p-value (Tippett's statistic), each divided by
    its view's weight where the reference has weights."""
    views = reference["views"]
    log_w = np.log(reference.get("weights", np.ones(len(views))))
    return -np.min(
        [_fisher_log_p(scores, v) - lw for v, lw in zip(views, log_w, strict=True)], axis=0
    )


# A reference's "method" -> its combined score (bits); references of vaekit 0.4 have none.
METHODS: Registry[Callable[[dict[str, np.ndarray], Reference], np.ndarray]] = Registry(
    "calibration method"
)


def _bits(log_p_value: np.ndarray) -> np.ndarray:
    return np.maximum(0.0, -log_p_value / math.log(2.0))


@METHODS.register("fisher-1")
def _fisher_score(scores: dict[str, np.ndarray], reference: Reference) -> np.ndarray:
    """Fisher's statistic over every kind, calibrated on the reference's own statistics."""
    if "kinds" not in reference:
        return _harmonic_mean_score(scores, reference)
    return _bits(_fisher_log_p(scores, reference))


def _views_score(scores: dict[str, np.ndarray], reference: Reference) -> np.ndarray:
    """The views' smallest p (each view's weighted, for views-2), calibrated again."""
    return _bits(norm.logsf(z_scores(_views_statistic(scores, reference), reference["combined"])))


METHODS.register("views-1")(_views_score)
METHODS.register("views-2")(_views_score)


def combined_score(scores: dict[str, np.ndarray], reference: Reference) -> np.ndarray:
    """-log2 of the combined p-value: the upper tail of the reference's statistic (Fisher's,
    or the views' smallest p) under the reference's own statistics (a vaekit 0.4 reference:
    the harmonic mean of p-values)."""
    method = reference.get("method")
    if method is None:
        return _fisher_score(scores, reference)  # no method: fisher-1, or vaekit 0.4's
    if method not in METHODS:
        raise VaekitError(
            f"the combined score's reference uses method {method!r}, which this vaekit "
            f"({__version__}) does not know: it was saved by a newer version"
        )
    return METHODS.get(method)(scores, reference)


def _harmonic_mean_score(scores: dict[str, np.ndarray], reference: Reference) -> np.ndarray:
    """vaekit 0.4's combined score: -log2 of the harmonic mean of two-sided p-values."""
    kinds = [k for k in reference if k in scores]
    if not kinds:
        raise ValueError("no score kind in common with the reference")
    lp = np.stack([log_p(scores[k], reference[k]) for k in kinds])
    log_hm = math.log(len(kinds)) - logsumexp(-lp, axis=0)  # L / sum(1/p), in logs
    return -np.minimum(0.0, log_hm) / math.log(2.0)
