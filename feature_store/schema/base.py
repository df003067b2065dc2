"""The spec types the layouts are written in, and what every file kind shares.

`Column` declares one dataset of an append-only row table (transcripts.h5, activations.h5);
`ArraySpec` one dataset of the atlas, its shape as axis names. Both are plain frozen records: the
writers, readers, docs and validation in feature_store read them, nothing here touches a file.
Also here: the schema version, the root attributes every file has, and the `runtime` attribute.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SCHEMA_VERSION = 1

NAME_BYTES = 64
"""Width of fixed-length UTF-8 string columns. Fixed width (not variable length) keeps the
columns appendable in SWMR mode, which is what makes a crashed file readable."""


def text_dtype(width: int = NAME_BYTES) -> np.dtype:
    import h5py

    return h5py.string_dtype("utf-8", width)


@dataclass(frozen=True)
class Column:
    """One dataset of a row table: `path` in the file, `width` 0 for one value per row."""

    path: str
    table: str
    dtype: str
    description: str
    unit: str = ""
    width: int = 0
    chunk_rows: int = 0
    """rows per HDF5 chunk; 0: the table's default (TABLE_CHUNK_ROWS)"""

    def numpy_dtype(self) -> np.dtype:
        return text_dtype() if self.dtype == "text" else np.dtype(self.dtype)

    @property
    def chunk(self) -> tuple[int, ...]:
        rows = self.chunk_rows or TABLE_CHUNK_ROWS[self.table]
        return (rows, self.width) if self.width else (rows,)


TABLE_CHUNK_ROWS = {"tokens": 16384, "transcripts": 1024}
"""Default rows per chunk: a chunk is allocated whole, so tables with few rows (transcripts) get
small chunks."""


@dataclass(frozen=True)
class ArraySpec:
    """One atlas dataset: `path` in the file, `shape` as axis names, dtype, description, unit.

    dtype is a numpy dtype name, "text" (variable-length UTF-8 string) or "float" (the floating
    dtype the writer is given: float16, float32 or float64).
    """

    path: str
    dtype: str
    shape: tuple[str, ...]
    description: str
    unit: str = ""

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


ROOT_ATTRS: dict[str, str] = {
    "schema": "kind of file (sae-atlas/transcripts or sae-atlas/activations)",
    "schema_version": "version of feature_store/schema that wrote the file",
    "created": "UTC time the file was created (ISO 8601)",
    "sae_atlas_version": "version of sae-atlas that wrote the file",
    "model": "model id the tokens and activations come from",
    "config": "JSON of the configuration that produced the file",
    "complete": "true once the writer finished; false while it is written or after a crash",
    "roles": "names of the role codes in tokens/role",
}

RUNTIME_ATTR = "runtime"
"""Root attribute of every file a stage writes (transcripts, activations, labels, atlas; the SAE's
training card has the same key): JSON {stage: {"dtype", "device", "threads", "reason"}}, how each
stage that made the file ran: the dtype it computed in (resolved from "auto" by measuring the
machine, see sae_atlas.model.dtype), its device, torch's CPU threads, and why that dtype. The atlas
holds label's, organize's and, once written, dynamics'. A shard-joined activation store holds rank
0's."""
