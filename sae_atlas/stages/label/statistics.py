"""What one streamed SAE pass over a store computes for the labeling pass (`collect`), and the
per-response statistics other analyses compare (`response_statistics`).

Cost: one SAE pass over the rows the statistics read (`accumulate.stream`). Memory of `collect`
about 8 x n_responses x d_sae bytes (response and header means, plus 2 x d_sae per TriggerSet
row) and [P, d_sae] float64 totals, plus one block; `response_statistics` about 4 x d per
response per statistic.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sae_lens import SAE

from feature_store.activations import ActivationStore
from sae_atlas.config import LabelConfig
from sae_atlas.personas import Catalogue
from sae_atlas.stages.base import CountProgress, open_store
from sae_atlas.stages.label.accumulate import (
    Block,
    FiringSample,
    Maxima,
    Means,
    PersonaMaxSums,
    ResidualSums,
    Statistic,
    TemplateFires,
    TopExamples,
    Totals,
    first_response_ids,
    header_ids,
    response_ids,
    stream,
    user_ids,
)
from sae_atlas.stages.label.inputs import Responses, TriggerSet, find_responses
from sae_atlas.stages.label.rows import (
    CONTROLS,
    RowKinds,
    assistant_tokens,
    doc_kinds,
    store_blocks,
)


@dataclass
class FeatureStatistics:
    """What one pass accumulates (P personas, F = d_sae features, K top examples, R samples).

    response_mean: [n_responses, F] float32 mean activation over each response's tokens;
    header_mean: [n_responses, F] float32 mean over the assistant header before each response;
    user_max: [m, F] float16 maximum on the user's message of each TriggerSet row (None without
    one); group_tokens: [P, 2] response tokens per persona and split (0 train, 1 other);
    group_sum / group_fires: [P, 2, F]; group_vector: [P, 2, d_model] residual sums;
    persona_max_sum: [P, F] sums of response maxima; header_tokens: [P]; header_sum /
    header_fires: [P, F]; template_tokens; template_fires: [F]; control_tokens: [C];
    control_sum / control_fires: [C, F] (C = CONTROLS); top_value / top_row: [K, F] (row -1:
    none); sample_value / sample_row: [R, F] a uniform sample of firing response rows (row -1:
    none).
    """

    response_mean: np.ndarray
    header_mean: np.ndarray
    user_max: np.ndarray | None
    group_tokens: np.ndarray
    group_sum: np.ndarray
    group_fires: np.ndarray
    group_vector: np.ndarray
    persona_max_sum: np.ndarray
    header_tokens: np.ndarray
    header_sum: np.ndarray
    header_fires: np.ndarray
    template_tokens: int
    template_fires: np.ndarray
    control_tokens: np.ndarray
    control_sum: np.ndarray
    control_fires: np.ndarray
    top_value: np.ndarray
    top_row: np.ndarray
    sample_value: np.ndarray
    sample_row: np.ndarray


def group_ids(kinds: RowKinds) -> np.ndarray:
    """Response rows: persona * 2 + (0 train, 1 otherwise)."""
    return kinds.group


def control_ids(kinds: RowKinds) -> np.ndarray:
    """Rows carrying the response text of a control: index into CONTROLS."""
    return kinds.control


def collect(
    store: ActivationStore,
    sae: SAE[Any],
    hook: str,
    responses: Responses,
    config: LabelConfig,
    progress: CountProgress | None = None,
    triggers: TriggerSet | None = None,
) -> FeatureStatistics:
    """One pass over `store` at `hook`: the FeatureStatistics of `responses` (and the user
    messages of `triggers`). Encoding and every running statistic stay on the SAE's device."""
    n_personas, n_features = len(responses.names), int(sae.cfg.d_sae)
    device = sae.W_dec.device

    def header_persona(kinds: RowKinds) -> np.ndarray:
        return np.where(kinds.header >= 0, responses.persona[kinds.header], -1)

    generator = torch.Generator(device=device).manual_seed(config.seed)
    named: dict[str, Statistic] = {  # side by side, statistics of the same rows share a gather
        "response_mean": Means(len(responses), n_features, response_ids),
        "persona_max_sum": PersonaMaxSums(responses, n_features, device),
        "top": TopExamples(config.top_examples, n_features, device),
        "sample": FiringSample(config.reservoir, n_features, device, generator),
        "group": Totals(2 * n_personas, n_features, device, group_ids),
        "group_vector": ResidualSums(2 * n_personas, store.d_model, device, group_ids),
        "header_mean": Means(len(responses), n_features, header_ids),
        "header": Totals(n_personas, n_features, device, header_persona),
        "template": TemplateFires(n_features, device),
        "control": Totals(len(CONTROLS), n_features, device, control_ids),
    }
    if triggers is not None:
        named["user_max"] = Maxima(len(triggers), n_features, user_ids, dtype=np.float16)
    provenance = store.provenance()
    docs = doc_kinds(provenance, responses, triggers)
    blocks = store_blocks(provenance, config.block_tokens)
    stream(store, sae, hook, docs, responses, list(named.values()), blocks, progress)
    return _feature_statistics(named, n_personas)


