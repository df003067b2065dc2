"""Shared statistics: AUROC and effect size, Mann-Whitney tests, bootstrap and Wilson intervals,
bootstrap p-values, Benjamini-Hochberg q-values.

Every stage that scores, tests or bounds something uses these, so a number means the same thing
wherever it is reported. All are numpy / scipy on arrays in memory: AUROC ranks each column once
(O(n log n) per column), a bootstrap draws n_bootstrap x n indices.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import false_discovery_control, mannwhitneyu, norm, rankdata


def column_auroc(positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """AUROC (ties count half) of each column of positive [n1, F] against negative [n0, F]: [F]."""
    n1, n0 = len(positive), len(negative)
    ranks = rankdata(np.concatenate([positive, negative]), axis=0)
    return (ranks[:n1].sum(0) - n1 * (n1 + 1) / 2) / (n1 * n0)


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """AUROC of scores positive [n] against negative [m] (ties count half); NaN when either is
    empty."""
    positive, negative = np.asarray(positive, dtype=float), np.asarray(negative, dtype=float)
    if len(positive) == 0 or len(negative) == 0:
        return float("nan")
    return float(column_auroc(positive[:, None], negative[:, None])[0])


def auroc_and_effect(positive: np.ndarray, negative: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUROC (ties count half) and Cohen's d of each column of positive [n1, F] against
    negative [n0, F]; both [F]."""
    n1, n0 = len(positive), len(negative)
    pooled = (positive.var(0, ddof=1) * (n1 - 1) + negative.var(0, ddof=1) * (n0 - 1)) / max(
        n1 + n0 - 2, 1
    )
    effect = (positive.mean(0) - negative.mean(0)) / np.sqrt(pooled + 1e-12)
    return column_auroc(positive, negative), effect


def mann_whitney_p(positive: np.ndarray, negative: np.ndarray, alternative: str) -> np.ndarray:
    """Mann-Whitney U p-values per column of positive [n1, F] against negative [n0, F]
    (asymptotic, tie-corrected; `alternative`: greater, less or two-sided); constant columns
    give 1."""
    if positive.shape[1] == 0:
        return np.zeros(0)
    result = mannwhitneyu(positive, negative, axis=0, alternative=alternative, method="asymptotic")
    return np.nan_to_num(np.asarray(result.pvalue, dtype=np.float64), nan=1.0)


def bootstrap_ci(
    values: np.ndarray, n_bootstrap: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """Mean of `values` [n] (NaN dropped) and its percentile bootstrap CI: (mean, low, high).

    NaN everywhere for no values; the CI of one value is that value. For paired data, pass the
    paired differences.
    """
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (n_bootstrap, len(values)))].mean(1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(values.mean()), float(low), float(high)


def wilson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval (low, high) of a proportion `successes` / `n`; NaN for n = 0."""
    if n == 0:
        return float("nan"), float("nan")
    z = float(norm.ppf(0.5 + level / 2))
    share = successes / n
    scale = 1 + z**2 / n
    centre = (share + z**2 / (2 * n)) / scale
    half = z * math.sqrt(share * (1 - share) / n + z**2 / (4 * n**2)) / scale
    return max(0.0, centre - half), min(1.0, centre + half)


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """BH q-values [n] of p-values [n] (empty in, empty out)."""
    p_values = np.asarray(p_values, dtype=float)
    return false_discovery_control(p_values) if len(p_values) else p_values


def bootstrap_p(draws: np.ndarray) -> float:
    """Two-sided bootstrap p-value that a quantity is 0, from its resampled values `draws` [B]
    (NaN dropped): twice the smaller share of draws on either side of 0 (each counted with one
    pseudo-draw), at most 1; 1.0 with no finite draw."""
    draws = np.asarray(draws, dtype=float)
    draws = draws[np.isfinite(draws)]
    if not len(draws):
        return 1.0
    below = (1 + (draws <= 0).sum()) / (1 + len(draws))
    above = (1 + (draws >= 0).sum()) / (1 + len(draws))
    return float(min(1.0, 2 * min(below, above)))
