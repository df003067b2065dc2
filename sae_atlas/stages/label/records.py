"""What the label-side experiments record in an atlas (experiments/puppeteer_causal and
experiments/honest_splits): their tables built from the scripts' results, and the description
of every table and column (the atlas is self-describing). pandas on small tables: milliseconds.

- puppeteer_causal (scripts/puppeteer_causal.py): `effects` (sae_atlas.stages.label.causal),
  `answers` (every sampled answer with its scores), `features` and `random_sets` (the edited
  feature ids);
- honest_splits (scripts/honest_splits.py): `shares` (per probe or pooling, the share of
  personas at held-out AUROC >= 0.9 with its Wilson interval, old and new run side by side),
  `counts` (tag counts, old and new), `per_persona` (held-out AUROC per persona, probe and run)
  and, when the causal JSONs were given, `causal_old` / `causal_new` (their effects).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sae_atlas.stages.record import record_results

CAUSAL_DESCRIPTIONS: dict[str, str] = {
    "effects": "per edit (zero, resample, add, cap) and score: the puppeteer set's mean paired "
    "effect, the matched random sets' mean effect, their per-prompt difference with its "
    "bootstrap 95% interval over prompts, Wilcoxon p, BH q over edits x scores, rank p among "
    "the random sets",
    "answers": "every sampled answer: prompt, persona, condition (unedited, <edit>:puppeteer, "
    "<edit>:random<j>) and its scores",
    "features": "the edited (puppeteer) feature ids [k]",
    "random_sets": "the matched random feature sets [n_random, k] (same count, firing "
    "frequency, activation scale, decoder norm)",
    "base": "per puppeteer feature (-1: the set) on identical tokens through the base and the "
    "tuned model (sae_atlas.stages.label.base_diff): base/tuned activation ratio in assistant "
    "and in user turns, their log contrast, the matched random features' mean contrast and the "
    "difference, with bootstrap 95% intervals over responses, p and BH q",
}

CAUSAL_COLUMNS: dict[str, str] = {
    "edit": "zero (activations set to 0), resample (to a random token's codes), add (the "
    "features' mean activation added) or cap (clamped at the default persona's mean)",
    "score": "p_persona, assistant_marker, axis_projection or kl",
    "puppeteer_effect": "mean over prompts of the edited minus the unedited score (kl: itself)",
    "random_effect": "the same for the matched random sets, mean over sets",
    "difference": "mean over prompts of puppeteer_effect minus random_effect (paired by prompt)",
    "ci_low": "lower end of the bootstrap 95% interval of difference over prompts",
    "ci_high": "upper end of the bootstrap 95% interval of difference over prompts",
    "p_value": "two-sided p-value of the difference (effects: Wilcoxon signed-rank over "
    "prompts; base: bootstrap over responses)",
    "rank_p": "share of random sets whose mean effect is at least as far from 0 as the "
    "puppeteer's (with the puppeteer counted)",
    "n_prompts": "prompts with a finite difference",
    "q_value": "Benjamini-Hochberg q-value over the table's rows (effects: edits x scores)",
    "condition": "unedited, <edit>:puppeteer or <edit>:random<j>",
    "prompt": "prompt index (one persona, held-out system prompt and held-out question)",
    "persona": "the persona the prompt asks the model to play",
    "text": "the sampled answer",
    "p_persona": "persona classifier's probability of the prompt's persona (NaN: unknown to it)",
    "assistant_marker": "1 when the answer shows a non-format assistant marker, else 0",
    "axis_projection": "mean residual over the answer's tokens (unedited model) on the unit "
    "assistant axis",
    "kl": "mean KL(unedited || edited) of the next-token distributions on the unedited answer",
}
BASE_COLUMNS: dict[str, str] = {
    "feature": "feature id (-1: the whole set, codes summed)",
    "n_responses": "held-out responses compared",
    **{
        f"ratio_{role}{end}": f"{text} base/tuned ratio of the mean code over {role} tokens"
        for role in ("assistant", "user")
        for end, text in (
            ("", "the"),
            ("_low", "lower 95% bound of the"),
            ("_high", "upper 95% bound of the"),
        )
    },
    **{
        f"{name}{end}": f"{text} {meaning}"
        for name, meaning in (
            ("contrast", "log ratio_assistant - log ratio_user"),
            ("difference", "contrast minus the matched random features' mean contrast"),
        )
        for end, text in (
            ("", ""),
            ("_low", "lower 95% bound of:"),
            ("_high", "upper 95% bound of:"),
        )
    },
    "random_contrast": "the matched random features' mean contrast",
}
CAUSAL_COLUMNS |= BASE_COLUMNS
CAUSAL_UNITS: dict[str, str] = {"kl": "nats", "axis_projection": "model units"}


def causal_tables(
    effects: pd.DataFrame,
    answers: pd.DataFrame,
    personas: list[str],
    features: np.ndarray,
    random_sets: np.ndarray,
    base: pd.DataFrame | None = None,
) -> dict[str, pd.DataFrame | np.ndarray]:
    """The puppeteer_causal experiment's tables; `personas`: each prompt's persona, by index;
    effects and answers only when the edits ran, `base` only with a base model."""
    tables: dict[str, pd.DataFrame | np.ndarray] = {
        "features": np.asarray(features, dtype=np.int64),
        "random_sets": np.asarray(random_sets, dtype=np.int64),
    }
    if len(answers):
        played = np.asarray(personas, dtype=object)[answers["prompt"].to_numpy(int)]
        tables |= {"effects": effects, "answers": answers.assign(persona=played)}
    if base is not None:
        tables["base"] = base
    return tables


def record_causal(atlas: Path, result: dict[str, Any], settings: dict[str, Any]) -> Path:
    """Record scripts/puppeteer_causal.py's `result` (its JSON) as experiments/puppeteer_causal
    in `atlas`, with the script's `settings` as the provenance config; the path written."""
    base = result.get("base")
    tables = causal_tables(
        pd.DataFrame(result.get("effects") or []),
        pd.DataFrame(result.get("answers") or []),
        result.get("prompt_personas") or [],
        np.asarray(result["features"]),
        np.asarray(result["random_sets"]),
        base=pd.DataFrame(base["rows"]) if base else None,
    )
    drop = ("answers", "random_sets", "effects", "prompt_personas", "base")
    summary = {k: v for k, v in result.items() if k not in drop}
    if base:
        summary["base"] = {"model": base["model"], "n_responses": base["n_responses"]}
    return record_results(
        atlas, "puppeteer_causal", tables, summary, descriptions=CAUSAL_DESCRIPTIONS,
        columns=CAUSAL_COLUMNS, units=CAUSAL_UNITS, script="scripts/puppeteer_causal.py",
        config=settings, seconds=result["seconds"],
    )  # fmt: skip


