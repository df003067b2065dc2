"""Matched random feature sets: the null a chosen set of SAE features is compared with.

Each feature of a chosen set is matched to the `k` features closest to it in firing frequency
(log density), activation scale (log mean activation where it fires) and decoder norm (log), each
standardised over the candidate pool, never drawing a chosen feature; a matched random set takes
one of those neighbours per chosen feature (distinct within the set), so it has the same count,
and the same frequency, scale and decoder norm up to the neighbourhood. An isotropic random
direction or a global shuffle is not matched this way, and is not the control here.

Cost: O(n_chosen x F) distances, then O(n_sets x n_chosen) draws. Returns index arrays.
"""

from __future__ import annotations

import numpy as np


def matching_keys(
    density: np.ndarray, mean_act: np.ndarray, decoder_norm: np.ndarray
) -> np.ndarray:
    """[F, 3] log density, log mean activation and log decoder norm (floored at 1e-9)."""
    return np.log(np.maximum(np.stack([density, mean_act, decoder_norm], axis=1), 1e-9))


def matched_pools(
    keys: np.ndarray, chosen: np.ndarray, k: int, eligible: np.ndarray | None = None
) -> np.ndarray:
    """[n_chosen, k] the k eligible features nearest each chosen one in standardised `keys`
    ([F, 3]); chosen features are never eligible; eligible: bool [F] (None: every feature that
    fires, density key above the floor). Fewer than k eligible features: all of them."""
    allowed = keys[:, 0] > np.log(1e-9) if eligible is None else eligible.copy()
    allowed[chosen] = False
    pool = np.flatnonzero(allowed)
    if not len(pool) or not len(chosen):
        return np.zeros((len(chosen), 0), dtype=np.int64)
    scale = keys[pool].std(0)
    scaled = keys / np.where(scale > 0, scale, 1.0)
    distance = ((scaled[chosen, None, :] - scaled[None, pool, :]) ** 2).sum(-1)
    k = min(k, len(pool))
    nearest = np.argsort(distance, axis=1, kind="stable")[:, :k]
    return pool[nearest]


def matched_sets(pools: np.ndarray, n_sets: int, rng: np.random.Generator) -> np.ndarray:
    """[n_sets, n_chosen] random sets, one feature from each chosen feature's pool, distinct
    within a set where the pools allow (a redraw, up to 10 times, else kept)."""
    n_chosen, k = pools.shape
    if k == 0:
        return np.zeros((n_sets, n_chosen), dtype=np.int64)
    sets = pools[np.arange(n_chosen)[None, :], rng.integers(0, k, (n_sets, n_chosen))]
    for row in sets:
        for _ in range(10):
            _, first = np.unique(row, return_index=True)
            repeated = np.setdiff1d(np.arange(n_chosen), first)
            if not len(repeated):
                break
            row[repeated] = pools[repeated, rng.integers(0, k, len(repeated))]
    return sets


def empirical_p(observed: float, null: np.ndarray) -> float:
    """One-sided p-value that `observed` is larger than the `null` draws: (1 + #null >= observed)
    / (1 + n); NaN draws are dropped; 1.0 for a NaN observation."""
    null = null[np.isfinite(null)]
    if not np.isfinite(observed):
        return 1.0
    return float((1 + (null >= observed).sum()) / (1 + len(null)))
