"""`AtlasWriter`: the atlas's sections, written from plain numpy arrays and pandas DataFrames.

One method per section (sae/, features/, features/examples/, personas/, persona_space/,
clusters/, any number of dynamics/ entries, and experiments/<name>/ groups); each checks its
tables' columns and every array's shape against `feature_store.schema` before writing anything.
Writing costs one pass over the arrays given; float weights are stored uncompressed, other
numeric columns gzip-compressed in ~64 KiB chunks. The temporary file, the checks and the
rename into place are `TemporaryAtlas`'s.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from feature_store.atlas.arrays import describe, numeric_array, plain_array
from feature_store.atlas.experiments import ExperimentRecord
from feature_store.atlas.temporary import TemporaryAtlas
from feature_store.errors import StoreError
from feature_store.schema import (
    CLUSTER_COLUMNS,
    CLUSTER_KINDS,
    EXAMPLE_COLUMNS,
    EXAMPLE_INDEX,
    EXAMPLE_KINDS,
    EXPERIMENT_SUMMARY,
    EXPERIMENT_SUMMARY_DESCRIPTION,
    EXPERIMENTS_GROUP,
    FEATURE_COLUMNS,
    FEATURE_PERSONA_ARRAYS,
    PERSONA_ARRAYS,
    PERSONA_COLUMNS,
    PERSONA_SPACE_ARRAYS,
    SAE_ARRAYS,
    ArraySpec,
)

_SPEC_NAMES = {spec.name: spec for spec in SAE_ARRAYS}


class AtlasWriter(TemporaryAtlas):
    """Writes an atlas section by section; `finish()` checks it and renames it into place.

    `with AtlasWriter(path, model=..., config=..., d_model=..., d_sae=...) as writer:` then one
    `write_<section>` call per section, in any order; `AtlasWriter.extend(path)` adds sections
    (typically dynamics/) to a complete atlas. The file's lifecycle is TemporaryAtlas's.
    """

    def write_sae(
        self,
        weights: Mapping[str, ArrayLike],
        config: Mapping[str, Any],
        descriptions: Mapping[str, str] | None = None,
    ) -> None:
        """sae/: W_enc [d_model, d_sae], b_enc [d_sae], W_dec [d_sae, d_model], b_dec [d_model],
        optional threshold [d_sae], and any other float parameter described in `descriptions`.
        The SAE config is stored as JSON in the group's `config` attribute."""
        self._start("sae")
        descriptions = dict(descriptions or {})
        required = [spec.name for spec in SAE_ARRAYS if spec.name != "threshold"]
        missing = [name for name in required if name not in weights]
        if missing:
            raise StoreError(f"sae/: weights lack {missing}; give {required} (and any extras)")
        undescribed = [n for n in weights if n not in _SPEC_NAMES and n not in descriptions]
        if undescribed:
            raise StoreError(f"sae/: extra parameters {undescribed} need a description each")
        items = []
        for name, values in weights.items():
            spec = _SPEC_NAMES.get(name)
            if spec is None:
                axes = tuple(f"{name}[{axis}]" for axis in range(np.ndim(values)))
                spec = ArraySpec(f"sae/{name}", "float", axes, descriptions[name])
            items.append((spec, values))
        config_json = json.dumps(dict(config), sort_keys=True, default=str)
        self._write_section("sae", ["sae"], items, {"sae": {"config": config_json}})

    def write_features(
        self,
        table: pd.DataFrame,
        top_persona_index: ArrayLike,
        top_persona_score: ArrayLike,
    ) -> None:
        """features/: `table` has one row per feature (in feature order) and the columns of
        FEATURE_COLUMNS; top_persona_index / _score [d_sae, top_k]: rows of personas/ the
        feature is most selective for, best first, -1 / NaN padded."""
        self._start("features")
        items = self._table_items(FEATURE_COLUMNS, table, "features table")
        items += list(
            zip(FEATURE_PERSONA_ARRAYS, (top_persona_index, top_persona_score), strict=True)
        )
        self._write_section("features", ["features"], items)

    def write_examples(self, table: pd.DataFrame) -> None:
        """features/examples/: one row per example with columns feature, kind ("top" or
        "quantile", or its code), rank, doc, pos, activation, context, in any order; stored
        sorted by (feature, kind, rank) with the per-feature index features/example_start and
        features/example_count."""
        self._start("examples")
        self._table_items(EXAMPLE_COLUMNS, table, "examples table")
        kind = table["kind"].to_numpy()
        if kind.dtype.kind in "OUS":
            codes = pd.Categorical(kind, categories=list(EXAMPLE_KINDS)).codes
            if (codes < 0).any():
                unknown = sorted({str(k) for k in kind if k not in EXAMPLE_KINDS})
                raise StoreError(f"examples table: unknown kinds {unknown}; use {EXAMPLE_KINDS}")
            kind = codes
        kind = numeric_array(EXAMPLE_COLUMNS[1], kind)
        if len(kind) and kind.max() >= len(EXAMPLE_KINDS):
            raise StoreError(f"examples table: kind codes must index {EXAMPLE_KINDS}")
        feature = numeric_array(EXAMPLE_COLUMNS[0], table["feature"].to_numpy())
        rank = numeric_array(EXAMPLE_COLUMNS[2], table["rank"].to_numpy())
        d_sae = self.dims["d_sae"]
        if len(feature) and (feature.min() < 0 or feature.max() >= d_sae):
            raise StoreError(f"examples table: feature ids must be in [0, {d_sae})")
        order = np.lexsort((rank, kind, feature))
        ordered = table.iloc[order].assign(kind=kind[order])
        items = self._table_items(EXAMPLE_COLUMNS, ordered, "examples table")
        count = np.bincount(feature, minlength=d_sae)
        start = np.concatenate([[0], np.cumsum(count)[:-1]])
        items += list(
            zip(EXAMPLE_INDEX, (start.astype(np.int64), count.astype(np.int32)), strict=True)
        )
        self._write_section(
            "examples",
            ["features", "features/examples"],
            items,
            {"features/examples/kind": {"kinds": json.dumps(list(EXAMPLE_KINDS))}},
        )

    def write_personas(
        self,
        table: pd.DataFrame,
        *,
        vectors: ArrayLike,
        profiles: ArrayLike,
        coords: ArrayLike,
    ) -> None:
        """personas/: `table` has one row per persona with name, category, prompts (a list of
        strings or its JSON), axis_projection; vectors [P, d_model], profiles [P, d_sae],
        coords [P, n_components], in the table's row order."""
        self._start("personas")
        if isinstance(table, pd.DataFrame) and "name" in table:
            names = table["name"].astype(str)
            if names.duplicated().any():
                raise StoreError(
                    f"personas table: duplicate names {sorted(set(names[names.duplicated()]))}"
                )
        if isinstance(table, pd.DataFrame) and "prompts" in table:
            table = table.assign(prompts=[self._prompts_json(p) for p in table["prompts"]])
        items = self._table_items(PERSONA_COLUMNS, table, "personas table")
        items += list(zip(PERSONA_ARRAYS, (vectors, profiles, coords), strict=True))
        self._write_section("personas", ["personas"], items)

    @staticmethod
    def _prompts_json(prompts: Any) -> str:
        if isinstance(prompts, str):
            try:
                parsed = json.loads(prompts)
            except json.JSONDecodeError:
                parsed = None
            if not isinstance(parsed, list):
                raise StoreError(f"personas table: prompts {prompts[:40]!r} is not a JSON list")
            return prompts
        return json.dumps([str(p) for p in prompts])

    def write_persona_space(
        self,
        *,
        assistant_axis: ArrayLike,
        center: ArrayLike,
        components: ArrayLike,
        explained_variance: ArrayLike,
    ) -> None:
        """persona_space/: assistant_axis [d_model], center [d_model] (mean persona vector),
        components [n_components, d_model], explained_variance [n_components]."""
        self._start("persona_space")
        values = (assistant_axis, center, components, explained_variance)
        items = list(zip(PERSONA_SPACE_ARRAYS, values, strict=True))
        self._write_section("persona_space", ["persona_space"], items)

    def write_clusters(self, table: pd.DataFrame) -> None:
        """clusters/: one row per cluster with id, kind (CLUSTER_KINDS), size, label,
        dominant_personas ('pirate:0.40;villain:0.25'), stability."""
        self._start("clusters")
        items = self._table_items(CLUSTER_COLUMNS, table, "clusters table")
        unknown = sorted({str(k) for k in table["kind"] if k not in CLUSTER_KINDS})
        if unknown:
            raise StoreError(f"clusters table: unknown kinds {unknown}; use {CLUSTER_KINDS}")
        if table["id"].duplicated().any():
            raise StoreError("clusters table: cluster ids must be unique")
        self._write_section("clusters", ["clusters"], items)

    def write_dynamics(
        self,
        name: str,
        data: ArrayLike | pd.DataFrame,
        description: str,
        *,
        unit: str = "",
        column_descriptions: Mapping[str, str] | None = None,
        column_units: Mapping[str, str] | None = None,
    ) -> None:
        """dynamics/<name>: an array (one dataset) or a DataFrame (a group, one dataset per
        column, each column described in `column_descriptions`). Replaces an existing entry."""
        self._start(None)
        if not name or "/" in name:
            raise StoreError(f"dynamics: name {name!r} must be non-empty and contain no '/'")
        self._group("dynamics")
        self._write_entry(
            f"dynamics/{name}", data, description, unit, column_descriptions, column_units
        )

    def write_experiment(self, experiment: ExperimentRecord) -> None:
        """experiments/<name>/ (feature_store.schema.experiments): replaces that experiment whole
        (its tables, summary and provenance) and nothing else. Names and descriptions are
        checked before anything is written; a value that cannot be stored raises StoreError part
        way, and the writer's exit then drops the copy (record_experiment: the atlas stays as
        it was)."""
        self._start(None)
        experiment.check()
        path = f"{EXPERIMENTS_GROUP}/{experiment.name}"
        group = self._group(EXPERIMENTS_GROUP)
        if experiment.name in group:
            del group[experiment.name]
        created = self.file.create_group(path, track_order=True)
        created.attrs.update(experiment.provenance())
        for table, data in experiment.tables.items():
            self._write_entry(
                f"{path}/{table}",
                data,
                experiment.descriptions[table],
                experiment.units.get(table, ""),
                experiment.columns,
                experiment.units,
            )
        summary = plain_array(f"{path}/{EXPERIMENT_SUMMARY}", experiment.summary_json())
        self._dataset(f"{path}/{EXPERIMENT_SUMMARY}", summary, EXPERIMENT_SUMMARY_DESCRIPTION)

    def _write_entry(
        self,
        path: str,
        data: ArrayLike | pd.DataFrame,
        description: str,
        unit: str = "",
        column_descriptions: Mapping[str, str] | None = None,
        column_units: Mapping[str, str] | None = None,
    ) -> None:
        """`path`: an array (one dataset) or a DataFrame (a group, one dataset per column, each
        described in `column_descriptions`, with its unit from `column_units`); an existing
        entry there is replaced. Checks everything before writing anything."""
        if not description:
            raise StoreError(f"{path}: needs a description")
        if isinstance(data, pd.DataFrame):
            descriptions = dict(column_descriptions or {})
            undescribed = [str(c) for c in data.columns if c not in descriptions]
            if undescribed:
                raise StoreError(f"{path}: columns {undescribed} need a description each")
            columns = {str(c): plain_array(f"{path}/{c}", data[c].to_numpy()) for c in data}
        else:
            array = plain_array(path, data)
        if path in self.file:
            del self.file[path]
        if isinstance(data, pd.DataFrame):
            describe(self.file.create_group(path, track_order=True), description, unit)
            units = column_units or {}
            for column, values in columns.items():
                self._dataset(
                    f"{path}/{column}", values, descriptions[column], units.get(column, "")
                )
        else:
            self._dataset(path, array, description, unit)
