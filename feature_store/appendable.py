"""Crash-safe append-only HDF5 files of row tables, shared by the transcript and activation stores.

A file is written in SWMR mode (HDF5's single-writer / multiple-reader), which orders metadata
flushes so the file on disk is always a valid HDF5 file, even after `kill -9`. Rows are appended
in commits: the data of a commit is written and flushed first, then `/progress` (committed rows
per table) is updated and flushed. Readers read `/progress` and never look past it, so they never
see a partial commit. Root attribute `complete` is false until `finish()`.

A crash leaves the file flagged as open for writing, which HDF5 refuses to reopen for writing.
`resume()` therefore copies the committed prefix into a fresh file (read through SWMR) and
atomically renames it over the old one; it costs one read and write of the file, once per resume.

`store_state` is the skip-or-resume rule of the stages that write such files: a file at the path
is missing, incomplete (resume it) or complete (skip the stage) for a model and config, and one
written by another model or config is refused, never overwritten.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np

from feature_store.errors import StoreError
from feature_store.schema import (
    GROUP_DESCRIPTIONS,
    PROGRESS_DESCRIPTION,
    ROLES,
    SCHEMA_VERSION,
    Column,
)

COPY_ROWS = 65536


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("sae-atlas")
    except Exception:
        return "0+unknown"


def write_root_attrs(
    file: h5py.File, *, kind: str, model: str, config: Mapping[str, Any], attrs: Mapping[str, Any]
) -> None:
    """The root attributes every sae-atlas file has (schema.ROOT_ATTRS), plus `attrs`."""
    file.attrs["schema"] = kind
    file.attrs["schema_version"] = SCHEMA_VERSION
    file.attrs["created"] = datetime.now(UTC).isoformat(timespec="seconds")
    file.attrs["sae_atlas_version"] = _version()
    file.attrs["model"] = model
    file.attrs["config"] = json.dumps(dict(config), sort_keys=True)
    for key, value in attrs.items():
        file.attrs[key] = value


def open_readable(path: str | Path) -> h5py.File:
    """Open a store for reading, whether it is complete, being written, or left by a crash."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: no such file")
    try:
        return h5py.File(path, "r")
    except OSError as error:
        if "already open for write" not in str(error):
            raise StoreError(
                f"{path}: not a readable HDF5 file ({error}); it may be truncated or "
                "damaged: delete it and rerun the stage that writes it"
            ) from None
    # flagged as open for writing: being written now, or left by a crash (SWMR keeps it valid)
    return h5py.File(path, "r", swmr=True, libver="latest")


def check_kind(file: h5py.File, kind: str) -> None:
    """Raise StoreError unless `file` is a sae-atlas file of `kind` and of this schema version."""
    found = file.attrs.get("schema")
    if found != kind:
        raise StoreError(
            f"{file.filename}: is not a {kind} file (schema attribute: {found!r}); "
            "point to the right file"
        )
    version = int(file.attrs.get("schema_version", -1))
    if version != SCHEMA_VERSION:
        raise StoreError(
            f"{file.filename}: schema version {version}, this sae-atlas reads version "
            f"{SCHEMA_VERSION}; rebuild the file with this version or use a matching sae-atlas"
        )


def stored_config(path: str | Path, kind: str) -> dict[str, Any] | None:
    """The configuration a sae-atlas file of `kind` records (root `config`); None when there is
    no file at `path`. StoreError when it is another kind of file."""
    if not Path(path).exists():
        return None
    with open_readable(path) as file:
        check_kind(file, kind)
        return dict(json.loads(file.attrs.get("config", "{}")))


StoreState = Literal["missing", "incomplete", "complete"]


def store_state(path: str | Path, kind: str, model: str, config: Mapping[str, Any]) -> StoreState:
    """Whether a store at `path` exists and is complete, for `model` and `config`.

    Raises StoreError when a file is there but was written by another model, config, kind or
    schema version: such a file is never overwritten.
    """
    path = Path(path)
    if not path.exists():
        return "missing"
    with open_readable(path) as file:
        check_kind(file, kind)
        if file.attrs["model"] != model:
            raise StoreError(
                f"{path}: was written from model {file.attrs['model']!r}, not {model!r}; "
                "write to another --out or delete the file"
            )
        if json.loads(file.attrs["config"]) != json.loads(json.dumps(dict(config))):
            raise StoreError(
                f"{path}: was written with another configuration; write to another --out or "
                "delete the file"
            )
        return "complete" if bool(file.attrs["complete"]) else "incomplete"


def committed_rows(file: h5py.File) -> dict[str, int]:
    """Committed row count per table, from `/progress`."""
    progress = file["progress"]
    tables = json.loads(progress.attrs["tables"])
    counts = progress[()]
    return {table: int(counts[i]) for i, table in enumerate(tables)}


def summary(path: str | Path) -> dict[str, Any]:
    """Root attributes, committed rows and every dataset (shape, dtype, description) of a file."""
    with open_readable(path) as file:
        datasets: dict[str, dict[str, Any]] = {}

        def visit(name: str, obj: h5py.HLObject) -> None:
            if isinstance(obj, h5py.Dataset):
                datasets[name] = {
                    "shape": list(obj.shape),
                    "dtype": str(obj.dtype),
                    "description": str(obj.attrs.get("description", "")),
                }

        file.visititems(visit)
        attrs = {k: v.item() if isinstance(v, np.generic) else v for k, v in file.attrs.items()}
        rows = committed_rows(file) if "progress" in file else {}
    return {"path": str(path), "attrs": attrs, "rows": rows, "datasets": datasets}


