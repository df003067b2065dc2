"""Where rollouts flow between regions, with intervals over rollouts and a null that can fail:
which regions are attractors.

From region paths `regions` [n_rollouts, n_turns] (one condition's rollouts): per region its
share at the first and last turn, its occupancy (share of all turns), `hold` (P(same region k
turns later | here now)), `back` (P(in the assistant region k turns later | here now)), the
transition matrix and its stationary distribution (`markov`). Intervals: percentile bootstrap
over whole rollouts. Null: each rollout's turns permuted (`numpy.random.Generator.permuted` along
turns). It keeps what must be kept: every rollout's composition (how many turns it spends in each
region, so a start that simply sits in its region, a persona whose prompt holds it there, is no
attractor) and the number of rollouts and turns; it destroys only order. Under it the expected
last-turn share of a region is its occupancy and the expected lagged counts are analytic, so the
excesses (`gain` = last-turn share - occupancy; hold - its null) are paired within each bootstrap
resample; p-values come from Monte Carlo permutations. How it can fail: anything that moves every
rollout the same way with turn position (later questions, longer contexts) is order too, and is
counted as flow (compare the default persona's rollouts); with few turns the permutations are few
and the test weak; a drift that never settles also beats the null on hold, hence the claim needs
both. An attractor is a region whose gain and hold excess both have a bootstrap 95% interval
above 0 and a BH q-value (over every condition and region of the family) <= fdr. Cost: numpy on
[n_rollouts, n_lags, r, r] arrays: well under a second for hundreds of rollouts and 2,000
resamples and permutations.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from sae_atlas.stages.dynamics.markov import check_paths


@dataclass(frozen=True)
class PathArrays:
    """Per-rollout contributions [n, ...] whose sums over rollouts give every statistic: turn-0
    region, last-turn region and occupancy counts [n, r] (one-hot; turns per region), lagged
    counts [n, K, r, r] ((t, t+k) pairs for k = 1..K) and their expectation under the
    per-rollout permutation null [n, K, r, r]."""

    start: np.ndarray
    end: np.ndarray
    turns: np.ndarray
    lagged: np.ndarray
    null_lagged: np.ndarray

    def total(self) -> PathArrays:
        """The sums over rollouts."""
        return PathArrays(*(a.sum(0) for a in self.__dict__.values()))

    def weighted(self, weights: np.ndarray) -> PathArrays:
        """The sums [B, ...] over rollouts under each row of weights [B, n]."""
        return PathArrays(*(np.tensordot(weights, a, axes=(1, 0)) for a in self.__dict__.values()))


def path_arrays(regions: np.ndarray, n_regions: int, max_lag: int) -> PathArrays:
    """The per-rollout contributions of `regions` [n, T] for lags 1..max_lag (< T)."""
    regions = check_paths(regions)
    turns = regions.shape[1]
    onehot = np.eye(n_regions)[regions]  # [n, T, r]
    composition = onehot.sum(1)  # [n, r]
    pairs = np.einsum("ni,nj->nij", composition, composition) - np.einsum(
        "ni,ij->nij", composition, np.eye(n_regions)
    )
    lagged = np.stack(
        [np.einsum("nti,ntj->nij", onehot[:, :-k], onehot[:, k:]) for k in range(1, max_lag + 1)],
        1,
    )
    share = np.array([(turns - k) / (turns * (turns - 1)) for k in range(1, max_lag + 1)])
    return PathArrays(
        onehot[:, 0],
        onehot[:, -1],
        composition,
        lagged,
        share[None, :, None, None] * pairs[:, None],
    )


@dataclass(frozen=True)
class Flow:
    """Statistics of one set of rollouts (leading axis [B] when computed per resample): start,
    end, occupancy, gain (end - occupancy) [.., r]; hold, hold_null, back, back_null [.., r, K]
    (lag k = column k - 1); pairs [.., r, K] ((t, t+k) pairs from the region)."""

    start: np.ndarray
    end: np.ndarray
    occupancy: np.ndarray
    gain: np.ndarray
    hold: np.ndarray
    hold_null: np.ndarray
    back: np.ndarray
    back_null: np.ndarray
    pairs: np.ndarray


def _conditional(lagged: np.ndarray, column: np.ndarray | int) -> np.ndarray:
    """P(column region at t+k | region i at t) [.., r, K] from lagged counts [.., K, r, r]
    (column: one region, or one per row: the row's own); NaN without pairs."""
    totals = lagged.sum(-1)
    rows = np.arange(lagged.shape[-1])
    hits = lagged[..., rows, column] if np.ndim(column) else lagged[..., column]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.swapaxes(
            np.where(totals > 0, hits / np.where(totals > 0, totals, 1), np.nan), -1, -2
        )


def flow_of(sums: PathArrays, assistant: int) -> Flow:
    """The statistics of summed contributions (one set, or [B] sets)."""
    n = sums.start.sum(-1, keepdims=True)
    occupancy = sums.turns / sums.turns.sum(-1, keepdims=True)
    rows = np.arange(sums.start.shape[-1])
    return Flow(
        start=sums.start / n,
        end=sums.end / n,
        occupancy=occupancy,
        gain=sums.end / n - occupancy,
        hold=_conditional(sums.lagged, rows),
        hold_null=_conditional(sums.null_lagged, rows),
        back=_conditional(sums.lagged, assistant),
        back_null=_conditional(sums.null_lagged, assistant),
        pairs=np.swapaxes(sums.lagged.sum(-1), -1, -2),
    )


def bootstrap_weights(n: int, n_bootstrap: int, seed: int) -> np.ndarray:
    """[n_bootstrap, n] counts of each rollout in resamples of n rollouts with replacement."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1 / n), size=n_bootstrap).astype(float)


def permutation_flow(
    regions: np.ndarray, n_regions: int, assistant: int, n_permutations: int, seed: int
) -> Flow:
    """Flow [n_permutations, ...] of `regions` with each rollout's turns permuted (lag 1)."""
    rng = np.random.default_rng(seed)
    tiled = np.broadcast_to(regions, (n_permutations, *regions.shape)).reshape(-1, regions.shape[1])
    permuted = rng.permuted(tiled, axis=1).reshape(n_permutations, *regions.shape)
    totals = [path_arrays(block, n_regions, 1).total() for block in permuted]
    stacked = PathArrays(
        *(np.stack([getattr(t, f) for t in totals]) for f in PathArrays.__dataclass_fields__)
    )
    return flow_of(stacked, assistant)


def interval(samples: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile 95% interval of `samples` along `axis` (NaN ignored; NaN where all are)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanpercentile(samples, 2.5, axis=axis), np.nanpercentile(samples, 97.5, axis=axis)


def upper_p(null: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """One-sided Monte Carlo p-value of observed [...] against null samples [N, ...]:
    (1 + #{null >= observed}) / (1 + N); NaN observed gives 1."""
    ahead = (null >= observed[None] - 1e-12).sum(0)
    p = (1 + ahead) / (1 + len(null))
    return np.where(np.isfinite(observed), p, 1.0)
