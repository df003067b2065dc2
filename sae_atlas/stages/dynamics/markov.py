"""Markov statistics of region paths: transition counts, the transition matrix between regions,
its stationary distribution and the return probabilities it predicts.

A rollout's turns each belong to a region of persona space, so a set of rollouts is a set of
region paths `regions` [n_rollouts, n_turns]. The transition matrix is estimated from counts and
nothing else: a region never seen before a last turn has no observed exit and its row is NaN (it
is not given a self-loop: where it goes is unknown), and no rare move is filtered out. The
stationary distribution is that of the chain on the regions with an observed exit (moves into a
region without one are reported as `leak`, the share of a row's moves that go where the data
cannot follow). numpy on [r, r] arrays: microseconds; what is claimed from them (attractors,
intervals, nulls) is `flow`.
"""

from __future__ import annotations

import numpy as np

from sae_atlas.errors import SaeAtlasError


def nearest_region(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Region index [n] of each point [n, k]: the nearest centroid [r, k] (euclidean)."""
    distances = ((points[:, None, :] - centroids[None, :, :]) ** 2).sum(-1)
    return distances.argmin(1)


def check_paths(regions: np.ndarray) -> np.ndarray:
    """`regions` as an int array [n_rollouts, n_turns]; SaeAtlasError unless 2-D with >= 2
    turns."""
    regions = np.asarray(regions)
    if regions.ndim != 2 or regions.shape[1] < 2:
        raise SaeAtlasError(
            "transitions need rollouts of at least two turns: [n_rollouts, n_turns]"
        )
    return regions.astype(np.int64)


def lagged_counts(regions: np.ndarray, n_regions: int, lag: int = 1) -> np.ndarray:
    """Counts [r, r] of (region at turn t, region at turn t + lag), pooled over t and rollouts."""
    regions = check_paths(regions)
    counts = np.zeros((n_regions, n_regions))
    if lag < regions.shape[1]:
        np.add.at(counts, (regions[:, :-lag].ravel(), regions[:, lag:].ravel()), 1)
    return counts


def transition_counts(regions: np.ndarray, n_regions: int) -> np.ndarray:
    """Counts [r, r] of turn-to-turn moves in `regions` [n_rollouts, n_turns]."""
    return lagged_counts(regions, n_regions, 1)


def row_normalised(counts: np.ndarray) -> np.ndarray:
    """counts [r, r] divided by their row sums; a row without counts is NaN."""
    totals = counts.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, counts / np.where(totals > 0, totals, 1), np.nan)


def transition_matrix(regions: np.ndarray, n_regions: int) -> np.ndarray:
    """P(region j at t+1 | region i at t) [r, r] from the counts of `regions`; the row of a
    region with no observed exit (never seen before a last turn) is NaN."""
    return row_normalised(transition_counts(regions, n_regions))


def stationary_distribution(
    matrix: np.ndarray, start: np.ndarray | None = None, steps: int = 2000
) -> tuple[np.ndarray, np.ndarray]:
    """Long-run share of time in each region and each region's leak, both [r].

    The chain is restricted to the regions with an observed exit (finite rows); each of their
    rows is renormalised over them, and its leak is the share of its moves into regions without
    one (NaN for those). The share is the Cesaro average of start @ P^t over `steps` turns from
    `start` (default uniform; restricted and renormalised): defined for every chain, periodic
    and reducible ones included; NaN for regions without an observed exit.
    """
    matrix = np.asarray(matrix, dtype=float)
    known = np.isfinite(matrix).all(1)
    leak = np.full(len(matrix), np.nan)
    share = np.full(len(matrix), np.nan)
    if not known.any():
        return share, leak
    inner = matrix[np.ix_(known, known)]
    kept = inner.sum(1)
    leak[known] = 1 - kept
    inner = np.where(kept[:, None] > 0, inner / np.where(kept > 0, kept, 1)[:, None], 0.0)
    inner[kept == 0] = np.eye(len(inner))[kept == 0]  # every exit leaks: the mass stops here
    state = np.ones(known.sum()) if start is None else np.asarray(start, dtype=float)[known]
    state = state / state.sum() if state.sum() > 0 else np.full(len(state), 1 / len(state))
    total = np.zeros(len(state))
    for _ in range(steps):
        total += state
        state = state @ inner
    share[known] = total / steps
    return share, leak


def predicted_return(matrix: np.ndarray, target: int, max_lag: int) -> np.ndarray:
    """[r, max_lag]: P(in `target` k turns later | in region i now) for k = 1..max_lag as the
    fitted chain predicts ((P^k)[i, target]); unknown rows count as never reaching it, so a
    region without an observed exit is NaN and the others are lower bounds when they leak."""
    known = np.isfinite(matrix).all(1)
    step = np.where(known[:, None], np.nan_to_num(matrix), 0.0)
    power = np.eye(len(matrix))
    curve = np.empty((len(matrix), max_lag))
    for k in range(max_lag):
        power = power @ step
        curve[:, k] = power[:, target]
    curve[~known] = np.nan
    return curve
