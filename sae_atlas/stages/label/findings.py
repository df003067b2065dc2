"""What the labeling pass finds before it writes cards: the responses and their statistics,
every persona contrasted against the default, the tags, puppeteer and template features.

Cost: the streamed SAE pass (`statistics.collect`) and the contrasts. Returns `Findings`.
"""

from __future__ import annotations

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
from sae_atlas.stages.label.puppeteer import (
    TemplateFeatures,
    puppeteer_features,
    template_features,
)
from sae_atlas.stages.label.rows import assistant_tokens
from sae_atlas.stages.label.statistics import FeatureStatistics, collect


@dataclass(frozen=True)
class Findings:
    """responses, triggers (None: no trigger tests) and the pass's statistics; categories: [P]
    catalogue category of each persona ("": unlisted); contrast: every persona against the
    default; tags: per feature; puppeteer: puppeteer_features' table; template:
    template_features; density: [F] share of response tokens each feature fires on."""

    responses: Responses
    triggers: TriggerSet | None
    stats: FeatureStatistics
    categories: list[str]
    contrast: Contrast
    tags: list[list[str]]
    puppeteer: pd.DataFrame
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
) -> Findings:
    """The Findings of `sae` on `store` (`provenance`: its transcripts) at `hook`."""
    responses = find_responses(
        provenance, assistant_tokens(store, provenance, config.block_tokens), catalogue
    )
    triggers = find_triggers(provenance, catalogue)
    stats = collect(store, sae, hook, responses, config, progress, triggers)
    categories = persona_categories(responses, catalogue)
    result = contrast(stats.response_mean, responses, config, triggers, stats.trigger_max)
    tags = contrast_tags(result, responses, config, categories)
    puppeteer = puppeteer_features(stats, responses, config)
    for feature in np.flatnonzero(puppeteer["puppeteer"]):
        tags[feature].append("puppeteer")
    density = stats.group_fires.sum((0, 1)) / max(stats.group_tokens.sum(), 1)
    return Findings(
        responses=responses,
        triggers=triggers,
        stats=stats,
        categories=categories,
        contrast=result,
        tags=tags,
        puppeteer=puppeteer,
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
