"""The atlas: one self-describing HDF5 file (kind sae-atlas/atlas) and its query API.

`AtlasWriter` takes plain numpy arrays and pandas DataFrames built by the science code, checks
every shape against the layout in `feature_store.schema` (ATLAS_SPECS), and writes `sae/`,
`features/` (with `features/examples/`), `personas/`, `persona_space/`, `clusters/` and optional
`dynamics/` into a temporary file beside the final path; `finish()` checks cross-references and
renames it into place, so the final path only ever holds a complete atlas. An exception inside
`with AtlasWriter(...)` removes the temporary file (a `kill -9` can leave a stray `.*.tmp` file
beside the target, never a partial atlas). Writing costs one pass over the arrays given; float
weights are stored uncompressed, other numeric columns gzip-compressed in ~64 KiB chunks.

`Atlas.open(path)` opens the file read-only and reads only its root attributes. Queries return
pandas DataFrames (or small card objects): `feature(i)` reads one row of each feature column, the
feature's slice of the examples table and its decoder row, about a millisecond; small columns
(numeric feature columns, persona names and vectors, the example index) are cached on first use,
text columns when a query needs the whole column (`features()`, `search()`, `persona()`).
`nearest_features` streams the decoder in blocks (one read of W_dec per call, no d_sae x d_sae
matrix). Every problem with the file is a one-line `StoreError`.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from feature_store.appendable import check_kind, open_readable, write_root_attrs
from feature_store.errors import StoreError
from feature_store.schema import (
    ATLAS_GROUP_DESCRIPTIONS,
    ATLAS_KIND,
    ATLAS_SPECS,
    CLUSTER_COLUMNS,
    CLUSTER_KINDS,
    EXAMPLE_COLUMNS,
    EXAMPLE_INDEX,
    EXAMPLE_KINDS,
    FEATURE_COLUMNS,
    FEATURE_PERSONA_ARRAYS,
    PERSONA_ARRAYS,
    PERSONA_COLUMNS,
    PERSONA_SPACE_ARRAYS,
    SAE_ARRAYS,
    ArraySpec,
)

CHUNK_BYTES = 64 * 1024
"""Target size of a chunk: small enough that reading one row decompresses little."""

NEAREST_BLOCK_ROWS = 8192
"""Rows of W_dec read at a time by `Atlas.nearest_features`."""

SECTIONS: tuple[str, ...] = ("sae", "features", "examples", "personas", "persona_space", "clusters")
"""What `AtlasWriter.finish` requires (dynamics/ is optional)."""

_SPEC_NAMES = {spec.name: spec for spec in SAE_ARRAYS}
_TEXT = h5py.string_dtype("utf-8")


def _describe(obj: h5py.HLObject, description: str, unit: str = "") -> None:
    obj.attrs["description"] = description
    if unit:
        obj.attrs["unit"] = unit


def _layout(shape: tuple[int, ...], itemsize: int, compress: bool) -> dict[str, Any]:
    """Chunks of whole rows of about CHUNK_BYTES, gzip+shuffle when `compress`."""
    if not shape or 0 in shape:
        return {}
    row_bytes = itemsize * math.prod(shape[1:])
    rows = max(1, min(shape[0], CHUNK_BYTES // max(row_bytes, 1)))
    layout: dict[str, Any] = {"chunks": (rows, *shape[1:])}
    if compress:
        layout |= {"compression": "gzip", "compression_opts": 4, "shuffle": True}
    return layout


def _text_array(path: str, values: Iterable[Any]) -> np.ndarray:
    """Object array of str; None and NaN become ""."""
    items = list(values)
    out = np.empty(len(items), dtype=object)
    for row, value in enumerate(items):
        if isinstance(value, str):
            out[row] = value
        elif value is None or (isinstance(value, float) and math.isnan(value)):
            out[row] = ""
        else:
            raise StoreError(f"{path}: row {row} is {type(value).__name__} {value!r}, not text")
    return out


def _numeric_array(spec: ArraySpec, values: Any) -> np.ndarray:
    array = np.asarray(values)
    if spec.dtype == "float":
        if array.dtype.kind != "f":
            raise StoreError(f"{spec.path}: needs floating-point values, got {array.dtype}")
        return array
    target = np.dtype(spec.dtype)
    allowed = "iub" if target.kind in "iu" else "iubf"
    if array.dtype.kind not in allowed:
        raise StoreError(f"{spec.path}: needs {spec.dtype} values, got {array.dtype}")
    return array.astype(target, copy=False)


def _plain_array(path: str, values: Any) -> np.ndarray:
    """`values` as a numeric array, or text as an object array of str."""
    array = np.asarray(values)
    if array.dtype.kind in "OUS":
        return _text_array(path, array.ravel()).reshape(array.shape)
    if array.dtype.kind not in "biuf":
        raise StoreError(f"{path}: needs numbers or text, got {array.dtype}")
    return array


def _read_all(dataset: h5py.Dataset) -> np.ndarray:
    """The whole dataset; text as an object array of str."""
    return dataset.asstr()[()] if dataset.dtype.kind == "O" else dataset[()]


def _decode(value: Any) -> Any:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _persona_list(names: np.ndarray, index: np.ndarray, score: np.ndarray) -> str:
    """'pirate:0.93;villain:0.71' from one row of top_persona_index / top_persona_score."""
    return ";".join(f"{names[p]}:{s:.2f}" for p, s in zip(index, score, strict=True) if p >= 0)


class AtlasWriter:
    """Writes an atlas into a temporary file; `finish()` checks it and renames it into place.

    Use as a context manager: a clean exit finishes, an exception removes the temporary file.
    Sections can be written in any order; `finish` needs all of SECTIONS (dynamics is optional).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        model: str,
        config: Mapping[str, Any],
        d_model: int,
        d_sae: int,
        attrs: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ) -> None:
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise StoreError(
                f"{self.path}: already exists; pass overwrite=True to replace it (the old atlas "
                "stays until the new one is complete) or write to another path"
            )
        self.dims: dict[str, int] = {"d_model": int(d_model), "d_sae": int(d_sae)}
        self.written: set[str] = set()
        self._open_temporary()
        write_root_attrs(
            self.file,
            kind=ATLAS_KIND,
            model=model,
            config=config,
            attrs={"complete": True, **self.dims, **(attrs or {})},
        )
        self.file.attrs["description"] = (
            "sae-atlas atlas: SAE features of a chat model, their personas, clusters, persona "
            "space and dynamics; every group and dataset has a description attribute"
        )

    @classmethod
    def extend(cls, path: str | Path) -> AtlasWriter:
        """A writer over a copy of the complete atlas at `path`, to add sections it lacks
        (typically dynamics/); `finish()` replaces `path` atomically. Costs one file copy."""
        Atlas.open(path).close()
        writer = cls.__new__(cls)
        writer.path = Path(path)
        writer._open_temporary(copy_of=writer.path)
        writer.dims = {}
        writer.written = set()
        for spec in ATLAS_SPECS:
            if spec.path in writer.file:
                writer.dims.update(zip(spec.shape, writer.file[spec.path].shape, strict=True))
        for section in SECTIONS:
            group = "features/examples" if section == "examples" else section
            if group in writer.file:
                writer.written.add(section)
        writer.file.attrs["modified"] = datetime.now(UTC).isoformat(timespec="seconds")
        return writer

    def _open_temporary(self, copy_of: Path | None = None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent
        )
        os.close(fd)
        self.temporary = Path(name)
        try:
            if copy_of is not None:
                shutil.copyfile(copy_of, self.temporary)
                self.file = h5py.File(self.temporary, "r+")
            else:
                self.file = h5py.File(self.temporary, "w", track_order=True)
        except BaseException:
            self.temporary.unlink(missing_ok=True)
            raise

    def __enter__(self) -> AtlasWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()
        elif self.file.id.valid:
            self.finish()

    # -- checks and low-level writes --------------------------------------------------------

    def _prepare(self, spec: ArraySpec, values: Any, dims: dict[str, int]) -> np.ndarray:
        """`values` converted to the spec's dtype; its axis sizes checked against `dims` and
        bound there on first sight. Raises StoreError on any mismatch."""
        if spec.dtype == "text":
            array = _text_array(spec.path, np.asarray(values, dtype=object).ravel()).reshape(
                np.shape(values)
            )
        else:
            array = _numeric_array(spec, values)
        expected = ", ".join(f"{a}={dims[a]}" if a in dims else a for a in spec.shape)
        if array.ndim != len(spec.shape) or any(
            axis in dims and dims[axis] != size
            for axis, size in zip(spec.shape, array.shape, strict=True)
        ):
            raise StoreError(f"{spec.path}: has shape {array.shape}, expected [{expected}]")
        for axis, size in zip(spec.shape, array.shape, strict=True):
            dims.setdefault(axis, int(size))
        return array

    def _table_items(
        self, specs: Sequence[ArraySpec], table: pd.DataFrame, what: str
    ) -> list[tuple[ArraySpec, Any]]:
        """(spec, column) pairs of a DataFrame whose columns must be exactly those of `specs`."""
        if not isinstance(table, pd.DataFrame):
            raise StoreError(f"{what}: needs a pandas DataFrame, got {type(table).__name__}")
        names = [spec.name for spec in specs]
        missing = [n for n in names if n not in table.columns]
        extra = [str(c) for c in table.columns if c not in names]
        if missing or extra:
            raise StoreError(
                f"{what}: columns must be {names}; missing {missing}, unexpected {extra}"
            )
        axis = specs[0].shape[0]
        if axis in self.dims and len(table) != self.dims[axis]:
            raise StoreError(f"{what}: has {len(table)} rows, expected {axis}={self.dims[axis]}")
        return [
            (spec, table[spec.name].to_numpy(dtype=object if spec.dtype == "text" else None))
            for spec in specs
        ]

    def _write_section(
        self,
        section: str,
        groups: Sequence[str],
        items: Sequence[tuple[ArraySpec, Any]],
        attrs: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        """Check every array of a section, then write them all (a failed check writes nothing).
        `attrs` maps a dataset or group path to extra attributes."""
        self._start(section)
        dims = dict(self.dims)
        arrays = [(spec, self._prepare(spec, values, dims)) for spec, values in items]
        self.dims = dims
        for name in groups:
            self._group(name)
        for spec, array in arrays:
            self._dataset(
                spec.path, array, spec.description, spec.unit, compress=spec.dtype != "float"
            )
        for path, extra in (attrs or {}).items():
            self.file[path].attrs.update(extra)
        self.written.add(section)

    def _start(self, section: str | None) -> None:
        """Raise StoreError unless the writer is open and `section` is not written yet."""
        if not self.file.id.valid:
            raise StoreError(f"{self.path}: the writer is finished or aborted; start a new one")
        if section in self.written:
            raise StoreError(f"{self.path}: {section}/ is already written; write it once")

    def _group(self, name: str) -> h5py.Group:
        group = (
            self.file[name] if name in self.file else self.file.create_group(name, track_order=True)
        )
        _describe(group, ATLAS_GROUP_DESCRIPTIONS[name])
        return group

    def _dataset(
        self, path: str, data: np.ndarray, description: str, unit: str = "", compress: bool = True
    ) -> h5py.Dataset:
        if data.dtype == object:
            dataset = self.file.create_dataset(
                path, data=data, dtype=_TEXT, **_layout(data.shape, 16, False)
            )
        else:
            dataset = self.file.create_dataset(
                path, data=data, **_layout(data.shape, data.dtype.itemsize, compress)
            )
        _describe(dataset, description, unit)
        return dataset

    # -- sections ---------------------------------------------------------------------------

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
        kind = _numeric_array(EXAMPLE_COLUMNS[1], kind)
        if len(kind) and kind.max() >= len(EXAMPLE_KINDS):
            raise StoreError(f"examples table: kind codes must index {EXAMPLE_KINDS}")
        feature = _numeric_array(EXAMPLE_COLUMNS[0], table["feature"].to_numpy())
        rank = _numeric_array(EXAMPLE_COLUMNS[2], table["rank"].to_numpy())
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
        if not description:
            raise StoreError(f"dynamics/{name}: needs a description")
        path = f"dynamics/{name}"
        if isinstance(data, pd.DataFrame):
            descriptions = dict(column_descriptions or {})
            undescribed = [str(c) for c in data.columns if c not in descriptions]
            if undescribed:
                raise StoreError(f"{path}: columns {undescribed} need a description each")
            columns = {str(c): _plain_array(f"{path}/{c}", data[c].to_numpy()) for c in data}
        else:
            array = _plain_array(path, data)
        group = self._group("dynamics")
        if name in group:
            del group[name]
        if isinstance(data, pd.DataFrame):
            _describe(self.file.create_group(path, track_order=True), description, unit)
            for column, values in columns.items():
                units = column_units or {}
                self._dataset(
                    f"{path}/{column}", values, descriptions[column], units.get(column, "")
                )
        else:
            self._dataset(path, array, description, unit)

    # -- finishing --------------------------------------------------------------------------

    def _check_references(self) -> None:
        file = self.file
        cluster = file["features/cluster"][()]
        ids = file["clusters/id"][()]
        bad = np.setdiff1d(cluster[cluster != -1], ids)
        if len(bad):
            raise StoreError(
                f"features/cluster: ids {bad[:5].tolist()} are not in clusters/id; "
                "every cluster must have a row in the clusters table (-1 for noise)"
            )
        top = file["features/top_persona_index"][()]
        n_personas = self.dims["n_personas"]
        if top.size and (top.min() < -1 or top.max() >= n_personas):
            raise StoreError(
                f"features/top_persona_index: values must be in [-1, {n_personas}) "
                f"(rows of personas/); found [{top.min()}, {top.max()}]"
            )

    def finish(self) -> Path:
        """Check that every section is there and consistent, then rename into place."""
        try:
            missing = [section for section in SECTIONS if section not in self.written]
            if missing:
                calls = ", ".join(f"write_{section}" for section in missing)
                raise StoreError(f"{self.path}: atlas incomplete; call {calls} before finish")
            self._check_references()
            self.file.close()
            with open(self.temporary, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(self.temporary, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Drop everything written: close and delete the temporary file."""
        if self.file.id.valid:
            self.file.close()
        self.temporary.unlink(missing_ok=True)


@dataclass
class FeatureCard:
    """Everything about one feature: its row, top personas, examples and decoder direction."""

    index: int
    row: dict[str, Any]
    top_personas: pd.DataFrame
    examples: pd.DataFrame
    decoder: np.ndarray

    @property
    def label(self) -> str:
        return str(self.row["label"])


@dataclass
class PersonaCard:
    """One persona: its features ranked by score, nearest personas, place in persona space."""

    name: str
    category: str
    prompts: list[str]
    features: pd.DataFrame
    nearest: pd.DataFrame
    coords: np.ndarray
    axis_projection: float
    profile: np.ndarray


class Atlas:
    """Read-only queries on an atlas file. Open with `Atlas.open(path)`; close when done."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.file = open_readable(self.path)
        try:
            check_kind(self.file, ATLAS_KIND)
            self.attrs: dict[str, Any] = {
                key: value.item() if isinstance(value, np.generic) else value
                for key, value in self.file.attrs.items()
            }
            self.d_model = int(self.attrs["d_model"])
            self.d_sae = int(self.attrs["d_sae"])
        except (StoreError, KeyError) as error:
            self.file.close()
            if isinstance(error, StoreError):
                raise
            raise StoreError(
                f"{self.path}: lacks root attribute {error}; the atlas is damaged: rebuild it"
            ) from None
        self._datasets: dict[str, h5py.Dataset] = {}
        self._columns: dict[str, np.ndarray] = {}
        self._features_frame: pd.DataFrame | None = None
        self._persona_rows: dict[str, int] | None = None
        self._persona_features: tuple[np.ndarray, np.ndarray] | None = None
        self._unit_vectors: np.ndarray | None = None

    @classmethod
    def open(cls, path: str | Path) -> Atlas:
        """Open read-only; reads only the root attributes (datasets load on first use)."""
        return cls(path)

    def close(self) -> None:
        self._datasets.clear()
        if self.file.id.valid:
            self.file.close()

    def __enter__(self) -> Atlas:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Atlas({str(self.path)!r}, model={self.attrs.get('model')!r}, d_sae={self.d_sae})"

    # -- raw access with caching ------------------------------------------------------------

    def _dataset(self, path: str) -> h5py.Dataset:
        dataset = self._datasets.get(path)
        if dataset is None:
            if not self.file.id.valid:
                raise StoreError(f"{self.path}: the atlas is closed; open it again")
            try:
                dataset = self.file[path]
            except KeyError:
                raise StoreError(
                    f"{self.path}: has no {path}; the atlas is incomplete or damaged: rebuild it"
                ) from None
            self._datasets[path] = dataset
        return dataset

    def _column(self, path: str) -> np.ndarray:
        """The whole dataset at `path`, read once; text as an object array of str."""
        values = self._columns.get(path)
        if values is None:
            values = _read_all(self._dataset(path))
            self._columns[path] = values
        return values

    def _value(self, spec: ArraySpec, row: int) -> Any:
        if spec.path in self._columns or spec.dtype != "text":
            value = self._column(spec.path)[row]
        else:
            value = _decode(self._dataset(spec.path)[row])
        return value.item() if isinstance(value, np.generic) else value

    def _table(self, specs: Sequence[ArraySpec]) -> dict[str, np.ndarray]:
        return {spec.name: self._column(spec.path) for spec in specs}

    def _check_feature(self, index: Any) -> int:
        if isinstance(index, bool) or not isinstance(index, int | np.integer):
            raise StoreError(f"feature index must be an integer, got {index!r}")
        if not 0 <= index < self.d_sae:
            raise StoreError(
                f"{self.path}: no feature {index}; the atlas has {self.d_sae} features "
                f"(0-{self.d_sae - 1})"
            )
        return int(index)

    # -- personas ---------------------------------------------------------------------------

    def _persona_names(self) -> np.ndarray:
        return self._column("personas/name")

    def _persona_row(self, name: str) -> int:
        if self._persona_rows is None:
            self._persona_rows = {n: i for i, n in enumerate(self._persona_names())}
        row = self._persona_rows.get(name)
        if row is None:
            close = difflib.get_close_matches(name, list(self._persona_rows), n=5, cutoff=0.5)
            hint = f"close names: {', '.join(close)}" if close else "see Atlas.personas()"
            raise StoreError(f"{self.path}: no persona {name!r}; {hint}")
        return row

    def _features_of_persona(self, row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(feature, rank, score) of every feature with persona `row` among its top personas."""
        if self._persona_features is None:
            flat = self._column("features/top_persona_index").ravel()
            order = np.argsort(flat, kind="stable")
            bounds = np.searchsorted(flat[order], np.arange(len(self._persona_names()) + 1))
            self._persona_features = (order, bounds)
        order, bounds = self._persona_features
        positions = order[bounds[row] : bounds[row + 1]]
        top_k = self._dataset("features/top_persona_index").shape[1]
        score = self._column("features/top_persona_score").ravel()[positions]
        return positions // top_k, positions % top_k, score

    def personas(self) -> pd.DataFrame:
        """One row per persona: name, category, prompts (list), axis_projection, n_features
        (features with the persona among their top personas), coords [n_components]."""
        table = self._table(PERSONA_COLUMNS)
        frame = pd.DataFrame(table)
        frame["prompts"] = [json.loads(p) for p in frame["prompts"]]
        flat = self._column("features/top_persona_index").ravel()
        frame["n_features"] = np.bincount(flat[flat >= 0], minlength=len(frame))
        frame["coords"] = list(self._column("personas/coords"))
        return frame

    def persona(self, name: str, nearest: int = 10) -> PersonaCard:
        """A persona's card: its features ranked by score (best first), the `nearest` personas
        by cosine of persona vectors, coordinates, assistant-axis projection, SAE profile."""
        row = self._persona_row(name)
        feature, rank, score = self._features_of_persona(row)
        order = np.argsort(-np.nan_to_num(score, nan=-np.inf), kind="stable")
        feature, rank, score = feature[order], rank[order], score[order]
        features = pd.DataFrame(
            {
                "feature": feature,
                "score": score,
                "rank": rank,
                "label": self._column("features/label")[feature],
                "tags": self._column("features/tags")[feature],
                "density": self._column("features/density")[feature],
                "heldout_auroc": self._column("features/heldout_auroc")[feature],
            }
        )
        if self._unit_vectors is None:
            vectors = self._column("personas/vector").astype(np.float64)
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            self._unit_vectors = vectors / np.where(norms > 0, norms, 1.0)
        cosine = self._unit_vectors @ self._unit_vectors[row]
        others = np.argsort(-cosine, kind="stable")
        others = others[others != row][:nearest]
        names = self._persona_names()
        return PersonaCard(
            name=name,
            category=str(self._column("personas/category")[row]),
            prompts=json.loads(self._column("personas/prompts")[row]),
            features=features,
            nearest=pd.DataFrame({"persona": names[others], "cosine": cosine[others]}),
            coords=self._column("personas/coords")[row],
            axis_projection=float(self._column("personas/axis_projection")[row]),
            profile=self._dataset("personas/profile")[row],
        )

    def persona_vectors(self) -> np.ndarray:
        """Persona vectors [n_personas, d_model] (float32), rows in the order of `personas()`:
        each persona's mean residual over response tokens."""
        return self._column("personas/vector").copy()

    def persona_space(self) -> dict[str, np.ndarray]:
        """assistant_axis [d_model], center [d_model], components [n_components, d_model],
        explained_variance [n_components]."""
        return {spec.name: self._column(spec.path) for spec in PERSONA_SPACE_ARRAYS}

    # -- features ---------------------------------------------------------------------------

    def _features(self) -> pd.DataFrame:
        if self._features_frame is None:
            frame = pd.DataFrame(self._table(FEATURE_COLUMNS))
            names = self._persona_names()
            index = self._column("features/top_persona_index")
            score = self._column("features/top_persona_score")
            frame.insert(
                frame.columns.get_loc("heldout_auroc"),
                "top_personas",
                [_persona_list(names, i, s) for i, s in zip(index, score, strict=True)],
            )
            frame["n_examples"] = self._column("features/example_count")
            frame.index.name = "feature"
            self._features_frame = frame
        return self._features_frame

    def features(
        self,
        tag: str | None = None,
        cluster: int | Sequence[int] | None = None,
        persona: str | None = None,
    ) -> pd.DataFrame:
        """One row per feature (index: feature id), optionally only those with `tag` (a tag, or
        a tag family: "persona" matches every persona:<name>), in `cluster` (an id or ids), or
        with `persona` among their top personas. Top personas read 'pirate:0.93;villain:0.71'."""
        frame = self._features()
        mask = np.ones(len(frame), dtype=bool)
        if tag is not None:
            pattern = ";" + re.escape(tag) + "[;:]"
            mask &= (";" + frame["tags"] + ";").str.contains(pattern, regex=True).to_numpy()
        if cluster is not None:
            ids = [cluster] if isinstance(cluster, int | np.integer) else list(cluster)
            mask &= frame["cluster"].isin(ids).to_numpy()
        if persona is not None:
            selected = np.zeros(len(frame), dtype=bool)
            selected[self._features_of_persona(self._persona_row(persona))[0]] = True
            mask &= selected
        return frame[mask].copy()

    def puppeteer(self) -> pd.DataFrame:
        """Features tagged `puppeteer`: the slant post-training leaves on every persona."""
        return self.features(tag="puppeteer")

    def feature(self, index: int | np.integer) -> FeatureCard:
        """The whole card of feature `index`: its row, top personas, examples, decoder row."""
        i = self._check_feature(index)
        row: dict[str, Any] = {"feature": i}
        for spec in FEATURE_COLUMNS:
            row[spec.name] = self._value(spec, i)
        names = self._persona_names()
        top_index = self._column("features/top_persona_index")[i]
        top_score = self._column("features/top_persona_score")[i]
        keep = top_index >= 0
        row["top_personas"] = _persona_list(names, top_index, top_score)
        start = int(self._column("features/example_start")[i])
        count = int(self._column("features/example_count")[i])
        examples: dict[str, Any] = {}
        for spec in EXAMPLE_COLUMNS[1:]:
            dataset = self._dataset(spec.path)
            if spec.dtype == "text":
                examples[spec.name] = dataset.asstr()[start : start + count]
            else:
                examples[spec.name] = dataset[start : start + count]
        examples["kind"] = np.asarray(EXAMPLE_KINDS, dtype=object)[examples["kind"]]
        return FeatureCard(
            index=i,
            row=row,
            top_personas=pd.DataFrame(
                {"persona": names[top_index[keep]], "score": top_score[keep]}
            ),
            examples=pd.DataFrame(examples),
            decoder=self._dataset("sae/W_dec")[i],
        )

    def nearest_features(self, index: int | np.integer, k: int = 10) -> pd.DataFrame:
        """The `k` features whose decoder directions have the largest cosine with feature
        `index`'s (itself excluded): feature, cosine, label, tags. Reads W_dec once, in blocks
        of NEAREST_BLOCK_ROWS rows (memory: one block)."""
        i = self._check_feature(index)
        decoder = self._dataset("sae/W_dec")
        target = decoder[i].astype(np.float64)
        target /= max(float(np.linalg.norm(target)), 1e-30)
        best_ids = np.empty(0, dtype=np.int64)
        best_cos = np.empty(0, dtype=np.float64)
        for start in range(0, self.d_sae, NEAREST_BLOCK_ROWS):
            block = decoder[start : start + NEAREST_BLOCK_ROWS].astype(np.float32)
            norms = np.linalg.norm(block, axis=1)
            cosine = (block @ target.astype(np.float32)) / np.where(norms > 0, norms, np.inf)
            ids = np.arange(start, start + len(block))
            if start <= i < start + len(block):
                cosine[i - start] = -np.inf
            best_ids = np.concatenate([best_ids, ids])
            best_cos = np.concatenate([best_cos, cosine])
            if len(best_ids) > k:
                keep = np.argpartition(-best_cos, k)[:k]
                best_ids, best_cos = best_ids[keep], best_cos[keep]
        order = np.argsort(-best_cos, kind="stable")
        ids = best_ids[order][: min(k, self.d_sae - 1)]
        return pd.DataFrame(
            {
                "feature": ids,
                "cosine": best_cos[order][: len(ids)],
                "label": self._column("features/label")[ids],
                "tags": self._column("features/tags")[ids],
            }
        )

    def search(self, text: str) -> pd.DataFrame:
        """Features whose label, top tokens or logit tokens contain `text` (case-insensitive)."""
        frame = self._features()
        mask = np.zeros(len(frame), dtype=bool)
        for column in ("label", "top_tokens", "pos_logits", "neg_logits"):
            mask |= frame[column].str.contains(text, case=False, regex=False).to_numpy()
        return frame[mask].copy()

    # -- clusters, dynamics, summary --------------------------------------------------------

    def clusters(self) -> pd.DataFrame:
        """One row per cluster: id, kind, size, label, dominant_personas, stability."""
        return pd.DataFrame(self._table(CLUSTER_COLUMNS))

    def dynamics_names(self) -> list[str]:
        """Names of the entries in dynamics/ (empty when the atlas has none)."""
        group = self.file.get("dynamics")
        return list(group) if isinstance(group, h5py.Group) else []

    def dynamics(self, name: str) -> np.ndarray | pd.DataFrame:
        """dynamics/<name>: an array, or a DataFrame when it was written as a table."""
        if name not in self.dynamics_names():
            available = ", ".join(self.dynamics_names()) or "none"
            raise StoreError(f"{self.path}: no dynamics/{name}; it has: {available}")
        entry = self.file[f"dynamics/{name}"]
        if isinstance(entry, h5py.Dataset):
            return _read_all(entry)
        return pd.DataFrame({column: _read_all(data) for column, data in entry.items()})

    def info(self) -> dict[str, Any]:
        """Summary: model, created, versions, sizes, features per tag family and per cluster
        kind, clusters per kind, dynamics entries, file size."""
        tags = self._column("features/tags")
        families: dict[str, int] = {}
        for tag_list in tags:
            for family in {t.split(":", 1)[0] for t in tag_list.split(";") if t}:
                families[family] = families.get(family, 0) + 1
        clusters = self.clusters()
        kind_of = dict(zip(clusters["id"], clusters["kind"], strict=True))
        feature_kinds = pd.Series(self._column("features/cluster")).map(kind_of).fillna("noise")
        return {
            "path": str(self.path),
            "model": self.attrs.get("model"),
            "created": self.attrs.get("created"),
            "schema_version": self.attrs.get("schema_version"),
            "sae_atlas_version": self.attrs.get("sae_atlas_version"),
            "d_model": self.d_model,
            "d_sae": self.d_sae,
            "n_personas": len(self._persona_names()),
            "n_components": int(self._dataset("persona_space/components").shape[0]),
            "n_clusters": len(clusters),
            "n_examples": int(self._dataset("features/examples/feature").shape[0]),
            "n_tagged": int(sum(1 for t in tags if t)),
            "features_per_tag": dict(sorted(families.items())),
            "clusters_per_kind": clusters["kind"].value_counts().sort_index().to_dict(),
            "features_per_cluster_kind": feature_kinds.value_counts().sort_index().to_dict(),
            "dynamics": self.dynamics_names(),
            "file_mb": round(self.path.stat().st_size / 2**20, 2),
        }
