"""What every table of the persona-selection experiment holds: entry and column descriptions for
the atlas (recorded as experiments/selection by scripts/persona_selection.py), and the JSON
summary of the headline numbers. pandas on small tables: milliseconds.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from sae_atlas.stages.base import json_ready
from sae_atlas.stages.selection.experiment import SelectionResult

DESCRIPTIONS: dict[str, str] = {
    "decoding": "per source (residual or SAE codes), persona and position class (system prompt "
    "mean, user turn mean, each assistant-header token, response tokens 1..N): one-vs-rest "
    "AUROC of a nearest-centroid probe cross-fitted over prompt variants and questions (trained "
    "on other variants and the other half of the questions), bootstrap 95% interval over "
    "questions",
    "header_gain": "per source and persona: AUROC at the last header token (and at response "
    "token 1) minus at the user turn, bootstrap 95% interval over questions, one-sided p-value, "
    "BH q-value over personas",
    "patching": "per score (classifier: P(persona) of the response text; features: the persona's "
    "SAE features on response tokens), persona and condition: the effect of patching the "
    "header residual (or, controls, the residual at the last user tokens, or another persona's "
    "header) into the default run (rise) or the persona run (fall), paired by unit, and the "
    "contrasts header minus user and header minus other; bootstrap 95% interval over questions, "
    "one-sided p-value, BH q-value over personas per kind and target",
    "axis_gap": "per condition, persona (all: pooled) and response token: the paired default "
    "run's assistant-axis projection minus the condition's, mean and bootstrap 95% interval "
    "over questions, and the units whose responses are still running there",
    "relaxation": "per condition and persona: the half-gap length (the first response token at "
    "which the mean assistant-axis gap, a running mean over 4 tokens, is at most half its first "
    "value) with its bootstrap 95% interval over questions; a gap that does not halve within "
    "the tokens read is censored (reported as > n_tokens, never as a number); the share of the "
    "gap retained at the end of the tokens read and the gap's slope per token, with intervals, "
    "the slope's bootstrap p-value and BH q-value over conditions and personas",
    "responses": "every sampled response: the grid's runs (condition none) and each patched "
    "condition's (per unit: its persona, variant, question)",
    "summary": "JSON: config, personas, header length, layer, headline numbers",
}
"""Description of each selection entry."""

COLUMNS: dict[str, str] = {
    "source": "residual (the hook's residual) or sae (the SAE's codes of it)",
    "persona": "persona (all: every persona pooled)",
    "position": "position class: system, user, header_<i>, response_<t>",
    "position_index": "order of the position class along the run",
    "auroc": "one-vs-rest AUROC of the cross-fitted probe's score",
    "ci_low": "lower end of the bootstrap 95% interval over questions",
    "ci_high": "upper end of the bootstrap 95% interval over questions",
    "auroc_user": "AUROC at the user turn",
    "auroc_at": "AUROC at `position`",
    "gain": "auroc_at minus auroc_user",
    "gap": "the paired default run's assistant-axis projection minus the condition's, mean over "
    "units",
    "p_value": "one-sided bootstrap p-value (the quantity <= 0)",
    "q_value": "Benjamini-Hochberg q-value over personas",
    "kind": "effect (a condition against its unpatched baseline) or header_minus_user / "
    "header_minus_other (paired contrasts)",
    "condition": "patched condition (target+where:source), or for contrasts the target run "
    "(default or persona); for axis_gap and relaxation also persona (unpatched)",
    "mean": "mean over units",
    "n": "units",
    "score": "classifier or features",
    "token": "response token (1-based)",
    "half_gap_length": "first response token t where the mean gap over tokens t-3..t is <= "
    "half its value over tokens 1-4; NaN when censored (length_censored) or undefined",
    "length_censored": "true when the mean gap does not halve within the tokens read: the "
    "length is > n_tokens",
    "relaxation": "the half-gap length and its 95% interval as text, '> n_tokens' for a "
    "censored length or interval end, '-' for an undefined one",
    "censored": "share of bootstrap resamples (with a positive first gap) in which the gap "
    "does not halve within the tokens read",
    "undefined": "share of bootstrap resamples whose first gap is <= 0 (nothing to relax)",
    "n_tokens": "response tokens read: up to the last at which at least half the units are "
    "still answering",
    "n_running": "units with a value at this token (both responses still running)",
    "gap_first": "mean gap over response tokens 1-4",
    "gap_last": "mean gap over the last 4 tokens read",
    "retained": "mean gap over the last 4 tokens read over the mean over the first 4 (1: "
    "no relaxation, 0: back at the default)",
    "slope": "least-squares slope of the mean gap per response token (< 0: relaxing)",
    "slope_low": "lower end of the slope's bootstrap 95% interval over questions",
    "slope_high": "upper end of the slope's bootstrap 95% interval over questions",
    "slope_p": "two-sided bootstrap p-value of a zero slope",
    "slope_q": "Benjamini-Hochberg q-value of slope_p over conditions and personas",
    "retained_low": "lower end of retained's bootstrap 95% interval over questions",
    "retained_high": "upper end of retained's bootstrap 95% interval over questions",
    "variant": "system-prompt variant",
    "question": "question index",
    "text": "the response",
}
"""Description of each column of the selection tables."""


def _rows(table: pd.DataFrame, **where: Any) -> list[dict[str, Any]]:
    mask = pd.Series(True, index=table.index)
    for key, value in where.items():
        mask &= table[key] == value
    return list(table[mask].to_dict("records"))


def selection_summary(result: SelectionResult, config: dict[str, Any]) -> dict[str, Any]:
    """Headline numbers: decoding at user / last header / response 1, header gains, the
    patching contrasts and the relaxation lengths (JSON-ready)."""
    tables = result.tables
    decoding = tables["decoding"]
    last = f"header_{result.header - 1}"
    points = decoding[decoding["position"].isin(["system", "user", last, "response_1"])]
    patching = tables["patching"]
    return json_ready(
        {
            "config": config,
            "personas": result.personas,
            "header_tokens": result.header,
            "layer": result.layer,
            "decoding": points.to_dict("records"),
            "header_gain": tables["header_gain"].to_dict("records"),
            "contrasts": patching[patching["kind"] != "effect"].to_dict("records")
            if len(patching)
            else [],
            "effects": _rows(patching, kind="effect") if len(patching) else [],
            "relaxation": tables["relaxation"].to_dict("records"),
        }
    )
