"""Report tables and figures of the honest-split findings, for the report stage to place.

Each function reads what a labels summary (labels.h5's `summary`), the causal test's JSON
(scripts/puppeteer_causal.py: "effects" per edit and score, "base" when run with a base model) or
the side-by-side JSON (scripts/honest_splits.py) holds and returns a pandas table or a matplotlib
Figure; nothing is computed again. Cost: milliseconds.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from sae_atlas.stages.label.rows import CONTROLS


def format_table(summary: dict[str, Any]) -> pd.DataFrame:
    """Features per held-out R^2 level of the token-id table; `tagged`: the level the format tag
    uses."""
    found = summary.get("format") or {}
    return pd.DataFrame(
        [
            {
                "heldout_r2_at_least": float(level),
                "features": n,
                "tagged": float(level) == found.get("threshold"),
            }
            for level, n in (found.get("at_least") or {}).items()
        ],
        columns=["heldout_r2_at_least", "features", "tagged"],
    )


def puppeteer_table(summary: dict[str, Any]) -> pd.DataFrame:
    """The confirmed puppeteer features: id, label, train sharing (cv, persona_share), train and
    held-out enrichment over each control, q-value of each held-out test."""
    return pd.DataFrame(summary.get("puppeteer_features") or [])


def puppeteer_null_table(summary: dict[str, Any]) -> pd.DataFrame:
    """One row per control: the judged set (confirmed, else candidates), its size, held-out log
    enrichment against matched random sets (null mean, 95% range, p) and the mean paired
    difference per question (response minus its control) with its bootstrap 95% CI."""
    found = summary.get("puppeteer") or {}
    paired = found.get("paired_difference_by_question") or {}
    return pd.DataFrame(
        [
            {
                "control": control,
                "set": found.get("set_judged"),
                "size": found.get("set_size"),
                "candidates": found.get("n_candidates"),
                "confirmed": found.get("n_puppeteer"),
                "log_enrichment": found.get("set_log_enrichment"),
                "null_mean": found.get("null_log_enrichment_mean"),
                "null_95": found.get("null_log_enrichment_95"),
                "null_p": found.get("null_p"),
                **{f"paired_{k}": v for k, v in (paired.get(control) or {}).items()},
            }
            for control in CONTROLS
        ]
    )


def causal_table(causal: dict[str, Any]) -> pd.DataFrame:
    """The causal test's effects: per edit and score the puppeteer's and the random sets' mean
    effect, their paired difference with its 95% CI over prompts, p, BH q and rank p."""
    return pd.DataFrame(causal.get("effects") or [])


def causal_figure(causal: dict[str, Any]) -> Figure:
    """One panel per score: per edit the puppeteer-minus-random difference with its 95% CI
    over prompts (a point on 0 means the puppeteer does what matched random sets do)."""
    table = causal_table(causal)
    scores = list(dict.fromkeys(table["score"])) if len(table) else []
    figure = Figure(figsize=(3 * max(len(scores), 1), 2.8))
    for i, score in enumerate(scores):
        axes = figure.add_subplot(1, len(scores), i + 1)
        rows = table[table["score"] == score]
        x = np.arange(len(rows))
        middle = rows["difference"].to_numpy(float)
        error = np.abs(np.stack([middle - rows["ci_low"], rows["ci_high"] - middle]))
        axes.errorbar(x, middle, yerr=error, fmt="o", capsize=3)
        axes.axhline(0, color="grey", lw=0.8)
        axes.set_xticks(x, rows["edit"].tolist())
        axes.set_title(score, fontsize=9)
    figure.suptitle("puppeteer edits minus matched random sets (95% CI over prompts)", fontsize=9)
    figure.tight_layout()
    return figure


def base_table(causal: dict[str, Any]) -> pd.DataFrame:
    """The base comparison (the causal JSON's "base", present when the run had `--base`): per
    feature (-1: the set) the base/tuned activation ratio in assistant and in user turns, their
    log contrast and its difference from the matched random features, with 95% CIs over
    responses, p and BH q; empty without a base model."""
    return pd.DataFrame((causal.get("base") or {}).get("rows") or [])


def comparison_table(honest: dict[str, Any]) -> pd.DataFrame:
    """Old split against honest splits (scripts/honest_splits.py's JSON): per probe or pooling
    the share of personas at held-out AUROC >= 0.9 (Wilson 95% CI), then the tag counts."""
    rows = []
    old, new = honest["old"], honest["new"]
    for name, value in new["probes"].items():
        if isinstance(value, dict):
            before = old["probes"].get(name) or {}
            rows.append(
                {
                    "figure": f"share AUROC>=0.9: {name}",
                    "old": before.get("share"),
                    "old_ci": before.get("ci"),
                    "new": value["share"],
                    "new_ci": value["ci"],
                }
            )
    for part in ("built", "recomputed"):
        for key in ("n_trigger_tags", "n_puppeteer", "n_format", "puppeteer_candidates"):
            rows.append(
                {"figure": f"{part}: {key}", "old": old[part].get(key), "new": new[part].get(key)}
            )
    return pd.DataFrame(rows)
