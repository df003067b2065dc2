"""The labeling pass: from an activation store and an SAE to a `Labels` (feature_store.labels).

`findings.find` makes one streamed SAE pass, contrasts every persona against the default and
tags the features; `label` then builds a card per feature (`cards`), the summary (`summary`:
the persona decoder, the shuffled-label control) and the feature and persona tables. Cost: that
pass (one SAE encoder pass per row it reads), the contrasts (ranks of [n_responses, d_sae] per
persona), and the unembedding product in blocks of features. Returns `Labels`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sae_lens import SAE

from feature_store.activations import ActivationStore
from feature_store.labels import Labels
from sae_atlas.config import LabelConfig
from sae_atlas.errors import SaeAtlasError
from sae_atlas.model import ModelHandle
from sae_atlas.personas import Catalogue
from sae_atlas.stages.base import CountProgress, open_store
from sae_atlas.stages.label.cards import Cards, make_cards
from sae_atlas.stages.label.contrasts import top_personas
from sae_atlas.stages.label.findings import Findings, find
from sae_atlas.stages.label.inputs import TRAIN, Responses, label_identity
from sae_atlas.stages.label.summary import make_summary


def label(
    store: str | Path | ActivationStore,
    sae: SAE[Any],
    hook: str,
    config: LabelConfig,
    handle: ModelHandle | None = None,
    catalogue: Catalogue | None = None,
    progress: CountProgress | None = None,
) -> Labels:
    """Label every feature of `sae` on the activations of `store` at `hook`.

    handle: decodes contexts and gives the unembedding for logit tokens (None: token ids in
    contexts, no logit tokens). catalogue: persona categories, prompts and trigger wrappers
    (`catalogue_from_corpus` reads it from transcripts.h5); None infers the personas from the
    store and makes no trigger tests. progress(n_rows) after each block of the pass.
    """
    started = time.monotonic()
    store = open_store(store)
    check_inputs(store, sae, hook, handle)
    provenance = store.provenance()
    found = find(store, provenance, sae, hook, config, catalogue, progress)
    template_ids = set(found.template[0].tolist())
    cards = make_cards(
        store, provenance, sae, handle, found.stats, found.tags, template_ids, config
    )
    summary = make_summary(found, cards.labels, cards.folded, config)
    summary["seconds"] = time.monotonic() - started
    top_index, top_score = top_personas(found.contrast.effect, config.top_personas)
    train_tokens = np.maximum(found.stats.group_tokens[:, TRAIN], 1)[:, None]
    return Labels(
        hook=hook,
        model=store.model,
        features=feature_table(found, cards),
        top_persona_index=top_index,
        top_persona_score=top_score,
        examples=cards.examples,
        personas=persona_table(found.responses, catalogue, found.categories),
        persona_vectors=(found.stats.group_vector[:, TRAIN] / train_tokens).astype(np.float32),
        persona_profiles=(found.stats.group_sum[:, TRAIN] / train_tokens).astype(np.float32),
        default_persona=found.responses.names[found.responses.default],
        summary=summary,
        config=label_identity(store, sae, hook, config, catalogue),
    )


def check_inputs(
    store: ActivationStore, sae: SAE[Any], hook: str, handle: ModelHandle | None
) -> None:
    """SaeAtlasError unless `store` holds `hook`, the SAE reads its width and `handle` is the
    model the store was harvested from."""
    store.check_hook(hook)
    if int(sae.cfg.d_in) != store.d_model:
        raise SaeAtlasError(
            f"the SAE reads d_in={sae.cfg.d_in} but {store.path} holds d_model={store.d_model} at "
            f"{hook}; give the SAE trained at this hook of this model"
        )
    if handle is not None and handle.model_id != store.model:
        raise SaeAtlasError(
            f"{store.path}: was harvested from {store.model!r}, but the model given is "
            f"{handle.model_id!r}; label with the same model"
        )


def feature_table(found: Findings, cards: Cards) -> pd.DataFrame:
    """One row per feature (feature_store.labels FEATURE_COLUMNS): density on response tokens,
    mean activation where it fires, maximum, tags, card, and its best held-out AUROC of any
    persona against the default (NaN: none)."""
    stats = found.stats
    fires = stats.group_fires.sum((0, 1))
    best_heldout = np.nan_to_num(found.contrast.heldout_auroc, nan=-np.inf).max(0)
    return pd.DataFrame(
        {
            "density": found.density,
            "mean_act": stats.group_sum.sum((0, 1)) / np.maximum(fires, 1),
            "max_act": np.maximum(stats.top_value.max(0), 0),
            "tags": [";".join(t) for t in found.tags],
            "label": cards.labels,
            "top_tokens": cards.top_tokens,
            "pos_logits": cards.pos_logits,
            "neg_logits": cards.neg_logits,
            "heldout_auroc": np.where(np.isfinite(best_heldout), best_heldout, np.nan),
        }
    )


def persona_table(
    responses: Responses, catalogue: Catalogue | None, categories: list[str]
) -> pd.DataFrame:
    """One row per persona (feature_store.labels PERSONA_COLUMNS): name, category, its system
    prompts as JSON, and its responses to train questions."""
    train_responses = np.bincount(
        responses.persona[responses.split == TRAIN], minlength=len(responses.names)
    )
    return pd.DataFrame(
        {
            "name": list(responses.names),
            "category": categories,
            "prompts": [
                json.dumps(
                    list(catalogue.persona(n).prompts)
                    if catalogue is not None and n in catalogue.names
                    else []
                )
                for n in responses.names
            ],
            "n_responses": train_responses,
        }
    )
