"""`AtlasReader`: an atlas file opened read-only, with cached raw access.

Opening reads only the root attributes (and checks the kind and d_model / d_sae). Datasets are
looked up on first use and kept open; whole columns are read once and cached (`_column`), single
values of uncached text columns are read alone (`_value`). Also the persona index shared by the
queries: persona name -> row, and the features that have a persona among their top personas
(one argsort of features/top_persona_index, on first use). `feature_store.atlas.queries.Atlas`
builds the query API on it; every problem with the file is a one-line `StoreError`.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import h5py
import numpy as np
import pandas as pd

from feature_store.appendable import check_kind, open_readable
from feature_store.atlas.arrays import decode, read_all
from feature_store.errors import StoreError
from feature_store.schema import ATLAS_KIND, ArraySpec


class AtlasReader:
    """An atlas file opened read-only: root attributes, cached datasets and columns."""

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
    def open(cls, path: str | Path) -> Self:
        """Open read-only; reads only the root attributes (datasets load on first use)."""
        return cls(path)

    def close(self) -> None:
        self._datasets.clear()
        if self.file.id.valid:
            self.file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        model, name = self.attrs.get("model"), type(self).__name__
        return f"{name}({str(self.path)!r}, model={model!r}, d_sae={self.d_sae})"

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
            values = read_all(self._dataset(path))
            self._columns[path] = values
        return values

    def _value(self, spec: ArraySpec, row: int) -> Any:
        if spec.path in self._columns or spec.dtype != "text":
            value = self._column(spec.path)[row]
        else:
            value = decode(self._dataset(spec.path)[row])
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
