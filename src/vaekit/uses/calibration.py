"""Tail probabilities of anomaly scores under normal data, and one score that combines them.

An input can be anomalous in either direction: less likely than the data (noise, other
objects) or more likely, simpler or smoother than it (blank, blurred or constant images,
which a likelihood rates as *more* normal than real data; Nalisnick et al. 2019's typicality
argument). Each score kind is therefore turned into a two-sided tail probability under the
scores of normal data, and the kinds are combined into one p-value.

- Per kind: a robust normal fit to the normal data's scores (median, and 1.4826 x the median
  absolute deviation as the scale), z = (score - median) / scale, p = 2 * P(N(0,1) > |z|),
  computed in log space so that far tails still rank (an empirical p-value would tie every
  input beyond the reference set's extremes).
- Combined: the harmonic mean of the kinds' p-values (Wilson 2019), which stays valid when
  the p-values depend on each other, as these do (they come from one model); Fisher's method
  assumes independence and would overstate the evidence.
- The combined score is -log2 of that p-value, in bits, higher = more anomalous, like every
  other score kind. Its threshold is still set by `calibrate` or `contamination`.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import logsumexp
from scipy.stats import norm

MAD_TO_SD = 1.4826  # the MAD of a normal distribution times this is its standard deviation


def fit_reference(scores: dict[str, np.ndarray]) -> dict[str, tuple[float, float]]:
    """(median, robust scale) of each score kind's values on normal data."""
    out = {}
    for kind, values in scores.items():
        v = np.asarray(values, dtype=np.float64)
        v = v[np.isfinite(v)]
        if v.size < 2:
            continue
        med = float(np.median(v))
        scale = MAD_TO_SD * float(np.median(np.abs(v - med)))
        out[kind] = (med, max(scale, 1e-6 * max(1.0, abs(med))))
    return out


def log_two_sided_p(values: np.ndarray, median: float, scale: float) -> np.ndarray:
    """log of 2 * P(N(0,1) > |z|) for z = (values - median) / scale (at most log 1)."""
    z = np.abs((np.asarray(values, dtype=np.float64) - median) / scale)
    return np.minimum(0.0, math.log(2.0) + norm.logsf(z))


def combined_score(
    scores: dict[str, np.ndarray], reference: dict[str, tuple[float, float]]
) -> np.ndarray:
    """-log2 of the harmonic mean of the two-sided p-values of every kind in `reference`."""
    kinds = [k for k in reference if k in scores]
    if not kinds:
        raise ValueError("no score kind in common with the reference")
    log_p = np.stack([log_two_sided_p(scores[k], *reference[k]) for k in kinds])
    # harmonic mean: L / sum(1/p), in logs
    log_hm = math.log(len(kinds)) - logsumexp(-log_p, axis=0)
    return -np.minimum(0.0, log_hm) / math.log(2.0)
