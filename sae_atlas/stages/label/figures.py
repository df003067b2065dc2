"""Report tables and figures of the honest-split findings, for the report stage to place.

Each function reads what a labels summary holds (the atlas's `labels_summary` attribute, as
labels.h5's `summary`), or a table of the atlas's experiments/puppeteer_causal or
experiments/honest_splits (sae_atlas.stages.label.records), and returns a pandas table or a
matplotlib Figure; nothing is computed again. Cost: milliseconds.
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


CAUSAL_SHOWN = ("edit", "score", "puppeteer_effect", "random_effect", "difference", "ci_low",
                "ci_high", "q_value", "rank_p", "n_prompts")  # fmt: skip
"""Columns of the causal test's effects the report shows."""


def causal_table(effects: pd.DataFrame) -> pd.DataFrame:
    """The causal test's effects (experiments/puppeteer_causal `effects`): per edit and score
    the puppeteer's and the random sets' mean effect, their paired difference with its 95% CI
    over prompts, BH q and rank p."""
    return effects[[c for c in CAUSAL_SHOWN if c in effects.columns]]


def causal_figure(effects: pd.DataFrame) -> Figure:
    """One panel per score: per edit the puppeteer-minus-random difference with its 95% CI
    over prompts (a point on 0 means the puppeteer does what matched random sets do)."""
    scores = list(dict.fromkeys(effects["score"])) if len(effects) else []
    figure = Figure(figsize=(3 * max(len(scores), 1), 2.8))
    for i, score in enumerate(scores):
        axes = figure.add_subplot(1, len(scores), i + 1)
        rows = effects[effects["score"] == score]
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


def base_table(base: pd.DataFrame) -> pd.DataFrame:
    """The base comparison (experiments/puppeteer_causal `base`, recorded when the run had
    `--base`), rounded for the report: per feature (-1: the set) the base/tuned activation ratio
    in assistant and in user turns, their log contrast and its difference from the matched
    random features with 95% CIs over responses, and BH q."""
    columns = ["feature", "ratio_assistant", "ratio_user", "contrast", "difference",
               "difference_low", "difference_high", "q_value"]  # fmt: skip
    return base[[c for c in columns if c in base]].round(4)


def comparison_table(shares: pd.DataFrame, counts: pd.DataFrame) -> pd.DataFrame:
    """Old split against honest splits (experiments/honest_splits `shares` and `counts`): per
    probe or pooling the share of personas at held-out AUROC >= 0.9 with its Wilson 95% CI,
    then the tag counts."""
    rows = [
        {
            "figure": f"share AUROC>=0.9: {row.figure}",
            "old": row.old_share,
            "old_ci": [row.old_low, row.old_high],
            "new": row.new_share,
            "new_ci": [row.new_low, row.new_high],
        }
        for row in shares.itertuples(index=False)
    ]
    rows += [
        {"figure": row.figure, "old": row.old, "old_ci": None, "new": row.new, "new_ci": None}
        for row in counts.itertuples(index=False)
    ]
    return pd.DataFrame(rows, columns=["figure", "old", "old_ci", "new", "new_ci"])
