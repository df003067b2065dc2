"""The labeling result `Labels` and its file `labels.h5`: what label writes, organize reads.

Stages meet at plain data: `sae_atlas.stages.label` computes a `Labels` (per-feature statistics,
tags, cards and examples; per-persona residual vectors and SAE profiles; a summary of the
contrasts), `save_labels` writes it atomically (temporary file, then rename) with a description on
every dataset, and `sae_atlas.stages.organize` reads it back with `load_labels` to build the atlas.
The column names are those of the atlas's `features/`, `features/examples/` and `personas/` groups
(feature_store.schema), without the columns organize adds (cluster, map_x, map_y)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from feature_store.appendable import check_kind, open_readable, write_root_attrs
from feature_store.errors import StoreError
from feature_store.schema import RUNTIME_ATTR

LABELS_KIND = "sae-atlas/labels"

FEATURE_COLUMNS: dict[str, str] = {
    "density": "fraction of response tokens on which the feature fires",
    "mean_act": "mean activation over the tokens where it fires",
    "max_act": "largest activation seen",
    "tags": "tags separated by ';': persona:<name>, roleplay, assistant, puppeteer, "
    "trigger:<wrapper>",
    "label": "short label assembled from the card (no outside model)",
    "top_tokens": "tokens it fires on most, ' | '-separated",
    "pos_logits": "tokens its decoder direction promotes through the unembedding",
    "neg_logits": "tokens its decoder direction suppresses through the unembedding",
    "heldout_auroc": "best held-out AUROC of the feature for a persona against the default",
}
EXAMPLE_COLUMNS: dict[str, str] = {
    "feature": "feature index",
    "kind": "top or quantile",
    "rank": "rank within its kind (0: strongest / lowest quantile)",
    "doc": "transcript row in the activation store",
    "pos": "token position in the transcript",
    "activation": "feature activation at that token",
    "context": "text around the token, the token marked with [[ ]]",
}
PERSONA_COLUMNS: dict[str, str] = {
    "name": "persona name",
    "category": "catalogue category",
    "prompts": "JSON list of its system-prompt variants",
    "n_responses": "responses averaged into its vector and profile",
}


@dataclass
class Labels:
    """What the labeling pass found for one SAE (hook).

    features: [d_sae rows] FEATURE_COLUMNS; top_persona_index / top_persona_score: [d_sae, k]
    (-1 / NaN padding); examples: EXAMPLE_COLUMNS rows; personas: [P rows] PERSONA_COLUMNS;
    persona_vectors: [P, d_model] mean residual over response tokens; persona_profiles:
    [P, d_sae] mean SAE activation over response tokens; default_persona: the name of the row that
    is the default assistant; summary: JSON-ready figures of the contrasts (per-persona best
    held-out AUROC, decoder accuracy, counts per tag, puppeteer and template features, ...);
    runtime: how labeling ran, {"label": {dtype, device, threads, reason}} (RUNTIME_ATTR).
    """

    hook: str
    model: str
    features: pd.DataFrame
    top_persona_index: np.ndarray
    top_persona_score: np.ndarray
    examples: pd.DataFrame
    personas: pd.DataFrame
    persona_vectors: np.ndarray
    persona_profiles: np.ndarray
    default_persona: str
    summary: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    runtime: dict[str, Any] = field(default_factory=dict)

    @property
    def d_sae(self) -> int:
        return len(self.features)


def _write_table(group: h5py.Group, table: pd.DataFrame, descriptions: dict[str, str]) -> None:
    for column, description in descriptions.items():
        values = table[column].to_numpy()
        if values.dtype == object:
            values = np.asarray(values, dtype=h5py.string_dtype())
        dataset = group.create_dataset(column, data=values)
        dataset.attrs["description"] = description


def _read_table(group: h5py.Group, descriptions: dict[str, str]) -> pd.DataFrame:
    data = {}
    for column in descriptions:
        values = group[column][()]
        if values.dtype == object:
            values = np.array(
                [v.decode() if isinstance(v, bytes) else v for v in values], dtype=object
            )
        data[column] = values
    return pd.DataFrame(data)


def save_labels(labels: Labels, path: str | Path) -> None:
    """Write `labels` to `path` atomically (a crash leaves no partial file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as file:
        write_root_attrs(
            file,
            kind=LABELS_KIND,
            model=labels.model,
            config=labels.config,
            attrs={
                "hook": labels.hook,
                "default_persona": labels.default_persona,
                "summary": json.dumps(labels.summary),
                RUNTIME_ATTR: json.dumps(labels.runtime),
                "complete": False,
            },
        )
        features = file.create_group("features")
        features.attrs["description"] = "one row per SAE feature"
        _write_table(features, labels.features, FEATURE_COLUMNS)
        for name, values, text in (
            (
                "top_persona_index",
                labels.top_persona_index,
                "personas/ rows with the highest scores for the feature (-1: none)",
            ),
            ("top_persona_score", labels.top_persona_score, "their scores (NaN: none)"),
        ):
            features.create_dataset(name, data=values).attrs["description"] = text
        examples = features.create_group("examples")
        examples.attrs["description"] = "top-activating and quantile contexts of each feature"
        _write_table(examples, labels.examples, EXAMPLE_COLUMNS)
        personas = file.create_group("personas")
        personas.attrs["description"] = "one row per persona"
        _write_table(personas, labels.personas, PERSONA_COLUMNS)
        personas.create_dataset("vector", data=labels.persona_vectors).attrs["description"] = (
            "persona vector: mean residual activation over response tokens [P, d_model]"
        )
        personas.create_dataset("profile", data=labels.persona_profiles).attrs["description"] = (
            "mean SAE activation over response tokens [P, d_sae]"
        )
        file.attrs["complete"] = True
    os.replace(tmp, path)


def load_labels(path: str | Path) -> Labels:
    """Read a labels.h5 written by `save_labels`."""
    with open_readable(path) as file:
        check_kind(file, LABELS_KIND)
        if not bool(file.attrs.get("complete", False)):
            raise StoreError(f"{path}: is incomplete; rerun `sae-atlas label`")
        return Labels(
            hook=str(file.attrs["hook"]),
            model=str(file.attrs["model"]),
            features=_read_table(file["features"], FEATURE_COLUMNS),
            top_persona_index=file["features/top_persona_index"][()],
            top_persona_score=file["features/top_persona_score"][()],
            examples=_read_table(file["features/examples"], EXAMPLE_COLUMNS),
            personas=_read_table(file["personas"], PERSONA_COLUMNS),
            persona_vectors=file["personas/vector"][()],
            persona_profiles=file["personas/profile"][()],
            default_persona=str(file.attrs["default_persona"]),
            summary=json.loads(file.attrs["summary"]),
            config=json.loads(file.attrs["config"]),
            runtime=json.loads(file.attrs.get(RUNTIME_ATTR, "{}")),
        )


def labels_config(path: str | Path) -> dict[str, Any] | None:
    """The config recorded in a complete labels file at `path` (None: no file, another kind of
    file, or an incomplete one)."""
    if not Path(path).is_file():
        return None
    with h5py.File(path, "r") as file:
        if file.attrs.get("schema") != LABELS_KIND or not bool(file.attrs.get("complete", False)):
            return None
        return dict(json.loads(file.attrs["config"]))
