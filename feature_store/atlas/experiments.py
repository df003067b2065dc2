"""Experiments in an atlas (experiments/<name>/, feature_store.schema.experiments): what is
written and what is read back.

`ExperimentRecord` is one experiment to write: its tables (DataFrames or arrays), their
descriptions and their columns' (and units), the JSON-ready summary and the provenance;
`check()` refuses anything undescribed or misnamed before a byte is written. `record_experiment`
writes one into an atlas file atomically (a copy of the atlas, renamed into place: the target
holds the old atlas or the new one, never a mix) and leaves every other group as it was.

`Experiment` is the read side, lazy: opening one reads its attributes only; `summary` parses the
JSON on first use; `tables` is a mapping that reads a table when it is looked up (each table once).
`legacy_experiment` shows the prefixed dynamics/ entries of older atlases (dynamics/selection_*,
dynamics/long_*) as the same object. Cost: one dataset read per column looked up.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import h5py
import numpy as np
import pandas as pd

from feature_store.appendable import _version
from feature_store.atlas.arrays import read_all
from feature_store.errors import StoreError
from feature_store.schema import EXPERIMENT_SUMMARY, EXPERIMENTS
from feature_store.schema.experiments import TABLE_NAME

if TYPE_CHECKING:
    from feature_store.atlas.queries import Atlas

Table: TypeAlias = pd.DataFrame | np.ndarray


@dataclass(frozen=True)
class ExperimentRecord:
    """One experiment to write as experiments/<name>/.

    name: one of feature_store.schema.EXPERIMENTS; tables: table name -> DataFrame (a group of
    columns) or array; descriptions: table name -> description (every table needs one);
    columns: column name -> description (every column of every DataFrame needs one, extra keys
    are ignored); units: column or table name -> unit (optional); summary: JSON-ready headline
    numbers; script, config, seconds: the provenance (`written` and the version are added)."""

    name: str
    tables: Mapping[str, Table]
    summary: Mapping[str, Any]
    descriptions: Mapping[str, str]
    columns: Mapping[str, str]
    script: str
    config: Mapping[str, Any]
    seconds: float
    units: Mapping[str, str] = field(default_factory=dict)

    def check(self) -> None:
        """Raise StoreError (one line) on an undeclared name, a bad or undescribed table, or an
        undescribed column."""
        if self.name not in EXPERIMENTS:
            raise StoreError(
                f"experiments/{self.name}: not a declared experiment; declare it in "
                f"feature_store/schema/experiments.py (known: {', '.join(EXPERIMENTS)})"
            )
        for table, data in self.tables.items():
            where = f"experiments/{self.name}/{table}"
            if table == EXPERIMENT_SUMMARY or not TABLE_NAME.match(table):
                raise StoreError(f"{where}: a table name must be [A-Za-z0-9_.-]+ and not summary")
            if not self.descriptions.get(table):
                raise StoreError(f"{where}: needs a description")
            if isinstance(data, pd.DataFrame):
                missing = [str(c) for c in data.columns if not self.columns.get(str(c))]
                if missing:
                    raise StoreError(f"{where}: columns {missing} need a description each")
                nul = [str(c) for c in data.columns if _holds_nul(data[c])]
                if nul:
                    raise StoreError(
                        f"{where}: text of columns {nul} holds NUL, which HDF5 text cannot; "
                        "escape it first (sae_atlas.stages.dynamics.tables.storable_text)"
                    )

    def summary_json(self) -> str:
        """The summary as JSON (StoreError when it is not JSON-ready)."""
        try:
            return json.dumps(self.summary, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise StoreError(
                f"experiments/{self.name}: summary is not JSON-ready ({error}); convert numpy "
                "values and NaN first (sae_atlas.stages.base.json_ready)"
            ) from None

    def provenance(self) -> dict[str, Any]:
        """The group's attributes: description, script, config (JSON), seconds, written, version."""
        return {
            "description": EXPERIMENTS[self.name],
            "script": self.script,
            "config": json.dumps(dict(self.config), sort_keys=True, default=str),
            "seconds": float(self.seconds),
            "written": datetime.now(UTC).isoformat(timespec="seconds"),
            "sae_atlas_version": _version(),
        }


def _holds_nul(column: pd.Series) -> bool:
    if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        return False
    return any(isinstance(v, str) and "\x00" in v for v in column)