HONEST_DESCRIPTIONS: dict[str, str] = {
    "shares": "per probe or pooling (its best feature chosen on train): the share of personas "
    "at held-out AUROC >= 0.9 with its Wilson 95% interval over personas, the median AUROC and "
    "the personas scored, for the old split and the honest split side by side",
    "counts": "tag and feature counts of the labels as built and as recomputed with this "
    "code, old and new run",
    "per_persona": "held-out AUROC per run, probe or pooling, and persona (NaN: not scored)",
    "causal_old": "the puppeteer causal test's effects on the old run (see puppeteer_causal)",
    "causal_new": "the puppeteer causal test's effects on the new run (see puppeteer_causal)",
}

HONEST_COLUMNS: dict[str, str] = {
    "figure": "probe, pooling or count",
    "old": "value on the old-split run",
    "new": "value on the honest-split run",
    "run": "old (legacy split) or new (honest splits)",
    "persona": "persona",
    "probe": "probe (residual) or pooling (its best SAE feature chosen on train)",
    "auroc": "held-out AUROC of the persona against the default",
    **{
        f"{side}_{key}": f"{text} ({side} run)"
        for side in ("old", "new")
        for key, text in (
            ("share", "share of personas at held-out AUROC >= 0.9"),
            ("low", "lower end of the share's Wilson 95% interval over personas"),
            ("high", "upper end of the share's Wilson 95% interval over personas"),
            ("median_auroc", "median held-out AUROC over personas"),
            ("n_personas", "personas scored"),
        )
    },
    **CAUSAL_COLUMNS,
}

COUNT_KEYS = ("n_trigger_tags", "n_puppeteer", "n_format", "puppeteer_candidates")
"""The counts of label_figures shown side by side."""


def _share_row(name: str, side: str, found: dict[str, Any] | None) -> dict[str, Any]:
    found = found or {}
    low, high = (found.get("ci") or [np.nan, np.nan])[:2]
    return {
        f"{side}_share": found.get("share"),
        f"{side}_low": low,
        f"{side}_high": high,
        f"{side}_median_auroc": found.get("median_auroc"),
        f"{side}_n_personas": found.get("n_personas"),
    }


def honest_tables(both: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """The honest_splits experiment's tables from scripts/honest_splits.py's result (`both`:
    old and new, each with probes, built, recomputed, per_persona and causal)."""
    old, new = both["old"], both["new"]
    names = list(dict.fromkeys([*old["probes"], *new["probes"]]))
    shares = pd.DataFrame(
        [
            {
                "figure": name,
                **_share_row(name, "old", old["probes"].get(name)),
                **_share_row(name, "new", new["probes"].get(name)),
            }
            for name in names
        ]
    )
    counts = pd.DataFrame(
        [
            {"figure": f"{part}: {key}", "old": old[part].get(key), "new": new[part].get(key)}
            for part in ("built", "recomputed")
            for key in COUNT_KEYS
        ]
    ).astype({"old": float, "new": float})
    per_persona = pd.DataFrame(
        [
            {"run": side, "probe": probe, "persona": persona, "auroc": auroc}
            for side in ("old", "new")
            for probe, by_persona in both[side]["per_persona"].items()
            for persona, auroc in by_persona.items()
        ],
        columns=["run", "probe", "persona", "auroc"],
    ).astype({"auroc": float})
    tables = {"shares": shares.astype({c: float for c in shares if c != "figure"}),
              "counts": counts, "per_persona": per_persona}  # fmt: skip
    for side in ("old", "new"):
        causal = both[side].get("causal")
        if causal:
            tables[f"causal_{side}"] = pd.DataFrame(causal["effects"])
    return tables


def honest_summary(both: dict[str, Any]) -> dict[str, Any]:
    """The honest_splits summary: per run its path, held-out personas and the label figures as
    built and recomputed (counts, puppeteer confirmation and null)."""
    return {
        side: {
            key: both[side].get(key) for key in ("run", "heldout_personas", "built", "recomputed")
        }
        for side in ("old", "new")
    }
