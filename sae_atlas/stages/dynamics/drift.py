"""Drift curves: a per-turn scalar (the projection on the assistant axis, a distance) averaged per
group of rollouts with a 95% confidence interval, raw or minus a baseline rollout on the same user
turns and seed (`relative_to_baseline`: what turn position alone does). numpy on small arrays:
milliseconds; returns arrays and one table row per group and turn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import t as student_t

from sae_atlas.errors import SaeAtlasError


def relative_to_baseline(
    values: np.ndarray, pairs: Sequence[Any], baseline: np.ndarray
) -> np.ndarray:
    """values [n, T] minus the baseline row with the same pair key: [n, T].

    pairs: one key per row (the seed: rows with the same key saw the same user turns and
    sampling seeds); baseline: bool [n], the baseline rows (one per key).
    """
    values = np.asarray(values, dtype=float)
    keys = np.asarray(pairs)
    baseline = np.asarray(baseline, bool)
    rows = {key: i for i, key in zip(np.flatnonzero(baseline), keys[baseline], strict=True)}
    if len(rows) != int(baseline.sum()):
        raise SaeAtlasError("baseline: give one baseline row per pair key")
    missing = sorted({str(k) for k in keys} - {str(k) for k in rows})
    if missing:
        raise SaeAtlasError(f"baseline: no baseline row for pair key(s) {missing}")
    return values - values[[rows[key] for key in keys]]


def drift_curves(values: np.ndarray, groups: Sequence[str]) -> pd.DataFrame:
    """Per group and turn: mean of `values` [n_rollouts, n_turns], its 95% CI (Student t: a
    start has a handful of seeds) and count."""
    values = np.asarray(values, dtype=float)
    rows = []
    names = np.asarray(groups)
    for group in dict.fromkeys(groups):
        block = values[names == group]
        for turn in range(values.shape[1]):
            column = block[:, turn]
            column = column[np.isfinite(column)]
            mean = float(column.mean()) if len(column) else float("nan")
            sem = float(column.std(ddof=1) / np.sqrt(len(column))) if len(column) > 1 else 0.0
            half = float(student_t.ppf(0.975, len(column) - 1)) * sem if sem > 0 else 0.0
            rows.append(
                {
                    "group": group,
                    "turn": turn,
                    "mean": mean,
                    "ci_low": mean - half,
                    "ci_high": mean + half,
                    "n": len(column),
                }
            )
    return pd.DataFrame(rows)