def record_experiment(atlas: str | Path, experiment: ExperimentRecord) -> Path:
    """Write `experiment` into the complete atlas at `atlas`, replacing that experiment only;
    atomic (AtlasWriter.extend: one file copy, renamed into place). Returns the atlas path."""
    from feature_store.atlas.writer import AtlasWriter

    experiment.check()
    with AtlasWriter.extend(atlas) as writer:
        writer.write_experiment(experiment)
    return Path(atlas)


class LazyTables(Mapping[str, Table]):
    """Table name -> DataFrame or array, each read from the file when first looked up."""

    def __init__(self, entries: Mapping[str, h5py.Group | h5py.Dataset]) -> None:
        self._entries = dict(entries)
        self._read: dict[str, Table] = {}

    def __getitem__(self, name: str) -> Table:
        if name not in self._read:
            if name not in self._entries:
                known = ", ".join(self._entries) or "none"
                raise KeyError(f"no table {name!r}; it has: {known}")
            self._read[name] = read_entry(self._entries[name])
        return self._read[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def read_entry(entry: h5py.Group | h5py.Dataset) -> Table:
    """A table group as a DataFrame (one column per dataset, in written order), else an array."""
    if isinstance(entry, h5py.Dataset):
        return read_all(entry)
    return pd.DataFrame({column: read_all(data) for column, data in entry.items()})


@dataclass
class Experiment:
    """One experiment of an atlas, read lazily: name, description, provenance (script, config,
    seconds, written, sae_atlas_version; `source` says where it was read from), `tables` (read
    when looked up) and `summary` (parsed on first use)."""

    name: str
    description: str
    provenance: dict[str, Any]
    tables: LazyTables
    summary_text: str | h5py.Dataset | None

    @cached_property
    def summary(self) -> dict[str, Any]:
        """The JSON summary ({} when there is none)."""
        text = self.summary_text
        if isinstance(text, h5py.Dataset):
            text = str(read_all(text))
        if not text:
            return {}
        parsed = json.loads(text)
        return parsed if isinstance(parsed, dict) else {"value": parsed}

    def table(self, name: str) -> Table:
        """One table (StoreError naming the tables it has when `name` is not one)."""
        try:
            return self.tables[name]
        except KeyError:
            known = ", ".join(self.tables) or "none"
            raise StoreError(
                f"experiment {self.name}: no table {name!r}; it has: {known}"
            ) from None

    def __repr__(self) -> str:
        return f"Experiment({self.name!r}, tables={list(self.tables)})"


def stored_experiment(atlas: Atlas, group: h5py.Group, name: str) -> Experiment:
    """The experiment stored in `group` (experiments/<name>)."""
    attrs = {k: v.item() if isinstance(v, np.generic) else v for k, v in group.attrs.items()}
    provenance = {k: v for k, v in attrs.items() if k != "description"}
    if isinstance(provenance.get("config"), str):
        provenance["config"] = json.loads(provenance["config"])
    provenance["source"] = f"{atlas.path}:{group.name}"
    entries = {k: v for k, v in group.items() if k != EXPERIMENT_SUMMARY}
    summary = group.get(EXPERIMENT_SUMMARY)
    return Experiment(
        name=name,
        description=str(attrs.get("description", EXPERIMENTS.get(name, ""))),
        provenance=provenance,
        tables=LazyTables(entries),
        summary_text=summary if isinstance(summary, h5py.Dataset) else None,
    )


def legacy_experiment(dynamics: h5py.Group, name: str, prefix: str) -> Experiment | None:
    """Experiment `name` from an older atlas's dynamics/<prefix>* entries (None without them):
    its tables under their names less the prefix, dynamics/<prefix>summary as its summary."""
    entries = {k[len(prefix) :]: v for k, v in dynamics.items() if k.startswith(prefix)}
    if not entries:
        return None
    summary = entries.pop(EXPERIMENT_SUMMARY, None)
    text = summary if isinstance(summary, h5py.Dataset) else None
    return Experiment(
        name=name,
        description=EXPERIMENTS[name],
        provenance={"source": f"{dynamics.file.filename}:/dynamics/{prefix}* (older atlas)"},
        tables=LazyTables(entries),
        summary_text=text,
    )
