"""Puppeteer features (fire in assistant responses under nearly every persona, the default
included, evenly, and are enriched over the same text in a user turn and outside the chat
template) and template features (fire on the assistant header, where the model selects its
persona).

Cost: O(P x F) on the pass's statistics. Returns a per-feature table and feature ids.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sae_atlas.config import LabelConfig
from sae_atlas.stages.label.inputs import Responses
from sae_atlas.stages.label.rows import CONTROLS
from sae_atlas.stages.label.statistics import FeatureStatistics

TemplateFeatures = tuple[np.ndarray, dict[str, list[tuple[int, float, float]]]]
"""Template feature ids (by header rate), and per persona (id, header mean, excess) rows."""


def puppeteer_features(
    stats: FeatureStatistics, responses: Responses, config: LabelConfig
) -> pd.DataFrame:
    """Per feature: persona_share (share of personas in at least puppeteer_min_response_share of
    whose responses it fires), cv (of the per-persona mean activation), enrichment over each
    control, and `puppeteer` (all criteria met; False without controls)."""
    tokens = stats.group_tokens.sum(1)
    present = tokens > 0
    means = stats.group_sum.sum(1)[present] / tokens[present, None]
    fires = stats.response_mean > 0
    response_share = np.stack(
        [fires[responses.persona == p].mean(0) for p in np.flatnonzero(present)]
    )
    dense = response_share >= config.puppeteer_min_response_share
    persona_share = dense.mean(0)
    default_dense = dense[np.flatnonzero(present) == responses.default].all(0)
    cv = means.std(0) / np.maximum(means.mean(0), 1e-12)
    assistant_mean = stats.group_sum.sum((0, 1)) / max(tokens.sum(), 1)
    table = pd.DataFrame({"persona_share": persona_share, "cv": cv})
    is_puppeteer = (
        (persona_share >= config.puppeteer_persona_share)
        & default_dense
        & (cv <= config.puppeteer_max_cv)
    )
    for code, condition in enumerate(CONTROLS):
        control_mean = stats.control_sum[code] / max(stats.control_tokens[code], 1)
        enrichment = assistant_mean / np.maximum(control_mean, 1e-12)
        table[f"enrichment_{condition}"] = enrichment
        is_puppeteer &= (stats.control_tokens[code] > 0) & (
            enrichment >= config.puppeteer_min_enrichment
        )
    table["puppeteer"] = is_puppeteer
    return table


def template_features(
    stats: FeatureStatistics, responses: Responses, density: np.ndarray, config: LabelConfig
) -> TemplateFeatures:
    """Features of the assistant header: (ids firing on it at >= template_min_rate and
    >= template_min_enrichment x their response density, by header rate), and per persona the
    features whose header mean most exceeds the mean over personas: (id, header mean, excess)."""
    header_rate = stats.header_fires.sum(0) / max(stats.header_tokens.sum(), 1)
    chosen = np.flatnonzero(
        (header_rate >= config.template_min_rate)
        & (header_rate >= config.template_min_enrichment * density)
    )
    chosen = chosen[np.argsort(-header_rate[chosen], kind="stable")]
    present = stats.header_tokens > 0
    means = stats.header_sum[present] / stats.header_tokens[present, None]
    excess = means - means.mean(0)
    by_persona = {}
    for row, p in enumerate(np.flatnonzero(present)):
        best = np.argsort(-excess[row], kind="stable")[: config.top_personas]
        by_persona[responses.names[p]] = [
            (int(f), float(means[row, f]), float(excess[row, f]))
            for f in best
            if excess[row, f] > 0
        ]
    return chosen, by_persona
