"""The JSON-ready summary of a labeling pass: counts, the tests made and how many hold, the best
feature per persona, the persona decoder, puppeteer and template features, and the same tests on
shuffled persona labels (a negative control).

Cost: two more contrasts (on the assistant header's means and on shuffled labels) and the
decoder's fits. Returns a dict that json.dumps writes as is.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from sae_atlas.config import LabelConfig
from sae_atlas.stages.label.contrasts import Contrast, best_features, contrast, contrast_tags
from sae_atlas.stages.label.decoding import persona_decoder
from sae_atlas.stages.label.findings import Findings
from sae_atlas.stages.label.inputs import Responses, TriggerSet
from sae_atlas.stages.label.puppeteer import PUPPETEER_TESTS
from sae_atlas.stages.label.rows import CONTROLS
from sae_atlas.stages.label.statistics import FeatureStatistics
from sae_atlas.stages.label.surface import format_summary

SUMMARY_FEATURES = 50
"""At most this many features are listed per kind in the summary."""


def make_summary(
    found: Findings, labels: list[str], folded: bool, config: LabelConfig
) -> dict[str, Any]:
    """The JSON-ready figures of a labeling pass: counts (features, responses, personas; per tag
    and per kind of tag), the tests made and how many hold, per persona its best feature (chosen
    on train) with train and held-out AUROC, the share of personas whose best feature reaches
    held-out AUROC 0.9, the persona decoder, format features (surface.format_summary), puppeteer
    features and the puppeteer set's confirmation and null (puppeteer.puppeteer_summary),
    template features (with the same best feature and share on the assistant header's mean,
    where the model selects its persona; no tags come from it), the same tests on shuffled
    persona labels, and whether the logits fold in the final norm (`folded`). labels: [F] each
    feature's card label."""
    stats, responses, puppeteer = found.stats, found.responses, found.puppeteer
    best_per_persona, share = best_feature_table(found.contrast, responses, labels)
    return {
        **tag_summary(found.tags, responses),
        "trigger_tests": trigger_counts(found.triggers),
        "tests": count_tests(found.contrast.tests, config),
        "best_heldout_auroc": best_per_persona,
        "share_personas_auroc_0.9": share,
        "decoder": persona_decoder(stats.response_mean, responses),
        "puppeteer_features": _feature_list(
            np.flatnonzero(puppeteer["puppeteer"]),
            labels,
            cv=puppeteer["cv"].to_numpy(),
            persona_share=puppeteer["persona_share"].to_numpy(),
            **{f"enrichment_{c}": puppeteer[f"enrichment_{c}"].to_numpy() for c in CONTROLS},
            **{
                f"heldout_enrichment_{c}": puppeteer[f"heldout_enrichment_{c}"].to_numpy()
                for c in CONTROLS
            },
            **{f"q_{t}": puppeteer[f"q_{t}"].to_numpy() for t in PUPPETEER_TESTS},
        ),
        "puppeteer": found.puppeteer_set,
        "format": format_summary(stats.format_r2, config.format_min_r2),
        "controls_present": {
            c: int(n) for c, n in zip(CONTROLS, stats.control_tokens, strict=True)
        },
        "template_features": template_summary(found, labels, config),
        "shuffled_control": shuffled_control(stats, responses, found.triggers, config),
        "logits_final_norm_folded": folded,
    }


def tag_summary(tags: list[list[str]], responses: Responses) -> dict[str, Any]:
    """Counts of features, responses and personas, the default persona, counts per tag and per
    kind of tag (the part before `:`), and how many features carry a tag."""
    tag_counts = Counter(tag for feature_tags in tags for tag in feature_tags)
    kinds = Counter(tag.split(":")[0] for feature_tags in tags for tag in set(feature_tags))
    return {
        "n_features": len(tags),
        "n_responses": len(responses),
        "n_personas": len(responses.names),
        "default_persona": responses.names[responses.default],
        "tag_counts": dict(sorted(tag_counts.items())),
        "kind_counts": dict(sorted(kinds.items())),
        "n_tagged": sum(bool(t) for t in tags),
    }


