"""An atlas being written: a temporary file beside the target, checked writes, and the rename.

`TemporaryAtlas` opens a new atlas (root attributes written) or a copy of a complete one
(`extend`, one file copy), checks each section's arrays against the schema and the axis sizes
bound so far before writing any of them, and `finish()` checks that every required section is
there and that cross-references hold, fsyncs, and renames the file into place: the target path
only ever holds a complete atlas. `abort()` (and any exception inside `with`) deletes the
temporary file. `feature_store.atlas.writer.AtlasWriter` adds one method per section.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import h5py
import numpy as np
import pandas as pd

from feature_store.appendable import write_root_attrs
from feature_store.atlas.arrays import TEXT, chunk_layout, describe, numeric_array, text_array
from feature_store.atlas.reader import AtlasReader
from feature_store.errors import StoreError
from feature_store.schema import ATLAS_GROUP_DESCRIPTIONS, ATLAS_KIND, ATLAS_SPECS, ArraySpec

SECTIONS: tuple[str, ...] = ("sae", "features", "examples", "personas", "persona_space", "clusters")
"""What `AtlasWriter.finish` requires (dynamics/ is optional)."""


class TemporaryAtlas:
    """An atlas written into a temporary file; `finish()` checks it and renames it into place.

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
    def extend(cls, path: str | Path) -> Self:
        """A writer over a copy of the complete atlas at `path`, to add sections it lacks
        (typically dynamics/); `finish()` replaces `path` atomically. Costs one file copy."""
        AtlasReader(path).close()
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

    def __enter__(self) -> Self:
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
            array = text_array(spec.path, np.asarray(values, dtype=object).ravel()).reshape(
                np.shape(values)
            )
        else:
            array = numeric_array(spec, values)
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
        describe(group, ATLAS_GROUP_DESCRIPTIONS[name])
        return group

    def _dataset(
        self, path: str, data: np.ndarray, description: str, unit: str = "", compress: bool = True
    ) -> h5py.Dataset:
        if data.dtype == object:
            dataset = self.file.create_dataset(
                path, data=data, dtype=TEXT, **chunk_layout(data.shape, 16, False)
            )
        else:
            dataset = self.file.create_dataset(
                path, data=data, **chunk_layout(data.shape, data.dtype.itemsize, compress)
            )
        describe(dataset, description, unit)
        return dataset

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
