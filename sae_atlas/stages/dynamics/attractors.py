"""Attractors per rollout condition, as tables: each region's flow statistics with bootstrap
intervals, permutation p-values, BH q-values and the claim; the transition probabilities with
intervals; the return-to-assistant curves; the basins of claimed attractors.

`flow_tables(regions, meta, names, assistant, ...)` splits the rollouts by `meta["experiment"]`
(persona_prompt, persona_once, scene, self_talk, ...) and runs `flow` on each; the family of
tests (BH) is every condition x visited region, per statistic. Cost: `flow`'s, per condition,
plus a stationary distribution per bootstrap resample (at most STATIONARY_RESAMPLES of them, 500
turns each): about a second per condition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sae_atlas.stages.dynamics.flow import (
    Flow,
    bootstrap_weights,
    flow_of,
    interval,
    path_arrays,
    permutation_flow,
    upper_p,
)
from sae_atlas.stages.dynamics.markov import (
    predicted_return,
    row_normalised,
    stationary_distribution,
)
from sae_atlas.stages.dynamics.repetition import REPETITION
from sae_atlas.stats import benjamini_hochberg

STATIONARY_RESAMPLES = 500
"""Bootstrap resamples of the stationary distribution (each a 500-turn Cesaro average)."""


@dataclass(frozen=True)
class ConditionFlow:
    """One condition's rollouts: point statistics, per bootstrap resample [B] and per
    permutation [N]; transition counts [r, r] and per resample [B, r, r]; stationary
    distribution and leak [r] and the stationary per resample [B', r]."""

    flow: Flow
    boot: Flow
    null: Flow
    counts: np.ndarray
    boot_counts: np.ndarray
    stationary: np.ndarray
    leak: np.ndarray
    boot_stationary: np.ndarray


def condition_flow(
    regions: np.ndarray,
    n_regions: int,
    assistant: int,
    max_lag: int,
    n_bootstrap: int,
    seed: int,
) -> ConditionFlow:
    """`flow` and Markov statistics of one condition's region paths [n, T] (max_lag < T)."""
    arrays = path_arrays(regions, n_regions, max_lag)
    total = arrays.total()
    boot = arrays.weighted(bootstrap_weights(len(regions), n_bootstrap, seed))
    counts = total.lagged[0]
    stationary, leak = stationary_distribution(row_normalised(counts), total.start)
    resampled = [
        stationary_distribution(row_normalised(c), s, steps=500)[0]
        for c, s in zip(
            boot.lagged[:STATIONARY_RESAMPLES, 0], boot.start[:STATIONARY_RESAMPLES], strict=True
        )
    ]
    return ConditionFlow(
        flow=flow_of(total, assistant),
        boot=flow_of(boot, assistant),
        null=permutation_flow(regions, n_regions, assistant, n_bootstrap, seed + 1),
        counts=counts,
        boot_counts=boot.lagged[:, 0],
        stationary=stationary,
        leak=leak,
        boot_stationary=np.stack(resampled),
    )


def region_rows(result: ConditionFlow, names: Sequence[str]) -> pd.DataFrame:
    """One row per region: shares, gain and hold (lag 1) with intervals, nulls and p-values,
    stationary share with its interval, leak and observed exits (`no_exit`: none observed)."""
    flow, boot, null = result.flow, result.boot, result.null
    gain_low, gain_high = interval(boot.gain)
    excess = boot.hold[..., 0] - boot.hold_null[..., 0]
    excess_low, excess_high = interval(excess)
    hold_low, hold_high = interval(boot.hold[..., 0])
    stat_low, stat_high = interval(result.boot_stationary)
    exits = result.counts.sum(1) - np.diag(result.counts)
    return pd.DataFrame(
        {
            "region": np.arange(len(names)),
            "region_name": list(names),
            "start_share": flow.start,
            "end_share": flow.end,
            "occupancy": flow.occupancy,
            "gain": flow.gain,
            "gain_low": gain_low,
            "gain_high": gain_high,
            "gain_p": upper_p(null.end, flow.end),
            "hold": flow.hold[:, 0],
            "hold_low": hold_low,
            "hold_high": hold_high,
            "hold_null": flow.hold_null[:, 0],
            "hold_excess_low": excess_low,
            "hold_excess_high": excess_high,
            "hold_p": upper_p(null.hold[..., 0], flow.hold[:, 0]),
            "stationary": result.stationary,
            "stationary_low": stat_low,
            "stationary_high": stat_high,
            "leak": result.leak,
            "exits": exits,
            "no_exit": result.counts.sum(1) == 0,
        }
    )


def claim(table: pd.DataFrame, fdr: float) -> pd.DataFrame:
    """`table` (region rows of every condition) with BH q-values over its visited rows, per
    statistic, and `attractor`: gain and hold excess above 0 in the bootstrap, both q <= fdr,
    and a persona region (the repetition state is a loop of the text, never an attractor)."""
    visited = (table["occupancy"] > 0).to_numpy()
    out = table.assign(gain_q=np.nan, hold_q=np.nan)
    for stat in ("gain", "hold"):
        out.loc[visited, f"{stat}_q"] = benjamini_hochberg(out.loc[visited, f"{stat}_p"].to_numpy())
    return out.assign(
        attractor=visited
        & (out["gain_low"] > 0).to_numpy()
        & (out["hold_excess_low"] > 0).to_numpy()
        & (out["gain_q"] <= fdr).to_numpy()
        & (out["hold_q"] <= fdr).to_numpy()
        & (out["region_name"] != REPETITION).to_numpy()
    )


def return_rows(result: ConditionFlow, names: Sequence[str], assistant: int) -> pd.DataFrame:
    """One row per region and lag k: P(in the assistant region k turns later | here now), its
    interval, its permutation-null expectation, the pairs behind it and the fitted chain's
    prediction (markov)."""
    flow = result.flow
    low, high = interval(result.boot.back)
    lags = flow.back.shape[1]
    markov = predicted_return(row_normalised(result.counts), assistant, lags)
    r = len(names)
    return pd.DataFrame(
        {
            "region": np.repeat(np.arange(r), lags),
            "region_name": np.repeat(np.asarray(names, dtype=object), lags),
            "lag": np.tile(np.arange(1, lags + 1), r),
            "pairs": flow.pairs.ravel(),
            "p_return": flow.back.ravel(),
            "ci_low": low.ravel(),
            "ci_high": high.ravel(),
            "null": flow.back_null.ravel(),
            "markov": markov.ravel(),
        }
    )


def transition_rows(result: ConditionFlow, names: Sequence[str]) -> pd.DataFrame:
    """One row per observed move (count > 0) and per exit-less region's row: from, to, count,
    P(to | from) with its bootstrap interval (NaN row: no observed exit)."""
    matrix = row_normalised(result.counts)
    low, high = interval(row_normalised_batch(result.boot_counts))
    rows = []
    for i, j in zip(*np.nonzero((result.counts > 0) | ~np.isfinite(matrix)), strict=True):
        if not np.isfinite(matrix[i, j]) and j != i:
            continue
        rows.append(
            {
                "from": names[i],
                "to": names[j] if np.isfinite(matrix[i, j]) else "",
                "count": result.counts[i, j],
                "p": matrix[i, j],
                "ci_low": low[i, j],
                "ci_high": high[i, j],
            }
        )
    return pd.DataFrame(rows, columns=["from", "to", "count", "p", "ci_low", "ci_high"])


def row_normalised_batch(counts: np.ndarray) -> np.ndarray:
    """row_normalised over a leading batch axis: [B, r, r] counts -> [B, r, r]."""
    totals = counts.sum(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, counts / np.where(totals > 0, totals, 1), np.nan)


def basin_rows(regions: np.ndarray, starts: Sequence[str], names: Sequence[str]) -> pd.DataFrame:
    """One row per start and region it visits: rollouts, share starting and ending there."""
    starts_arr = np.asarray(starts, dtype=object)
    rows = []
    for start in dict.fromkeys(starts):
        paths = regions[starts_arr == start]
        for r in np.unique(paths):
            rows.append(
                {
                    "start": start,
                    "region_name": names[r],
                    "n": len(paths),
                    "start_share": float((paths[:, 0] == r).mean()),
                    "end_share": float((paths[:, -1] == r).mean()),
                    "occupancy": float((paths == r).mean()),
                }
            )
    return pd.DataFrame(rows)


def flow_tables(
    regions: np.ndarray,
    meta: pd.DataFrame,
    names: Sequence[str],
    assistant: int,
    max_lag: int,
    n_bootstrap: int,
    fdr: float,
    seed: int,
) -> dict[str, pd.DataFrame]:
    """Per condition (meta["experiment"]) of rollouts with region paths `regions` [n, T]: the
    tables `flow` (regions, claims), `transitions`, `return_to_assistant` and `basins`."""
    tables: dict[str, list[pd.DataFrame]] = {
        "flow": [],
        "transitions": [],
        "return_to_assistant": [],
        "basins": [],
    }
    lags = min(max_lag, regions.shape[1] - 1)
    for condition, rows in meta.groupby("experiment", sort=False).indices.items():
        paths = regions[rows]
        result = condition_flow(paths, len(names), assistant, lags, n_bootstrap, seed)
        starts = meta["start"].to_numpy()[rows].tolist()
        for name, table in (
            ("flow", region_rows(result, names).assign(n_rollouts=len(rows))),
            ("transitions", transition_rows(result, names)),
            ("return_to_assistant", return_rows(result, names, assistant)),
            ("basins", basin_rows(paths, starts, names)),
        ):
            tables[name].append(table.assign(experiment=condition))
    out = {name: pd.concat(parts, ignore_index=True) for name, parts in tables.items()}
    out["flow"] = claim(out["flow"], fdr)
    return out