class AppendFile:
    """A file of row tables that grow by whole commits. Create with `create` or `resume`."""

    def __init__(self, path: Path, file: h5py.File, columns: Sequence[Column]) -> None:
        self.path = path
        self.file = file
        self.columns = tuple(columns)
        self.tables = sorted({c.table for c in self.columns})
        self.rows = committed_rows(file)

    @classmethod
    def create(
        cls,
        path: str | Path,
        *,
        kind: str,
        model: str,
        config: Mapping[str, Any],
        columns: Sequence[Column],
        attrs: Mapping[str, Any] | None = None,
    ) -> AppendFile:
        """Create a new, empty, incomplete file (fails if `path` exists)."""
        path = Path(path)
        if path.exists():
            raise StoreError(f"{path}: already exists; it is never overwritten")
        path.parent.mkdir(parents=True, exist_ok=True)
        file = h5py.File(path, "w-", libver="latest")
        write_root_attrs(
            file,
            kind=kind,
            model=model,
            config=config,
            attrs={"complete": False, "roles": json.dumps(list(ROLES)), **(attrs or {})},
        )
        for group, text in GROUP_DESCRIPTIONS.items():
            if any(c.path.startswith(group + "/") for c in columns):
                file.require_group(group).attrs["description"] = text
        for column in columns:
            shape: tuple[int, ...] = (0, column.width) if column.width else (0,)
            maxshape: tuple[int | None, ...] = (None, column.width) if column.width else (None,)
            dataset = file.create_dataset(
                column.path,
                shape=shape,
                maxshape=maxshape,
                chunks=column.chunk,
                dtype=column.numpy_dtype(),
            )
            dataset.attrs["description"] = column.description
            if column.unit:
                dataset.attrs["unit"] = column.unit
        tables = sorted({c.table for c in columns})
        progress = file.create_dataset("progress", data=np.zeros(len(tables), dtype=np.int64))
        progress.attrs["tables"] = json.dumps(tables)
        progress.attrs["description"] = PROGRESS_DESCRIPTION
        file.swmr_mode = True
        return cls(path, file, columns)

    @classmethod
    def resume(cls, path: str | Path, columns: Sequence[Column]) -> AppendFile:
        """Reopen an incomplete file for appending after its last complete commit."""
        path = Path(path)
        tmp = path.with_name(path.name + ".recover")
        tmp.unlink(missing_ok=True)
        with open_readable(path) as old, h5py.File(tmp, "w-", libver="latest") as new:
            rows = committed_rows(old)
            _copy_attrs(old, new)
            for name, group in old.items():
                if isinstance(group, h5py.Group):
                    _copy_attrs(group, new.require_group(name))
            for column in columns:
                source = old[column.path]
                n = rows[column.table]
                target = new.create_dataset(
                    column.path,
                    shape=(n, *source.shape[1:]),
                    maxshape=source.maxshape,
                    chunks=source.chunks,
                    dtype=source.dtype,
                )
                _copy_attrs(source, target)
                for start in range(0, n, COPY_ROWS):
                    stop = min(n, start + COPY_ROWS)
                    target[start:stop] = source[start:stop]
            progress = new.create_dataset("progress", data=old["progress"][()])
            _copy_attrs(old["progress"], progress)
        os.replace(tmp, path)
        file = h5py.File(path, "r+", libver="latest")
        file.swmr_mode = True
        return cls(path, file, columns)

    def commit(self, rows: Mapping[str, np.ndarray]) -> None:
        """Append one commit: `rows` maps column path -> array with one row per new table row.

        Every column of a table written to must be given, with the same number of rows.
        """
        by_table: dict[str, int] = {}
        for column in self.columns:
            if column.path not in rows:
                continue
            n = len(rows[column.path])
            if by_table.setdefault(column.table, n) != n:
                raise ValueError(
                    f"commit: column {column.path} has {n} rows, others in "
                    f"table {column.table} have {by_table[column.table]}"
                )
        for column in self.columns:
            if column.table in by_table and column.path not in rows:
                raise ValueError(f"commit: column {column.path} is missing")
        for column in self.columns:
            if column.table not in by_table:
                continue
            dataset = self.file[column.path]
            start = self.rows[column.table]
            stop = start + by_table[column.table]
            dataset.resize(stop, axis=0)
            dataset[start:stop] = rows[column.path]
            dataset.flush()
        for table, n in by_table.items():
            self.rows[table] += n
        progress = self.file["progress"]
        progress[...] = np.array([self.rows[t] for t in self.tables], dtype=np.int64)
        progress.flush()

    def finish(self, attrs: Mapping[str, Any] | None = None) -> None:
        """Mark the file complete (with `attrs` added to the root) and close it."""
        self.file.close()
        with h5py.File(self.path, "r+", libver="latest") as file:
            for key, value in (attrs or {}).items():
                file.attrs[key] = value
            file.attrs["complete"] = True

    def close(self) -> None:
        """Close without finishing: the file stays incomplete and can be resumed."""
        if self.file.id.valid:
            self.file.close()


def _copy_attrs(source: h5py.HLObject, target: h5py.HLObject) -> None:
    for key, value in source.attrs.items():
        target.attrs[key] = value
