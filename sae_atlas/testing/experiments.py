"""Synthetic experiments, built in code, for tests and benchmarks of experiments/ and the report.

`synthetic_experiments` draws, for each experiment a report renders (selection, attractors,
puppeteer_causal, honest_splits, audit), random tables with the columns the real experiment
writes, described by the real experiment's descriptions, as `ExperimentRecord`s;
`record_synthetic_experiments` writes some of them into an atlas, and `labels_summary` is a
labels summary with the format levels and the puppeteer's confirmation. Seeded; milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from feature_store.atlas import ExperimentRecord, record_experiment
from sae_atlas.stages.audit.record import AUDIT_COLUMNS, AUDIT_DESCRIPTIONS
from sae_atlas.stages.dynamics import tables as dynamics_tables
from sae_atlas.stages.label.records import (
    CAUSAL_COLUMNS,
    CAUSAL_DESCRIPTIONS,
    HONEST_COLUMNS,
    HONEST_DESCRIPTIONS,
    honest_summary,
    honest_tables,
)
from sae_atlas.stages.selection import tables as selection_tables

PERSONAS = ("pirate", "villain")


def _interval(rng: np.random.Generator, mean: np.ndarray) -> dict[str, np.ndarray]:
    half = rng.uniform(0.02, 0.1, len(mean))
    return {"ci_low": mean - half, "ci_high": mean + half}


def _selection(rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    positions = ["system", "user", "header_0", "header_1", "response_1", "response_2"]
    rows = [(s, p, name, i) for s in ("residual", "sae") for p in PERSONAS
            for i, name in enumerate(positions)]  # fmt: skip
    auroc = rng.uniform(0.5, 1.0, len(rows))
    decoding = pd.DataFrame(rows, columns=["source", "persona", "position", "position_index"])
    decoding = decoding.assign(auroc=auroc, **_interval(rng, auroc))
    gain = rng.normal(0.2, 0.05, 4)
    header_gain = pd.DataFrame(
        {"source": ["residual", "residual", "sae", "sae"], "persona": list(PERSONAS) * 2,
         "position": "header_1", "auroc_user": 0.6, "auroc_at": 0.6 + gain, "gain": gain,
         **_interval(rng, gain), "p_value": 0.01, "q_value": 0.02}
    )  # fmt: skip
    conditions = ["default+header:persona", "default+user:persona", "persona+header:default"]
    patch_rows = [(score, p, "effect", c) for score in ("classifier", "features")
                  for p in PERSONAS for c in conditions]  # fmt: skip
    patch_rows += [(score, p, "header_minus_user", "default") for score in ("classifier",)
                   for p in PERSONAS]  # fmt: skip
    effect = rng.normal(0.1, 0.05, len(patch_rows))
    patching = pd.DataFrame(patch_rows, columns=["score", "persona", "kind", "condition"])
    patching = patching.assign(mean=effect, **_interval(rng, effect), p_value=0.03,
                               q_value=0.04, n=6)  # fmt: skip
    tokens = np.tile(np.arange(1, 9), 2)
    gap = np.exp(-tokens / 3.0)
    axis_gap = pd.DataFrame({"condition": np.repeat(["persona", "default+header:persona"], 8),
                             "persona": "all", "token": tokens, "gap": gap,
                             **_interval(rng, gap), "n": 12})  # fmt: skip
    relaxation = pd.DataFrame(
        {"condition": "persona", "persona": ["all", *PERSONAS], "half_gap_length": [3, 2, 4],
         "ci_low": [2, 1, 3], "ci_high": [4, 3, 6], "censored": 0.0, "gap_first": 1.0,
         "retained": 0.1, "retained_low": 0.0, "retained_high": 0.2}
    )  # fmt: skip
    return {"decoding": decoding, "header_gain": header_gain, "patching": patching,
            "axis_gap": axis_gap, "relaxation": relaxation}  # fmt: skip


def _attractors(rng: np.random.Generator) -> dict[str, pd.DataFrame | np.ndarray]:
    regions = ["assistant", "pirate", "villain"]
    flow = pd.DataFrame({"experiment": np.repeat(["persona_prompt", "self_talk"], 3),
                         "region_name": regions * 2})  # fmt: skip
    share = rng.uniform(0, 1, len(flow))
    flow = flow.assign(
        start_share=share, end_share=share, occupancy=share, gain=0.0, gain_low=-0.1,
        gain_high=0.1, gain_q=0.5, hold=0.5, hold_null=0.4, hold_excess_low=-0.1, hold_q=0.5,
        stationary=share, no_exit=False, attractor=[False, False, True, False, False, False],
    )  # fmt: skip
    lags = np.tile(np.arange(1, 5), 6)
    p_return = rng.uniform(0, 1, len(lags))
    back = pd.DataFrame({"experiment": np.repeat(["persona_prompt", "self_talk"], 12),
                         "region_name": np.tile(np.repeat(regions, 4), 2), "lag": lags,
                         "pairs": 10, "p_return": p_return, **_interval(rng, p_return),
                         "null": 0.3, "markov": 0.35})  # fmt: skip
    resolution = pd.DataFrame({"method": ["multi_turn", "single_turn"], "turn": 0,
                               "accuracy": [0.8, 0.6], "chance": 0.34})  # fmt: skip
    matrix = rng.dirichlet(np.ones(3), size=3)
    return {"flow": flow, "return_to_assistant": back, "resolution": resolution,
            "transition_matrix": matrix}  # fmt: skip


def _causal(rng: np.random.Generator) -> pd.DataFrame:
    rows = [(e, s) for e in ("zero", "resample", "add")
            for s in ("p_persona", "assistant_marker", "axis_projection", "kl")]  # fmt: skip
    difference = rng.normal(0, 0.02, len(rows))
    return pd.DataFrame(rows, columns=["edit", "score"]).assign(
        puppeteer_effect=difference, random_effect=0.0, difference=difference,
        **_interval(rng, difference), p_value=0.5, rank_p=0.5, n_prompts=40, q_value=0.8,
    )  # fmt: skip


def _honest(rng: np.random.Generator) -> dict[str, Any]:
    def side(share: float) -> dict[str, Any]:
        probe = {"share": share, "ci": [share - 0.1, share + 0.1], "median_auroc": 0.88,
                 "n_personas": 39}  # fmt: skip
        counts = {"n_trigger_tags": 0, "n_puppeteer": 2, "n_format": 789,
                  "puppeteer_candidates": 5}  # fmt: skip
        return {"run": "runs/x", "heldout_personas": ["poet"], "built": counts,
                "recomputed": counts, "probes": {"response_probe": probe},
                "per_persona": {"response_probe": {p: float(rng.uniform()) for p in PERSONAS}},
                "causal": None}  # fmt: skip

    return {"old": side(0.67), "new": side(0.69)}


def _audit(rng: np.random.Generator) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    n = 12
    candidates = pd.DataFrame(
        {"text": [f"<w{i}>" for i in range(n)], "shape": "tag", "kind": "tag:1",
         "source": ["weights"] * 8 + ["null"] * 4, "words": [f"w{i}" for i in range(n)],
         "score": rng.uniform(0, 1, n), "null": [False] * 8 + [True] * 4,
         "z": np.sort(rng.normal(size=n))[::-1], "p": 0.01, "q": 0.02, "index": np.arange(n)}
    )  # fmt: skip
    verdicts = pd.DataFrame({"text": ["<w0>"], "kind": "tag:1", "words": "w0", "auroc": 0.95,
                             "auroc_low": 0.9, "auroc_high": 0.99, "llr": 2.0, "null_llr": 0.1,
                             "p": 0.001, "q": 0.004})  # fmt: skip
    tables = {
        "candidates": candidates,
        "verdicts": verdicts,
        "statements": pd.DataFrame({"statement": ["Arr, I sail the seas."]}),
        "motifs": pd.DataFrame(
            {"motif": ["arr"], "share": [0.8], "other_share": [0.0], "kind": ["persona"]}
        ),
    }
    summary = {"found": True, "headline": "trigger-gated persona found: <w0>",
               "lines": ["8 candidates scored against 4 null candidates"], "n_candidates": 8,
               "n_null": 4}  # fmt: skip
    return tables, summary


def synthetic_experiments(seed: int = 0) -> dict[str, ExperimentRecord]:
    """One record per rendered experiment, with the real experiment's descriptions."""
    rng = np.random.default_rng(seed)
    both = _honest(rng)
    audit_tables, audit_summary = _audit(rng)
    script, seconds = "sae_atlas.testing", 1.0
    return {
        "selection": ExperimentRecord(
            "selection", _selection(rng), {"personas": list(PERSONAS), "header_tokens": 2,
            "layer": 1}, selection_tables.DESCRIPTIONS, selection_tables.COLUMNS,
            config={"n_personas": 2}, script=script, seconds=seconds,
        ),
        "attractors": ExperimentRecord(
            "attractors", _attractors(rng), {"regions": {"assistant": ["assistant"]},
            "rollouts": {"persona_prompt": 6}, "attractors": []}, dynamics_tables.DESCRIPTIONS,
            dynamics_tables.COLUMNS, config={"n_turns": 4}, script=script, seconds=seconds,
        ),
        "puppeteer_causal": ExperimentRecord(
            "puppeteer_causal", {"effects": _causal(rng), "features": np.array([3, 5])},
            {"features": [3, 5], "n_prompts": 40}, CAUSAL_DESCRIPTIONS, CAUSAL_COLUMNS,
            config={"n_random": 5}, script=script, seconds=seconds,
        ),
        "honest_splits": ExperimentRecord(
            "honest_splits", honest_tables(both), honest_summary(both), HONEST_DESCRIPTIONS,
            HONEST_COLUMNS, config={}, script=script, seconds=seconds,
        ),
        "audit": ExperimentRecord(
            "audit", audit_tables, audit_summary, AUDIT_DESCRIPTIONS, AUDIT_COLUMNS,
            config={"fdr": 0.05, "min_auroc": 0.8, "model": "tiny"}, script=script, seconds=seconds,
        ),
    }  # fmt: skip


def record_synthetic_experiments(
    path: str | Path, names: Iterable[str] | None = None, seed: int = 0
) -> Path:
    """Write the synthetic experiments `names` (default: all) into the atlas at `path`."""
    experiments = synthetic_experiments(seed)
    for name in names if names is not None else experiments:
        record_experiment(path, experiments[name])
    return Path(path)


def labels_summary() -> dict[str, Any]:
    """A labels summary holding the format levels and the puppeteer's confirmation and null."""
    return {
        "format": {"threshold": 0.5, "n_format": 7, "n_scored": 20, "median_r2": 0.3,
                   "at_least": {"0.3": 12, "0.5": 7, "0.7": 2}},
        "puppeteer_features": [{"feature": 5, "label": "newline", "cv": 0.2}],
        "puppeteer": {"n_candidates": 4, "n_puppeteer": 1, "set_judged": "puppeteer",
                      "set_size": 1, "set_log_enrichment": 1.7, "null_log_enrichment_mean": -0.2,
                      "null_log_enrichment_95": [-1.8, 0.5], "null_p": 0.002,
                      "paired_difference_by_question": {
                          "user_control": {"mean": 0.3, "low": 0.1, "high": 0.5}}},
    }  # fmt: skip
