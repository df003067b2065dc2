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
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from feature_store.atlas import Atlas, AtlasWriter
from sae_atlas.stages.dynamics.drift import drift_curves, relative_to_baseline
from sae_atlas.stages.dynamics.repetition import state_names
from sae_atlas.stages.dynamics.rollouts import Rollouts
from sae_atlas.stages.dynamics.space import PersonaMap

DESCRIPTIONS: dict[str, str] = {
    "trajectories": "one row per rollout and assistant turn: provenance, region, assistant-axis "
    "projection, text",
    "regions": "states of the rollouts: the regions of persona space (persona clusters), then "
    "the repetition state (turns that repeat the previous assistant turn, word overlap >= 0.9)",
    "flow": "per rollout condition and region: shares at the first and last turn, occupancy, "
    "gain (last-turn share minus occupancy) and hold (P(same region next turn)) with bootstrap "
    "95% intervals over rollouts, against the null of each rollout's turns permuted (p-values, "
    "BH q-values over conditions x visited regions), the stationary share with its interval, "
    "observed exits, and whether the region is claimed an attractor",
    "transitions": "per rollout condition: every observed move between regions with its count "
    "and P(to | from) with a bootstrap 95% interval over rollouts; a region with no observed "
    "exit has one row with an empty `to` and NaN P",
    "return_to_assistant": "per rollout condition, region and lag k: P(in the assistant region "
    "k turns later | in the region now) from the rollouts, bootstrap 95% interval, the "
    "permuted-turns null and the fitted chain's prediction",
    "basins": "per rollout condition, start and region visited: rollouts and shares starting, "
    "ending and spending turns there",
    "drift": "assistant-axis projection per turn, mean and 95% CI per start category",
    "drift_baseline": "assistant-axis projection per turn minus the default persona's rollout "
    "with the same user turns and seed (what turn position alone does): paired mean and 95% CI "
    "per start category",
    "drift_by_start": "drift and drift_baseline per starting persona or scene (curve: raw or "
    "baseline)",
    "coords": "persona-space coordinates [rows of trajectories, n_components] of each turn "
    "(NaN: an empty response)",
    "region_centroids": "coordinates [n_regions, n_components] of each region's centroid: the "
    "mean of its personas' single-turn coordinates",
    "turn_centroids": "coordinates [n_turns, n_regions, n_components] of each region's centroid "
    "at each turn of multi-turn chats built from its personas' corpus responses: the turns of "
    "rollouts are placed by these",
    "resolution": "how well the regions are resolved: per method (multi_turn: turn centroids "
    "from one fold of prompt variants assign the other fold's calibration turns; single_turn: "
    "the personas' own centroids) and turn, the share of turns placed in their persona's "
    "region, against chance (the largest region's share)",
    "transition_matrix": "turn-to-turn transition matrix [n_regions + 1, n_regions + 1] between "
    "the states (the persona regions, then repetition) of every rollout pooled, from counts (a "
    "row of NaN: the state has no observed exit)",
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
    "experiment": "rollout condition: persona_prompt (a system prompt kept every turn, neutral "
    "questions), persona_once (the persona's system prompt for the first turn only, an empty "
    "one after), scene (no system prompt after a scene-setting first turn) or self_talk (the "
    "model writes both sides after an opener)",
    "start": "starting persona, or scene:<name>",
    "group": "the start's persona category (scene for scenes)",
    "seed": "rollout seed index",
    "rollout": "row of the conversation among the rollouts",
    "turn": "assistant turn, from 0",
    "region": "state (row of dynamics/regions): the nearest persona region, or the repetition "
    "state (the last row) for a turn that repeats the previous assistant turn (word overlap >= "
    "0.9)",
    "region_name": "name of the region (repetition: the repetition state)",
    "persona_region": "nearest persona region (row of dynamics/regions), repeated turns included",
    "axis_projection": "projection of the turn's mean residual on the unit assistant axis",
    "text": "the assistant's turn",
    "id": "region id (row of transition_matrix)",
    "name": "region name (the default persona's region is assistant)",
    "personas": "personas of the region (;-separated)",
    "stationary": "long-run share of turns in the region under the fitted chain (NaN: no "
    "observed exit)",
    "stationary_low": "lower end of the stationary share's bootstrap 95% interval",
    "stationary_high": "upper end of the stationary share's bootstrap 95% interval",
    "n_rollouts": "rollouts of the condition",
    "start_share": "share of rollouts in the region at the first turn",
    "end_share": "share of rollouts in the region at the last turn",
    "occupancy": "share of all turns in the region (the last-turn share expected when each "
    "rollout's turns are permuted)",
    "gain": "end_share minus occupancy: flow into the region over the conversation",
    "gain_low": "lower end of gain's bootstrap 95% interval over rollouts",
    "gain_high": "upper end of gain's bootstrap 95% interval over rollouts",
    "gain_p": "one-sided permutation p-value of end_share (each rollout's turns permuted)",
    "gain_q": "Benjamini-Hochberg q-value of gain_p over conditions x visited regions",
    "hold": "P(in the same region next turn | in it now)",
    "hold_low": "lower end of hold's bootstrap 95% interval",
    "hold_high": "upper end of hold's bootstrap 95% interval",
    "hold_null": "hold expected when each rollout's turns are permuted",
    "hold_excess_low": "lower end of the bootstrap 95% interval of hold minus hold_null",
    "hold_excess_high": "upper end of the bootstrap 95% interval of hold minus hold_null",
    "hold_p": "one-sided permutation p-value of hold",
    "hold_q": "Benjamini-Hochberg q-value of hold_p over conditions x visited regions",
    "leak": "share of the region's moves into regions without an observed exit",
    "exits": "observed moves out of the region to another",
    "no_exit": "no move from the region was observed (it was seen at last turns only): its "
    "row of the transition matrix is unknown, not a self-loop",
    "attractor": "claimed attractor: gain and hold excess above 0 in the bootstrap and both "
    "q-values <= fdr",
    "method": "multi_turn (cross-fitted turn centroids) or single_turn (the personas' "
    "single-turn centroids)",
    "accuracy": "share of calibration turns placed in their own persona's region",
    "chance": "share of the largest region among the calibration turns",
    "from": "region the move starts in",
    "to": "region the move ends in (empty: no observed exit)",
    "count": "number of moves observed",
    "p": "P(to | from) from the counts",
    "lag": "turns later (k)",
    "pairs": "pairs of turns (t, t + k) starting in the region",
    "p_return": "P(in the assistant region k turns later | in the region now)",
    "null": "p_return expected when each rollout's turns are permuted",
    "markov": "p_return the fitted transition matrix predicts ((P^k)[region, assistant])",
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
    array or a JSON text, described from DESCRIPTIONS. (Experiments run on a built atlas go to
    experiments/ instead: sae_atlas.stages.record.)"""
    if isinstance(data, pd.DataFrame):
        described = {c: COLUMNS[c] for c in data.columns}
        writer.write_dynamics(
            name, storable_text(data), DESCRIPTIONS[name], column_descriptions=described
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
    """One row per rollout and turn: the rollout's provenance, the turn's state (id and name:
    a persona region, or repetition), its nearest persona region, assistant-axis projection and
    text ("" beyond the turns it has)."""
    n, turns = rollouts.regions.shape
    table = rollouts.meta.loc[np.repeat(np.arange(n), turns)].reset_index(drop=True)
    states = rollouts.states(len(pmap.names)).ravel()
    return table.assign(
        rollout=np.repeat(np.arange(n), turns),
        turn=np.tile(np.arange(turns), n),
        region=states,
        region_name=np.asarray(state_names(pmap.names), dtype=object)[states],
        persona_region=rollouts.regions.ravel(),
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


def region_table(pmap: PersonaMap, stationary: np.ndarray) -> pd.DataFrame:
    """One row per state: id, name, member personas and stationary share (every rollout
    pooled; NaN: no observed exit); the last state is repetition (no personas)."""
    names = state_names(pmap.names)
    return pd.DataFrame(
        {
            "id": np.arange(len(names)),
            "name": list(names),
            "personas": [";".join(m) for m in pmap.members] + [""],
            "stationary": stationary,
        }
    )


def natural_arrays(
    rollouts: Rollouts, matrix: np.ndarray, pmap: PersonaMap
) -> dict[str, np.ndarray]:
    """The arrays of the natural rollouts, by entry name: each turn's coordinates [rows of
    trajectories, k], the region centroids [r, k] and, when calibrated, per turn [T, r, k]
    (float32), the transition matrix [r, r]."""
    turn_centroids = (
        {}
        if pmap.turn_centroids is None
        else {"turn_centroids": pmap.turn_centroids.astype(np.float32)}
    )
    return {
        "coords": rollouts.coords.reshape(-1, rollouts.coords.shape[-1]).astype(np.float32),
        "region_centroids": pmap.centroids.astype(np.float32),
        **turn_centroids,
        "transition_matrix": matrix,
    }


def dynamics_tables(
    natural: Rollouts,
    pmap: PersonaMap,
    stationary: np.ndarray,
    flow: dict[str, pd.DataFrame],
) -> dict[str, pd.DataFrame]:
    """The tables of the natural rollouts, by entry name: trajectories, regions, the flow
    tables per condition (`flow_tables`: flow, transitions, return_to_assistant, basins), drift
    raw and baseline-subtracted."""
    drift, drift_baseline, drift_by_start = drift_tables(natural, pmap.default)
    return {
        "trajectories": trajectories_table(natural, pmap),
        "regions": region_table(pmap, stationary),
        **flow,
        "drift": drift,
        "drift_baseline": drift_baseline,
        "drift_by_start": drift_by_start,
    }


def natural_entries(
    natural: Rollouts,
    pmap: PersonaMap,
    stationary: np.ndarray,
    flow: dict[str, pd.DataFrame],
    resolution: pd.DataFrame,
    matrix: np.ndarray,
) -> dict[str, pd.DataFrame | np.ndarray]:
    """Every dynamics/ entry of the natural rollouts, by name, in the order they are written:
    `dynamics_tables`, the regions' resolution and `natural_arrays`."""
    return {
        **dynamics_tables(natural, pmap, stationary, flow),
        "resolution": resolution,
        **natural_arrays(natural, matrix, pmap),
    }
