"""Markov statistics of region paths: the transition matrix between regions, its stationary
distribution, and the attractors.

A rollout's turns each belong to a region of persona space, so a set of rollouts is a set of
region paths `regions` [n_rollouts, n_turns]. From them: the row-stochastic transition matrix
[r, r], its long-run share of time per region, its closed communicating classes (the attractor
sets), each attractor's basin (which starting personas end there) and relaxation time (turns until
a rollout enters it for good), and how often each attractor set is found when whole rollouts are
resampled (`attractor_robustness`). numpy on small arrays: milliseconds (the robustness
bootstrap: about a second).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sae_atlas.errors import SaeAtlasError


def nearest_region(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Region index [n] of each point [n, k]: the nearest centroid [r, k] (euclidean)."""
    distances = ((points[:, None, :] - centroids[None, :, :]) ** 2).sum(-1)
    return distances.argmin(1)


def transition_matrix(regions: np.ndarray, n_regions: int) -> np.ndarray:
    """Row-stochastic [r, r] matrix of turn-to-turn moves in `regions`: [n_rollouts, n_turns].

    A region never left in the data (no outgoing move observed) keeps itself: P[i, i] = 1.
    """
    regions = np.asarray(regions)
    if regions.ndim != 2 or regions.shape[1] < 2:
        raise SaeAtlasError(
            "transitions need rollouts of at least two turns: [n_rollouts, n_turns]"
        )
    counts = np.zeros((n_regions, n_regions))
    np.add.at(counts, (regions[:, :-1].ravel(), regions[:, 1:].ravel()), 1)
    totals = counts.sum(1, keepdims=True)
    matrix = np.where(totals > 0, counts / np.maximum(totals, 1), 0.0)
    matrix[totals[:, 0] == 0] = np.eye(n_regions)[totals[:, 0] == 0]
    return matrix


def stationary_distribution(
    matrix: np.ndarray, start: np.ndarray | None = None, steps: int = 2000
) -> np.ndarray:
    """Long-run share of time in each region, from `start` (default uniform).

    The Cesaro average of start @ P^t over `steps` turns: defined for every chain, periodic and
    reducible ones included (for an irreducible chain it is the unique stationary distribution).
    """
    n = len(matrix)
    state = np.full(n, 1 / n) if start is None else np.asarray(start, dtype=float)
    total = np.zeros(n)
    for _ in range(steps):
        total += state
        state = state @ matrix
    return total / steps


def closed_classes(matrix: np.ndarray, threshold: float = 0.0) -> list[list[int]]:
    """Closed communicating classes of the chain with edges P > threshold: the attractor sets."""
    n = len(matrix)
    edges = matrix > threshold
    reach = edges | np.eye(n, dtype=bool)
    for k in range(n):  # transitive closure (Floyd-Warshall on booleans)
        reach |= reach[:, k : k + 1] & reach[k : k + 1, :]
    classes: list[list[int]] = []
    seen: set[int] = set()
    for i in range(n):
        if i in seen:
            continue
        members = [j for j in range(n) if reach[i, j] and reach[j, i]]
        seen.update(members)
        outside = [j for j in range(n) if j not in members]
        if not reach[np.ix_(members, outside)].any():
            classes.append(members)
    return classes


@dataclass(frozen=True)
class Attractor:
    """A closed set of regions; basin: start -> share of its rollouts ending here;
    relaxation: start -> mean turns until entering for good (among those that end here)."""

    regions: tuple[int, ...]
    stationary_mass: float
    basin: dict[str, float]
    relaxation: dict[str, float]


def settle_turn(path: np.ndarray, members: Sequence[int]) -> int | None:
    """First turn from which `path` stays inside `members`, or None if it ends outside."""
    inside = np.isin(path, members)
    if not inside[-1]:
        return None
    outside = np.flatnonzero(~inside)
    return 0 if len(outside) == 0 else int(outside[-1]) + 1


def visited_closed_classes(
    regions: np.ndarray, n_regions: int, threshold: float
) -> tuple[np.ndarray, list[list[int]]]:
    """Transition matrix of `regions` [n_rollouts, n_turns] and its closed classes
    (`closed_classes`) that some rollout visits (a region never visited keeps itself, P = 1,
    but is no attractor)."""
    matrix = transition_matrix(regions, n_regions)
    visited = np.isin(np.arange(n_regions), regions)
    return matrix, [m for m in closed_classes(matrix, threshold) if visited[m].any()]


def find_attractors(
    regions: np.ndarray, starts: Sequence[str], n_regions: int, threshold: float = 0.05
) -> tuple[np.ndarray, np.ndarray, list[Attractor]]:
    """Transition matrix, stationary distribution and attractors of rollouts.

    regions: [n_rollouts, n_turns] region per turn; starts: the starting persona of each rollout;
    threshold: transitions rarer than this are treated as noise when finding closed classes.
    The stationary distribution starts from the rollouts' turn-0 regions (a reducible chain's
    long run depends on where it starts).
    """
    if len(starts) != len(regions):
        raise SaeAtlasError(f"{len(starts)} starts for {len(regions)} rollouts")
    matrix, classes = visited_closed_classes(regions, n_regions, threshold)
    first = np.bincount(np.asarray(regions)[:, 0], minlength=n_regions) / len(regions)
    stationary = stationary_distribution(matrix, first)
    names = np.asarray(starts)
    attractors = []
    for members in classes:
        basin: dict[str, float] = {}
        relaxation: dict[str, float] = {}
        for start in dict.fromkeys(starts):
            paths = regions[names == start]
            turns = [settle_turn(path, members) for path in paths]
            settled = [t for t in turns if t is not None]
            basin[start] = len(settled) / len(paths)
            if settled:
                relaxation[start] = float(np.mean(settled))
        attractors.append(
            Attractor(tuple(members), float(stationary[members].sum()), basin, relaxation)
        )
    return matrix, stationary, attractors


def attractor_robustness(
    regions: np.ndarray,
    n_regions: int,
    threshold: float,
    n_bootstrap: int,
    seed: int = 0,
) -> tuple[dict[tuple[int, ...], float], np.ndarray]:
    """How often each attractor set is found when the rollouts are resampled with replacement.

    regions: [n_rollouts, n_turns]; each of n_bootstrap resamples of whole rollouts gets its
    own transition matrix and visited closed classes (at `threshold`). Returns
    ({attractor regions: share of resamples with exactly that closed class}, most often first;
    [n_regions] share of resamples in which each region lies in some closed class).
    """
    regions = np.asarray(regions)
    rng = np.random.default_rng(seed)
    found: dict[tuple[int, ...], int] = {}
    in_attractor = np.zeros(n_regions)
    for _ in range(n_bootstrap):
        sample = regions[rng.integers(0, len(regions), len(regions))]
        for members in visited_closed_classes(sample, n_regions, threshold)[1]:
            found[tuple(members)] = found.get(tuple(members), 0) + 1
            in_attractor[members] += 1
    shares = {k: v / n_bootstrap for k, v in sorted(found.items(), key=lambda kv: -kv[1])}
    return shares, in_attractor / n_bootstrap
