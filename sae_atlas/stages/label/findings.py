"""What the labeling pass finds before it writes cards: the responses and their statistics,
every persona contrasted against the default, the tags, puppeteer and template features.

Cost: the streamed SAE pass (`statistics.collect`) and the contrasts. Returns `Findings`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sae_lens import SAE

from feature_store.activations import ActivationStore
from sae_atlas.config import LabelConfig
from sae_atlas.personas import Catalogue
from sae_atlas.stages.base import CountProgress
from sae_atlas.stages.label.contrasts import Contrast, contrast, contrast_tags
from sae_atlas.stages.label.inputs import Responses, TriggerSet, find_responses, find_triggers
from sae_atlas.stages.label.matched import matching_keys
from sae_atlas.stages.label.puppeteer import (
    TemplateFeatures,
    puppeteer_features,
    puppeteer_summary,
    template_features,
)
from sae_atlas.stages.label.rows import assistant_tokens
from sae_atlas.stages.label.statistics import FeatureStatistics, collect


@dataclass(frozen=True)
class Findings:
    """responses, triggers (None: no trigger tests) and the pass's statistics; categories: [P]
    catalogue category of each persona ("": unlisted); contrast: every persona against the
    default; tags: per feature; puppeteer: puppeteer_features' table; puppeteer_set: its
    puppeteer_summary (confirmation, matched-set null, intervals); template:
    template_features; density: [F] share of response tokens each feature fires on."""

    responses: Responses
    triggers: TriggerSet | None
    stats: FeatureStatistics
    categories: list[str]
    contrast: Contrast
    tags: list[list[str]]
    puppeteer: pd.DataFrame
    puppeteer_set: dict[str, Any]
    template: TemplateFeatures
    density: np.ndarray


def find(
    store: ActivationStore,
    provenance: pd.DataFrame,
    sae: SAE[Any],
    hook: str,
    config: LabelConfig,
    catalogue: Catalogue | None,
    progress: CountProgress | None,
    heldout_personas: Sequence[str] = (),
) -> Findings:
    """The Findings of `sae` on `store` (`provenance`: its transcripts) at `hook`;
    heldout_personas: names of the personas the corpus holds out whole (the puppeteer is chosen
    without them and confirmed on them)."""
    responses = find_responses(
        provenance, assistant_tokens(store, provenance, config.block_tokens), catalogue
    )
    triggers = find_triggers(provenance, catalogue)
    stats = collect(store, sae, hook, responses, config, progress, triggers)
    categories = persona_categories(responses, catalogue)
    result = contrast(stats.response_mean, responses, config, triggers, stats.trigger_max)
    tags = contrast_tags(result, responses, config, categories)
    density = stats.group_fires.sum((0, 1)) / max(stats.group_tokens.sum(), 1)
    is_format = np.nan_to_num(stats.format_r2, nan=-np.inf) >= config.format_min_r2
    for feature in np.flatnonzero(is_format):
        tags[feature].append("format")
    mean_act = stats.group_sum.sum((0, 1)) / np.maximum(stats.group_fires.sum((0, 1)), 1)
    decoder_norm = sae.W_dec.detach().float().norm(dim=1).cpu().numpy()
    keys = matching_keys(density, mean_act, decoder_norm)
    held = np.flatnonzero(np.isin(np.array(responses.names), list(heldout_personas)))
    puppeteer = puppeteer_features(stats, responses, config, held, is_format, keys)
    for feature in np.flatnonzero(puppeteer["puppeteer"]):
        tags[feature].append("puppeteer")
    puppeteer_set = puppeteer_summary(stats, responses, puppeteer, held, keys, config)
    return Findings(
        responses=responses,
        triggers=triggers,
        stats=stats,
        categories=categories,
        contrast=result,
        tags=tags,
        puppeteer=puppeteer,
        puppeteer_set=puppeteer_set,
        template=template_features(stats, responses, density, config),
        density=density,
    )


def persona_categories(responses: Responses, catalogue: Catalogue | None) -> list[str]:
    """[P] each persona's catalogue category ("" for a persona the catalogue does not list)."""
    return [
        catalogue.persona(name).category
        if catalogue is not None and name in catalogue.names
        else ""
        for name in responses.names
    ]
