"""Shared statistics against values worked out by hand or published."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sae_atlas.stats import (
    auroc,
    auroc_and_effect,
    auroc_difference_ci,
    benjamini_hochberg,
    bootstrap_ci,
    column_auroc,
    mann_whitney_p,
    mcnemar_p,
    wilson_interval,
)


def test_auroc_counts_pairs_with_ties_as_half():
    assert auroc(np.array([1.0, 2.0, 3.0]), np.array([0.0, 0.5])) == 1.0
    assert auroc(np.array([0.0, 0.5]), np.array([1.0, 2.0, 3.0])) == 0.0
    # pairs (1 vs 1): a tie, 1/2; (1 vs 0): 1; over 2 positives x 2 negatives: 3 / 4
    assert auroc(np.array([1.0, 1.0]), np.array([1.0, 0.0])) == 0.75
    # 3 of the 6 pairs won, 1 tied: (3 + 0.5) / 6
    assert auroc(np.array([2.0, 4.0]), np.array([1.0, 2.0, 5.0])) == pytest.approx(3.5 / 6)
    assert auroc(np.zeros(4), np.zeros(3)) == 0.5
    assert math.isnan(auroc(np.array([]), np.array([1.0])))


def test_columns_score_separately_with_cohens_d():
    positive = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 1.0]])
    negative = np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])
    # column 0: 1 beats 0, ties 1 (1.5); 2 beats 0 and 1, ties 2 (2.5); 3 beats all (3): 7 / 9
    # column 1: only the 1 ties the three 1s: 1.5 / 9
    np.testing.assert_allclose(column_auroc(positive, negative), [7 / 9, 1 / 6])
    area, effect = auroc_and_effect(positive, negative)
    np.testing.assert_array_equal(area, column_auroc(positive, negative))
    assert effect[0] == pytest.approx(1.0)  # means differ by 1, both variances 1


def test_mann_whitney_p_matches_the_normal_approximation():
    positive = np.array([[4.0], [5.0], [6.0]])
    negative = np.array([[1.0], [2.0], [3.0]])
    # U = 9, mean 4.5, sd sqrt(3 * 3 * 7 / 12); continuity correction 0.5
    z = (9 - 4.5 - 0.5) / math.sqrt(9 * 7 / 12)
    expected = 0.5 * math.erfc(z / math.sqrt(2))
    assert mann_whitney_p(positive, negative, "greater")[0] == pytest.approx(expected)
    assert mann_whitney_p(negative, positive, "greater")[0] > 0.9
    assert mann_whitney_p(np.ones((3, 1)), np.ones((3, 1)), "greater")[0] == 1.0
    assert mann_whitney_p(np.zeros((3, 0)), np.zeros((3, 0)), "greater").shape == (0,)


def test_bootstrap_ci_on_known_cases():
    mean, low, high = bootstrap_ci(np.full(10, 3.0))
    assert mean == low == high == 3.0
    values = np.random.default_rng(0).normal(1.0, 2.0, 400)
    mean, low, high = bootstrap_ci(values, n_bootstrap=4000)
    half_width = 1.96 * values.std(ddof=1) / np.sqrt(len(values))
    assert mean == pytest.approx(values.mean())
    assert high - mean == pytest.approx(half_width, rel=0.15)
    assert mean - low == pytest.approx(half_width, rel=0.15)
    assert all(np.isnan(bootstrap_ci(np.array([np.nan]))))


def test_wilson_interval_matches_newcombe_1998():
    # Newcombe, Statistics in Medicine 17 (1998) 857-872, table I, method 3
    for successes, n, low, high in ((81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605)):
        assert wilson_interval(successes, n) == pytest.approx((low, high), abs=5e-5)
    assert wilson_interval(0, 20) == pytest.approx((0.0, 0.1611), abs=5e-5)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_benjamini_hochberg_by_hand():
    # sorted p 0.005, 0.01, 0.03, 0.04 -> p x 4 / rank = 0.02, 0.02, 0.04, 0.04 (already monotone)
    q_values = benjamini_hochberg(np.array([0.01, 0.04, 0.03, 0.005]))
    np.testing.assert_allclose(q_values, [0.02, 0.04, 0.04, 0.02])
    # a larger p at a lower rank takes the smaller q of the ranks above it
    np.testing.assert_allclose(benjamini_hochberg(np.array([0.02, 0.021])), [0.021, 0.021])
    assert benjamini_hochberg(np.array([])).shape == (0,)


def test_mcnemar_p_is_the_exact_binomial_of_discordant_pairs():
    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(3, 3) == 1.0
    assert mcnemar_p(10, 0) == pytest.approx(2 / 1024)
    assert mcnemar_p(0, 10) == pytest.approx(2 / 1024)
    assert mcnemar_p(7, 2) == pytest.approx(2 * sum(math.comb(9, k) for k in range(3)) / 512)


def test_auroc_difference_ci_pairs_the_scorers_over_groups():
    rng = np.random.default_rng(0)
    groups = np.arange(20).astype(str)
    perfect = (rng.normal(2, 0.1, 20), rng.normal(0, 0.1, 20))
    noise = (rng.normal(0, 1, 20), rng.normal(0, 1, 20))
    point, low, high = auroc_difference_ci(perfect, noise, groups, groups, 500, seed=0)
    assert point == pytest.approx(auroc(*perfect) - auroc(*noise))
    assert low <= point <= high
    assert low > 0.2  # a perfect scorer against noise: the interval excludes 0
    same = auroc_difference_ci(noise, noise, groups, groups, 200, seed=0)
    assert same == (0.0, 0.0, 0.0)
    # two halves of one group are drawn together: one group gives no spread at all
    one = auroc_difference_ci(perfect, noise, np.zeros(20), np.zeros(20), 200, seed=0)
    assert one[1] == pytest.approx(one[0]) and one[2] == pytest.approx(one[0])
    empty = auroc_difference_ci((np.zeros(0), np.zeros(3)), noise, np.zeros(0), np.zeros(3))
    assert all(math.isnan(v) for v in empty)