def _feature_statistics(named: dict[str, Any], n_personas: int) -> FeatureStatistics:
    """The FeatureStatistics of `collect`'s statistics after the pass."""
    by_persona = (n_personas, 2)
    group_tokens, group_sum, group_fires = named["group"].result()
    header_tokens, header_sum, header_fires = named["header"].result()
    control_tokens, control_sum, control_fires = named["control"].result()
    template_tokens, template_fires = named["template"].result()
    top_value, top_row = named["top"].result()
    sample_value, sample_row = named["sample"].result()
    group_vector = named["group_vector"].result()
    return FeatureStatistics(
        response_mean=named["response_mean"].result(),
        header_mean=named["header_mean"].result(),
        user_max=named["user_max"].result() if "user_max" in named else None,
        group_tokens=group_tokens.reshape(by_persona),
        group_sum=group_sum.reshape(*by_persona, -1),
        group_fires=group_fires.reshape(*by_persona, -1),
        group_vector=group_vector.reshape(*by_persona, -1),
        persona_max_sum=named["persona_max_sum"].result(),
        header_tokens=header_tokens,
        header_sum=header_sum,
        header_fires=header_fires,
        template_tokens=template_tokens,
        template_fires=template_fires,
        control_tokens=control_tokens,
        control_sum=control_sum,
        control_fires=control_fires,
        top_value=top_value,
        top_row=top_row,
        sample_value=sample_value,
        sample_row=sample_row,
    )


def persona_statistics(stats: FeatureStatistics, responses: Responses) -> dict[str, np.ndarray]:
    """Per persona and feature over all its responses, each [P, F]: firing_rate (share of response
    tokens), mean_act (mean activation where it fires), response_mean (mean over responses of the
    response-level mean) and response_max (mean over responses of the response-level maximum)."""
    tokens = stats.group_tokens.sum(1)[:, None]
    fires = stats.group_fires.sum(1)
    n_responses = np.bincount(responses.persona, minlength=len(responses.names))[:, None]
    response_sum = np.zeros_like(stats.persona_max_sum)
    np.add.at(response_sum, responses.persona, stats.response_mean)
    return {
        "firing_rate": fires / np.maximum(tokens, 1),
        "mean_act": stats.group_sum.sum(1) / np.maximum(fires, 1),
        "response_mean": response_sum / np.maximum(n_responses, 1),
        "response_max": stats.persona_max_sum / np.maximum(n_responses, 1),
    }


FIRST_TOKENS = (8, 16, 32)
"""`response_statistics` gives the mean over each response's first k tokens for these k."""


def response_statistics(
    store: str | Path | ActivationStore,
    sae: SAE[Any] | None,
    hook: str,
    catalogue: Catalogue | None,
    block_tokens: int = LabelConfig.block_tokens,
) -> tuple[Responses, dict[str, np.ndarray]]:
    """The responses of `store` and, per response, {statistic: [n_responses, d] float32}: over its
    tokens the mean of the SAE codes (`mean`: the labeling pass's response_mean), their maximum
    (`max`), the share of tokens each feature fires on (`rate`), the mean over its first k tokens
    (`first<k>`, FIRST_TOKENS); the mean codes over its assistant header (`header`); the mean raw
    residual over its tokens (`residual`) and header (`header_residual`). sae None: only the
    two residual means (d = d_model; d = d_sae otherwise)."""
    store = open_store(store)
    provenance = store.provenance()
    responses = find_responses(
        provenance, assistant_tokens(store, provenance, block_tokens), catalogue
    )
    n, d_sae, d_model = len(responses), 0 if sae is None else int(sae.cfg.d_sae), store.d_model
    coded: dict[str, Means | Maxima] = {
        "mean": Means(n, d_sae, response_ids),
        "max": Maxima(n, d_sae, response_ids),
        "rate": Means(n, d_sae, response_ids, Block.fires),
        **{f"first{k}": Means(n, d_sae, first_response_ids(k)) for k in FIRST_TOKENS},
        "header": Means(n, d_sae, header_ids),
    }
    named: dict[str, Means | Maxima] = {
        **({} if sae is None else coded),
        "residual": Means(n, d_model, response_ids, Block.residual),
        "header_residual": Means(n, d_model, header_ids, Block.residual),
    }
    docs = doc_kinds(provenance, responses, None)
    blocks = store_blocks(provenance, block_tokens)
    stream(store, sae, hook, docs, responses, list(named.values()), blocks)
    return responses, {name: statistic.result() for name, statistic in named.items()}
