"""Shared statistics: AUROC and effect size, Mann-Whitney and McNemar tests, bootstrap and Wilson
intervals (and a grouped bootstrap of the difference of two AUROCs), bootstrap p-values,
Benjamini-Hochberg q-values.

Every stage that scores, tests or bounds something uses these, so a number means the same thing
wherever it is reported. All are numpy / scipy on arrays in memory: AUROC ranks each column once
(O(n log n) per column), a bootstrap draws n_bootstrap x n indices; the AUROC difference holds
two [n1, n0] win matrices and [n_bootstrap, n1 + n0] weights.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import binomtest, false_discovery_control, mannwhitneyu, norm, rankdata


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


def mcnemar_p(only_first: int, only_second: int) -> float:
    """Exact two-sided McNemar p-value of paired binary outcomes: a binomial test at 1/2 of the
    discordant pairs (`only_first`: pairs where only the first succeeds; `only_second`: only the
    second); 1 without discordant pairs."""
    n = only_first + only_second
    return 1.0 if n == 0 else float(binomtest(only_first, n, 0.5).pvalue)


def _wins(positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """[n1, n0] 1 where a positive scores above a negative, 1/2 on ties, else 0."""
    above = positive[:, None] > negative[None, :]
    return above + 0.5 * (positive[:, None] == negative[None, :])


def auroc_difference_ci(
    first: tuple[np.ndarray, np.ndarray],
    second: tuple[np.ndarray, np.ndarray],
    positive_groups: np.ndarray,
    negative_groups: np.ndarray,
    n_bootstrap: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """AUROC of scorer `first` minus that of scorer `second` on the same items (each a pair of
    scores: positives [n1], negatives [n0]), and its percentile bootstrap CI resampling the groups
    the items belong to (positive_groups [n1], negative_groups [n0]; e.g. questions, so that a
    persona's and the default's answers to one question are drawn together), both scorers on
    the same draws: (difference, low, high). NaN everywhere without positives or negatives."""
    n1 = len(positive_groups)
    if n1 == 0 or len(negative_groups) == 0:
        return float("nan"), float("nan"), float("nan")
    _, group = np.unique(np.r_[positive_groups, negative_groups], return_inverse=True)
    n_groups = int(group.max()) + 1
    draws = np.random.default_rng(seed).integers(0, n_groups, (n_bootstrap, n_groups))
    counts = np.zeros((n_bootstrap, n_groups))
    np.add.at(counts, (np.repeat(np.arange(n_bootstrap), n_groups), draws.ravel()), 1.0)
    weight_positive, weight_negative = counts[:, group[:n1]], counts[:, group[n1:]]
    total = weight_positive.sum(1) * weight_negative.sum(1)
    wins = [_wins(*(np.asarray(s, dtype=float) for s in scores)) for scores in (first, second)]
    replicates = [
        np.einsum("bi,ij,bj->b", weight_positive, win, weight_negative) / np.maximum(total, 1)
        for win in wins
    ]
    differences = (replicates[0] - replicates[1])[total > 0]
    point = float(wins[0].mean() - wins[1].mean())
    if not len(differences):
        return point, float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(differences, [tail, 100 - tail])
    return point, float(low), float(high)
