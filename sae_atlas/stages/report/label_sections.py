"""The report's sections of the labeling findings beyond the tags: format features and the
puppeteer's confirmation and null (from the labels summary the atlas keeps as its
`labels_summary` attribute, shown whenever it holds them), the puppeteer's causal test
(experiments/puppeteer_causal) and the old split against honest splits
(experiments/honest_splits), with the tables and figure of sae_atlas.stages.label.figures.
Cost: parsing the summary and one figure.
"""

from __future__ import annotations

import pandas as pd

from feature_store.atlas import Atlas, Experiment
from sae_atlas.stages.label.figures import (
    base_table,
    causal_figure,
    causal_table,
    comparison_table,
    format_table,
    puppeteer_null_table,
    puppeteer_table,
)
from sae_atlas.stages.report.document import Block, Figure, Heading, fmt, head_table, text
from sae_atlas.stages.report.figures import png
from sae_atlas.stages.report.reading import json_attr


def labels_blocks(atlas: Atlas) -> list[Block]:
    """The 'Format features and the puppeteer's null' section; [] when the atlas's labels
    summary holds neither the format levels nor the puppeteer's confirmation."""
    summary = json_attr(atlas.attrs, "labels_summary")
    found, puppeteer = summary.get("format") or {}, summary.get("puppeteer") or {}
    if not found and not puppeteer:
        return []
    blocks: list[Block] = [Heading(2, "Format features and the puppeteer's null", "labels")]
    if found:
        blocks += [
            text(
                f"Format features: {fmt(found.get('n_format'))} of {fmt(found.get('n_scored'))} "
                f"features firing on held-out tokens have their activation predicted by the "
                f"current token's id alone at held-out R^2 >= {fmt(found.get('threshold'))} "
                f"(median R^2 {fmt(found.get('median_r2'))}); they are tagged format and kept "
                "out of the puppeteer. Features per R^2 level:"
            ),
            *head_table(format_table(summary)),
        ]
    if puppeteer:
        blocks += [
            Heading(3, "Puppeteer: confirmation and null", "labels-puppeteer"),
            text(
                f"{fmt(puppeteer.get('n_candidates'))} candidates (non-format, shared by the "
                f"train personas), {fmt(puppeteer.get('n_puppeteer'))} confirmed on held-out "
                "data and held-out personas (BH over the family). Confirmed features:"
            ),
            *head_table(puppeteer_table(summary)),
            text(
                "The judged set's held-out log enrichment (assistant response over each "
                "control: the same text in a user turn, outside the chat template) against "
                "matched random feature sets (null mean, 95% range, empirical p), and its mean "
                "paired difference per question with a bootstrap 95% interval over questions:"
            ),
            *head_table(puppeteer_null_table(summary)),
        ]
    return blocks


def causal_blocks(experiment: Experiment) -> list[Block]:
    """The causal test: the difference figure and the effects table."""
    summary = experiment.summary
    effects = experiment.tables.get("effects")
    blocks: list[Block] = [
        text(
            f"{len(summary.get('features') or [])} features edited "
            f"({fmt(summary.get('features'))}) on {fmt(summary.get('n_prompts'))} prompts "
            f"(personas: {fmt(summary.get('personas'))}; persona classifier held-out accuracy "
            f"{fmt(summary.get('classifier_heldout_accuracy'))})."
        ),
        text(
            "Per edit, the puppeteer set's effect minus the mean effect of matched random "
            "feature sets (same count, firing frequency, activation scale, decoder norm), paired "
            "by prompt, with bootstrap 95% intervals over prompts; Wilcoxon p, BH q over edits x "
            "scores, and the puppeteer's rank p among the random sets. A difference whose "
            "interval holds 0 means the puppeteer does no more than matched random features."
        ),
    ]
    if isinstance(effects, pd.DataFrame) and not effects.empty:
        blocks += [
            Figure("puppeteer_causal", png(causal_figure(effects)), "puppeteer minus random sets"),
            *head_table(causal_table(effects)),
        ]
    else:
        blocks.append(text("The edits were not run (no effects table)."))
    return blocks + base_blocks(experiment)


def base_blocks(experiment: Experiment) -> list[Block]:
    """The comparison with the base model on identical tokens, when the run had one."""
    base = experiment.tables.get("base")
    if not isinstance(base, pd.DataFrame):
        return []
    model = (experiment.summary.get("base") or {}).get("model")
    return [
        text(
            f"Against the base model {fmt(model)} on identical tokens: per feature (-1: the "
            "set) the base/tuned activation ratio in assistant and in user turns, their log "
            "contrast (< 0: post-training raised the feature more in assistant turns) and its "
            "difference from matched random features, with bootstrap 95% intervals over "
            "responses and BH q."
        ),
        *head_table(base_table(base)),
    ]


def honest_blocks(experiment: Experiment) -> list[Block]:
    """Shares and counts of the old and the honest split side by side, and the causal tests'
    effects on each run when they were given."""
    shares, counts = experiment.tables.get("shares"), experiment.tables.get("counts")
    new = experiment.summary.get("new") or {}
    blocks: list[Block] = [
        text(
            "Share of personas whose held-out AUROC reaches 0.9, per probe or pooling (the "
            "best feature chosen on train), with Wilson 95% intervals over personas: the old "
            "split (held-out questions only) against honest splits (held-out system prompts "
            "and whole held-out personas as well); then tag counts, as built and recomputed. "
            f"Held-out personas of the new run: {fmt(new.get('heldout_personas'))}."
        )
    ]
    if isinstance(shares, pd.DataFrame) and isinstance(counts, pd.DataFrame):
        blocks += head_table(comparison_table(shares, counts))
    for side in ("old", "new"):
        effects = experiment.tables.get(f"causal_{side}")
        if isinstance(effects, pd.DataFrame):
            blocks += [
                text(f"The puppeteer's causal test on the {side} run (as above):"),
                *head_table(causal_table(effects)),
            ]
    return blocks
