"""What the labeling pass reads: the store, the catalogue, the responses it contrasts, the user
messages of the trigger tests, and the identity that decides its output.

Costs one look at the store's provenance (one row per transcript); returns small per-transcript
index arrays (`Responses`, `TriggerSet`) and plain dicts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sae_lens import SAE

from feature_store.activations import ActivationStore
from feature_store.errors import StoreError
from feature_store.transcripts import TranscriptStore
from sae_atlas.config import LabelConfig, to_dict
from sae_atlas.errors import SaeAtlasError
from sae_atlas.personas import Catalogue
from sae_atlas.sae import sae_digest
from sae_atlas.stages.base import store_digest
from sae_atlas.stages.corpus import SAMPLED_CONDITIONS, UNWRAPPED

TRAIN, HELDOUT = 0, 1
"""Split codes of `Responses.split` and `TriggerSet.split` (-1: neither)."""


@dataclass(frozen=True)
class Responses:
    """The sampled responses of a store: transcripts of a sampled condition with assistant tokens.

    doc: [n] transcript rows; persona: [n] rows of `names` (the default family under the default
    persona); split: [n] TRAIN, HELDOUT or -1; question: [n] question ids.
    """

    doc: np.ndarray
    persona: np.ndarray
    split: np.ndarray
    question: np.ndarray
    names: tuple[str, ...]
    default: int

    def __len__(self) -> int:
        return len(self.doc)


@dataclass(frozen=True)
class TriggerSet:
    """The user messages the trigger tests compare: each conditional persona's transcripts with
    its wrapper (condition persona) and without it (condition unwrapped), pairs that share the
    persona, system-prompt variant and question.

    doc: [m] transcript rows; wrapper: [m] index into `wrappers`; wrapped: [m] bool; split: [m]
    TRAIN, HELDOUT or -1.
    """

    doc: np.ndarray
    wrapper: np.ndarray
    wrapped: np.ndarray
    split: np.ndarray
    wrappers: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.doc)


def catalogue_from_corpus(path: str | Path) -> Catalogue:
    """The catalogue a corpus store (transcripts.h5) was sampled from."""
    try:
        store = TranscriptStore(path)
    except StoreError as error:
        raise SaeAtlasError(
            f"{error}; give the transcripts.h5 written by `sae-atlas corpus`"
        ) from None
    if "catalogue_data" not in store.config:
        raise SaeAtlasError(
            f"{path}: records no catalogue; give the transcripts.h5 written by `sae-atlas corpus`"
        )
    return Catalogue.from_dict({"source": f"{path} (catalogue)", **store.config["catalogue_data"]})


def label_identity(
    store: ActivationStore,
    sae: SAE[Any],
    hook: str,
    config: LabelConfig,
    catalogue: Catalogue | None,
) -> dict[str, Any]:
    """What decides a Labels: config, hook, SAE parameters, store content, catalogue content (not
    where it was read from, so a run folder stays valid in another folder)."""
    return {
        "label": to_dict(config),
        "hook": hook,
        "sae": {"d_sae": int(sae.cfg.d_sae), "sha1": sae_digest(sae)},
        "store": store_digest(store),
        "catalogue_sha1": None if catalogue is None else catalogue_sha1(catalogue),
    }


def catalogue_sha1(catalogue: Catalogue) -> str:
    """SHA-1 of the catalogue's content (its personas and questions, not its `source`)."""
    content = {key: value for key, value in catalogue.to_dict().items() if key != "source"}
    return hashlib.sha1(json.dumps(content, sort_keys=True).encode()).hexdigest()


def find_responses(
    provenance: pd.DataFrame, response_tokens: np.ndarray, catalogue: Catalogue | None
) -> Responses:
    """The responses of `provenance` (one row per transcript) with at least one response token.

    response_tokens: [n_transcripts] assistant tokens per transcript. Personas are ordered as in
    the catalogue (the default first otherwise); without a catalogue the default persona is the
    one of the default / no_system transcripts.
    """
    sampled = provenance["condition"].isin(list(SAMPLED_CONDITIONS)).to_numpy() & (
        response_tokens > 0
    )
    default_rows = sampled & provenance["condition"].isin(["default", "no_system"]).to_numpy()
    if not default_rows.any():
        raise SaeAtlasError(
            "the store has no default / no_system responses, so nothing to contrast personas "
            "against; build the corpus with conditions default and no_system"
        )
    default_name = _default_name(provenance, default_rows, catalogue)
    present = set(provenance.loc[sampled, "persona"]) | {default_name}
    order = [default_name, *sorted(present - {default_name})]
    if catalogue is not None:
        listed = [name for name in catalogue.names if name in present]
        order = listed + sorted(present - set(listed))
    index = {name: i for i, name in enumerate(order)}
    rows = provenance[sampled]
    persona = np.array([index[name] for name in rows["persona"]], dtype=np.int64)
    persona[default_rows[sampled]] = index[default_name]
    return Responses(
        doc=np.flatnonzero(sampled),
        persona=persona,
        split=split_codes(rows["split"]),
        question=rows["question_id"].to_numpy(dtype=object),
        names=tuple(order),
        default=index[default_name],
    )


def _default_name(
    provenance: pd.DataFrame, default_rows: np.ndarray, catalogue: Catalogue | None
) -> str:
    """The catalogue's default persona, or the one persona the default / no_system rows name."""
    if catalogue is not None:
        return catalogue.default_persona.name
    names_found = sorted(set(provenance.loc[default_rows, "persona"]))
    if len(names_found) != 1:
        raise SaeAtlasError(
            f"default / no_system transcripts name several personas {names_found}; pass the "
            "catalogue"
        )
    return str(names_found[0])


def split_codes(splits: pd.Series) -> np.ndarray:
    """[n] TRAIN, HELDOUT or -1 for split names."""
    code = {"train": TRAIN, "heldout": HELDOUT}
    return np.array([code.get(s, -1) for s in splits], dtype=np.int64)


def find_triggers(provenance: pd.DataFrame, catalogue: Catalogue | None) -> TriggerSet | None:
    """The TriggerSet of `provenance` (one row per transcript): for each conditional persona of
    the catalogue, its persona and unwrapped transcripts that have a partner of the other kind
    (same variant and question). None without a catalogue or without any such pair (a corpus
    sampled without the unwrapped condition)."""
    if catalogue is None:
        return None
    wrapper_of = {
        item.name: item.trigger.open.strip().replace(";", ",")
        for item in catalogue.personas
        if item.trigger is not None
    }
    conditional = provenance["persona"].isin(list(wrapper_of)).to_numpy()
    condition = provenance["condition"].to_numpy(dtype=object)
    wrapped = conditional & (condition == "persona")
    unwrapped = conditional & (condition == UNWRAPPED)
    key = (
        provenance["persona"].astype(str)
        + "|"
        + provenance["variant"].astype(str)
        + "|"
        + provenance["question_id"].astype(str)
    ).to_numpy(dtype=object)
    shared = np.intersect1d(key[wrapped], key[unwrapped])
    rows = np.flatnonzero((wrapped | unwrapped) & np.isin(key, shared))
    if not len(rows):
        return None
    names = [wrapper_of[name] for name in provenance["persona"].iloc[rows]]
    wrappers = tuple(sorted(set(names)))
    return TriggerSet(
        doc=rows,
        wrapper=np.array([wrappers.index(name) for name in names], dtype=np.int64),
        wrapped=wrapped[rows],
        split=split_codes(provenance["split"].iloc[rows]),
        wrappers=wrappers,
    )
