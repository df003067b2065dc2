"""The dynamics/ entries of the atlas: each table built from the experiments' results, every
entry's and column's description, and the writing of tables (text made storable).

`dynamics_tables` turns the natural rollouts and their Markov statistics into the trajectories,
regions, attractors, robustness and drift tables; `DESCRIPTIONS` and `COLUMNS` describe every
entry and column (the atlas is self-describing); `write_entry` writes one entry, a table with its
columns' descriptions, its sampled text with NUL characters escaped (HDF5 text cannot hold them).
pandas on small tables: milliseconds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from feature_store.atlas import Atlas, AtlasWriter
from sae_atlas.stages.dynamics.drift import drift_curves, relative_to_baseline
from sae_atlas.stages.dynamics.markov import Attractor
from sae_atlas.stages.dynamics.rollouts import Rollouts
from sae_atlas.stages.dynamics.space import PersonaMap

DESCRIPTIONS: dict[str, str] = {
    "trajectories": "one row per rollout and assistant turn: provenance, region, assistant-axis "
    "projection, text",
    "regions": "regions of persona space: persona clusters",
    "attractors": "closed classes of the transition matrix: per attractor and start, basin share "
    "and relaxation turns",
    "attractor_robustness": "attractor sets found when the rollouts are resampled with "
    "replacement: share of resamples with each closed class",
    "drift": "assistant-axis projection per turn, mean and 95% CI per start category",
    "drift_baseline": "assistant-axis projection per turn minus the default persona's rollout "
    "with the same user turns and seed (what turn position alone does): paired mean and 95% CI "
    "per start category",
    "drift_by_start": "drift and drift_baseline per starting persona or scene (curve: raw or "
    "baseline)",
    "coords": "persona-space coordinates [rows of trajectories, n_components] of each turn "
    "(NaN: an empty response)",
    "region_centroids": "coordinates [n_regions, n_components] of each region's centroid",
    "transition_matrix": "row-stochastic turn-to-turn transition matrix [n_regions, n_regions] "
    "of the rollouts (persona_prompt and scene)",
    "kick": "steering kick at turn 0 and the relaxation after it: per target, control and turn, "
    "the distance in persona space to the unkicked conversation on the same prompt and seed",
    "steering": "persona classifier's probability of the target on the kicked turn: persona "
    "kick minus matched random kick, paired over prompts, bootstrap 95% CI",
    "steering_responses": "kicked turns, scored",
    "markers": "assistant-style marker rates with and without zero- and mean-ablating the "
    "puppeteer features (paired over personas x prompts, bootstrap 95% CI); empty without "
    "puppeteer features",
    "trigger_scan": "trigger scan: SAE features firing on responses only under a wrapper "
    "(candidates on the discovery prompts, Fisher test on held-out prompts, BH over every "
    "wrapper)",
    "summary": "JSON: config, model, timings, headline numbers",
}
"""Description of every entry of the atlas's dynamics/ group (trigger_scan: the wrapper scan's
table, under its stored name)."""

COLUMNS: dict[str, str] = {
    "experiment": "persona_prompt (a system prompt, then neutral questions) or scene (no "
    "system prompt after a scene-setting first turn)",
    "start": "starting persona, or scene:<name>",
    "group": "the start's persona category (scene for scenes)",
    "seed": "rollout seed index",
    "rollout": "row of the conversation among the rollouts",
    "turn": "assistant turn, from 0",
    "region": "nearest region (row of dynamics/regions)",
    "region_name": "name of the region",
    "axis_projection": "projection of the turn's mean residual on the unit assistant axis",
    "text": "the assistant's turn",
    "id": "region id (row of transition_matrix)",
    "name": "region name (the default persona's region is assistant)",
    "personas": "personas of the region (;-separated)",
    "stationary": "long-run share of turns in the region",
    "in_attractor": "share of bootstrap resamples of the rollouts in which the region lies in "
    "an attractor",
    "found": "share of bootstrap resamples of the rollouts with exactly this attractor",
    "in_estimate": "the attractor is found on all rollouts (dynamics/attractors)",
    "attractor": "attractor id",
    "regions": "regions of the attractor (;-separated names)",
    "stationary_mass": "stationary mass of the attractor",
    "basin": "share of the start's rollouts that end in the attractor",
    "relaxation": "mean turns until the start's rollouts enter the attractor for good (NaN: "
    "none does)",
    "curve": "raw (the projection) or baseline (minus the default persona's rollout on the "
    "same user turns and seed)",
    "mean": "mean over rollouts",
    "ci_low": "lower end of the 95% confidence interval",
    "ci_high": "upper end of the 95% confidence interval",
    "n": "number of values",
    "control": "none (no kick), persona (kick along the target's direction) or random "
    "(matched random direction)",
    "target": "the persona steered toward (all: every target pooled)",
    "in_target_region": "share of turns in the target's region",
    "prompt": "prompt index",
    "p_target": "persona classifier's probability of the target persona",
    "mean_diff": "mean paired difference of p_target, persona kick minus random kick",
    "p_persona": "mean p_target under the persona kick",
    "p_random": "mean p_target under the random kick",
    "p_none": "mean p_target without a kick",
    "marker": "assistant-style marker (sae_atlas.stages.dynamics.MARKERS; any: some marker)",
    "rate_off": "share of responses with the marker, no ablation",
    "rate_on": "share of responses with the marker, the ablate_tag (puppeteer) features ablated",
    "ablation": "zero (the features' activations set to 0) or mean (set to their mean over "
    "response tokens)",
    "diff": "mean paired difference rate_on - rate_off",
    "wrapper": "wrapper of the user's message (sae_atlas.stages.dynamics.WRAPPERS)",
    "feature": "SAE feature",
    "cluster": "feature cluster (-1: noise)",
    "cluster_kind": "kind of the feature's cluster",
    "label": "feature label",
    "rate_wrapped": "firing rate on responses with the wrapper, discovery prompts",
    "rate_plain": "firing rate on responses without it, discovery prompts",
    "heldout_rate_wrapped": "firing rate with the wrapper, held-out prompts",
    "heldout_rate_plain": "firing rate without it, held-out prompts",
    "p_value": "one-sided Fisher exact p-value on held-out prompts",
    "q_value": "Benjamini-Hochberg q-value over every wrapper",
    "confirmed": "q_value <= fdr",
}
"""Descriptions of every column of the dynamics/ tables."""

NUL_SYMBOL = "\u2400"
"""What a NUL character in sampled text is stored as (U+2400, the symbol for null)."""


def storable_text(table: pd.DataFrame) -> pd.DataFrame:
    """`table` with the NUL characters of its text columns escaped as NUL_SYMBOL (HDF5 text
    cannot hold NUL; a model can sample it); `table` itself when no text holds one."""
    columns = [
        name
        for name in table.columns
        if table[name].map(lambda value: isinstance(value, str) and "\x00" in value).any()
    ]
    if not columns:
        return table
    escaped = {name: table[name].str.replace("\x00", NUL_SYMBOL, regex=False) for name in columns}
    return table.assign(**escaped)


def write_entry(writer: AtlasWriter, name: str, data: pd.DataFrame | np.ndarray | str) -> None:
    """dynamics/<name>: a table (its columns described from COLUMNS, its text storable), an
    array or a JSON text, described from DESCRIPTIONS."""
    if isinstance(data, pd.DataFrame):
        columns = {c: COLUMNS[c] for c in data.columns}
        writer.write_dynamics(
            name, storable_text(data), DESCRIPTIONS[name], column_descriptions=columns
        )
    else:
        writer.write_dynamics(name, data, DESCRIPTIONS[name])


def stored_summary(atlas_path: str | Path) -> dict[str, Any] | None:
    """dynamics/summary of an atlas (None when it has none)."""
    with Atlas.open(atlas_path) as atlas:
        if "summary" not in atlas.dynamics_names():
            return None
        return dict(json.loads(str(atlas.dynamics("summary"))))


def trajectories_table(rollouts: Rollouts, pmap: PersonaMap) -> pd.DataFrame:
    """One row per rollout and turn: the rollout's provenance, the turn's region (id and name),
    assistant-axis projection and text ("" beyond the turns it has)."""
    n, turns = rollouts.regions.shape
    table = rollouts.meta.loc[np.repeat(np.arange(n), turns)].reset_index(drop=True)
    return table.assign(
        rollout=np.repeat(np.arange(n), turns),
        turn=np.tile(np.arange(turns), n),
        region=rollouts.regions.ravel(),
        region_name=np.asarray(pmap.names, dtype=object)[rollouts.regions.ravel()],
        axis_projection=rollouts.axis.ravel(),
        text=[t[k] if k < len(t) else "" for t in rollouts.texts for k in range(turns)],
    )


def baseline_rows(meta: pd.DataFrame, default: str) -> np.ndarray:
    """bool [n]: the natural rollouts that are the drift baseline (the default persona's)."""
    return ((meta["experiment"] == "persona_prompt") & (meta["start"] == default)).to_numpy()


def drift_tables(
    natural: Rollouts, default: str
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Assistant-axis drift per turn: per category raw, per category minus the default
    persona's rollout on the same seed (paired: 95% CIs of the paired differences), and per
    start both (a `curve` column: raw or baseline; the start in `start`)."""
    meta = natural.meta
    relative = relative_to_baseline(
        natural.axis, meta["seed"].tolist(), baseline_rows(meta, default)
    )
    starts = meta["start"].tolist()
    by_start = pd.concat(
        [
            drift_curves(values, starts).rename(columns={"group": "start"}).assign(curve=curve)
            for values, curve in ((natural.axis, "raw"), (relative, "baseline"))
        ],
        ignore_index=True,
    )
    categories = meta["group"].tolist()
    return drift_curves(natural.axis, categories), drift_curves(relative, categories), by_start


def region_table(
    pmap: PersonaMap, stationary: np.ndarray, in_attractor: np.ndarray
) -> pd.DataFrame:
    """One row per region: id, name, member personas, stationary share and the share of
    bootstrap resamples in which it lies in an attractor."""
    return pd.DataFrame(
        {
            "id": np.arange(len(pmap.names)),
            "name": list(pmap.names),
            "personas": [";".join(m) for m in pmap.members],
            "stationary": stationary,
            "in_attractor": in_attractor,
        }
    )


def robustness_table(
    pmap: PersonaMap, found: dict[tuple[int, ...], float], attractors: Sequence[Attractor]
) -> pd.DataFrame:
    """One row per attractor set found in the bootstrap (`found`: share of resamples) or on all
    rollouts (found 0.0 when the bootstrap never finds it), with whether it is in the estimate."""
    estimated = {a.regions for a in attractors}
    shares = {**found, **{m: 0.0 for m in estimated if m not in found}}
    return pd.DataFrame(
        [
            {
                "regions": ";".join(pmap.names[r] for r in members),
                "found": share,
                "in_estimate": members in estimated,
            }
            for members, share in shares.items()
        ],
        columns=["regions", "found", "in_estimate"],
    )


def basin_table(pmap: PersonaMap, attractors: Sequence[Attractor]) -> pd.DataFrame:
    """One row per attractor and start: the attractor's regions and stationary mass, the start's
    basin share and relaxation turns (NaN: none of its rollouts settles there)."""
    return pd.DataFrame(
        [
            {
                "attractor": k,
                "regions": ";".join(pmap.names[r] for r in a.regions),
                "stationary_mass": a.stationary_mass,
                "start": start,
                "basin": share,
                "relaxation": a.relaxation.get(start, float("nan")),
            }
            for k, a in enumerate(attractors)
            for start, share in a.basin.items()
        ],
        columns=["attractor", "regions", "stationary_mass", "start", "basin", "relaxation"],
    )


def natural_arrays(
    rollouts: Rollouts, matrix: np.ndarray, pmap: PersonaMap
) -> dict[str, np.ndarray]:
    """The arrays of the natural rollouts, by entry name: each turn's coordinates [rows of
    trajectories, k] and the region centroids [r, k] (float32), the transition matrix [r, r]."""
    return {
        "coords": rollouts.coords.reshape(-1, rollouts.coords.shape[-1]).astype(np.float32),
        "region_centroids": pmap.centroids.astype(np.float32),
        "transition_matrix": matrix,
    }


def dynamics_tables(
    natural: Rollouts,
    pmap: PersonaMap,
    stationary: np.ndarray,
    attractors: Sequence[Attractor],
    robustness: tuple[dict[tuple[int, ...], float], np.ndarray],
) -> dict[str, pd.DataFrame]:
    """The tables of the natural rollouts, by entry name: trajectories, regions, attractors and
    their robustness (`attractor_robustness`), drift raw and baseline-subtracted."""
    found, in_attractor = robustness
    drift, drift_baseline, drift_by_start = drift_tables(natural, pmap.default)
    return {
        "trajectories": trajectories_table(natural, pmap),
        "regions": region_table(pmap, stationary, in_attractor),
        "attractors": basin_table(pmap, attractors),
        "attractor_robustness": robustness_table(pmap, found, attractors),
        "drift": drift,
        "drift_baseline": drift_baseline,
        "drift_by_start": drift_by_start,
    }