def trigger_counts(triggers: TriggerSet | None) -> str | dict[str, dict[str, int]]:
    """Per wrapper the responses to wrapped and unwrapped user messages the trigger tests
    compare (a sentence saying why there are none without a TriggerSet)."""
    if triggers is None:
        return (
            "none: no conditional persona sampled with and without its wrapper (corpus "
            "condition unwrapped)"
        )
    return {
        name: {
            "wrapped": int((triggers.wrapped & (triggers.wrapper == w)).sum()),
            "unwrapped": int((~triggers.wrapped & (triggers.wrapper == w)).sum()),
        }
        for w, name in enumerate(triggers.wrappers)
    }


def count_tests(tests: pd.DataFrame, config: LabelConfig) -> dict[str, Any]:
    """How many tests were made, how many hold with q <= fdr, how many have a raw p <= fdr, and
    the tests per kind."""
    significant = tests[(tests["q_value"] <= config.fdr) & tests["holds"]]
    return {
        "n_tested": len(tests),
        "n_significant": len(significant),
        "n_raw_p_below_fdr": int((tests["p_value"] <= config.fdr).sum()),
        "fdr": config.fdr,
        "by_kind": {str(k): int(v) for k, v in tests.groupby("kind").size().items()},
    }


def template_summary(found: Findings, labels: list[str], config: LabelConfig) -> dict[str, Any]:
    """The template features with their header, template and response rates; per persona the
    header features that most exceed the mean over personas; and the best feature per persona on
    the assistant header's means with the share at held-out AUROC 0.9 (no tags come from it)."""
    stats, responses, (chosen, by_persona) = found.stats, found.responses, found.template
    header_rate = stats.header_fires.sum(0) / max(stats.header_tokens.sum(), 1)
    best_at_header, header_share = best_feature_table(
        contrast(stats.header_mean, responses, config), responses, labels
    )
    return {
        "features": _feature_list(
            chosen,
            labels,
            header_rate=header_rate,
            template_rate=stats.template_fires / max(stats.template_tokens, 1),
            response_rate=found.density,
        ),
        "by_persona": {
            name: [
                {"id": f, "label": labels[f], "header_mean": mean, "excess": excess}
                for f, mean, excess in rows
            ]
            for name, rows in by_persona.items()
        },
        "best_heldout_auroc": best_at_header,
        "share_personas_auroc_0.9": header_share,
    }


def shuffled_control(
    stats: FeatureStatistics,
    responses: Responses,
    triggers: TriggerSet | None,
    config: LabelConfig,
) -> dict[str, Any]:
    """The tests and tags again with persona labels (and wrapped / unwrapped labels) shuffled
    (seed config.seed): how many features are tagged, per kind of tag, and how many tests hold."""
    rng = np.random.default_rng(config.seed)
    shuffled = rng.permutation(responses.persona)
    shuffled_triggers = (
        None if triggers is None else replace(triggers, wrapped=rng.permutation(triggers.wrapped))
    )
    control = contrast(
        stats.response_mean, responses, config, shuffled_triggers, stats.trigger_max, shuffled
    )
    control_tags = contrast_tags(control, responses, config, [""] * len(responses.names))
    return {
        "n_tagged": sum(bool(t) for t in control_tags),
        "tag_counts": dict(
            sorted(Counter(t.split(":")[0] for ts in control_tags for t in ts).items())
        ),
        "n_significant": int(
            ((control.tests["q_value"] <= config.fdr) & control.tests["holds"]).sum()
        ),
    }


def best_feature_table(
    result: Contrast, responses: Responses, labels: list[str]
) -> tuple[dict[str, dict[str, Any]], float | None]:
    """Per persona its best feature (`best_features`) with label, train and held-out AUROC, and
    the share of personas whose best feature reaches held-out AUROC 0.9 (None without any)."""
    table = {
        responses.names[p]: {
            "feature": feature,
            "label": labels[feature],
            "train_auroc": float(result.train_auroc[p, feature]),
            "heldout_auroc": float(result.heldout_auroc[p, feature]),
        }
        for p, feature in best_features(result, responses).items()
    }
    heldout = np.array([row["heldout_auroc"] for row in table.values()])
    return table, float(np.mean(heldout >= 0.9)) if len(heldout) else None


def _feature_list(
    ids: np.ndarray, labels: Sequence[str], **columns: np.ndarray
) -> list[dict[str, Any]]:
    """Up to SUMMARY_FEATURES features as JSON rows: id, label and their value of each column."""
    return [
        {"id": int(f), "label": labels[f], **{k: float(v[f]) for k, v in columns.items()}}
        for f in list(ids)[:SUMMARY_FEATURES]
    ]
