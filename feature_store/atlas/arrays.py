"""Array conversions and HDF5 layout shared by the atlas writer and reader.

What the writer stores and how: values checked and converted to a spec's dtype (text as object
arrays of str, None and NaN as ""), chunks of whole rows of about CHUNK_BYTES (gzip+shuffle for
compressed columns), a description and unit on every object. What the reader gets back: whole
datasets with text as str. Also the 'pirate:0.93;villain:0.71' form of a feature's top personas.
All numpy on the arrays given: one pass each.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import h5py
import numpy as np

from feature_store.errors import StoreError
from feature_store.schema import ArraySpec

CHUNK_BYTES = 64 * 1024
"""Target size of a chunk: small enough that reading one row decompresses little."""

TEXT = h5py.string_dtype("utf-8")
"""Variable-length UTF-8 strings, the dtype of every atlas text dataset."""


def describe(obj: h5py.HLObject, description: str, unit: str = "") -> None:
    obj.attrs["description"] = description
    if unit:
        obj.attrs["unit"] = unit


def chunk_layout(shape: tuple[int, ...], itemsize: int, compress: bool) -> dict[str, Any]:
    """Chunks of whole rows of about CHUNK_BYTES, gzip+shuffle when `compress`."""
    if not shape or 0 in shape:
        return {}
    row_bytes = itemsize * math.prod(shape[1:])
    rows = max(1, min(shape[0], CHUNK_BYTES // max(row_bytes, 1)))
    layout: dict[str, Any] = {"chunks": (rows, *shape[1:])}
    if compress:
        layout |= {"compression": "gzip", "compression_opts": 4, "shuffle": True}
    return layout


def text_array(path: str, values: Iterable[Any]) -> np.ndarray:
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


def numeric_array(spec: ArraySpec, values: Any) -> np.ndarray:
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


def plain_array(path: str, values: Any) -> np.ndarray:
    """`values` as a numeric array, or text as an object array of str."""
    array = np.asarray(values)
    if array.dtype.kind in "OUS":
        return text_array(path, array.ravel()).reshape(array.shape)
    if array.dtype.kind not in "biuf":
        raise StoreError(f"{path}: needs numbers or text, got {array.dtype}")
    return array


def read_all(dataset: h5py.Dataset) -> np.ndarray:
    """The whole dataset; text as an object array of str."""
    return dataset.asstr()[()] if dataset.dtype.kind == "O" else dataset[()]


def decode(value: Any) -> Any:
    """`value` as str when it is UTF-8 bytes (one text value read alone), else unchanged."""
    return value.decode("utf-8") if isinstance(value, bytes) else value


def persona_list(names: np.ndarray, index: np.ndarray, score: np.ndarray) -> str:
    """'pirate:0.93;villain:0.71' from one row of top_persona_index / top_persona_score."""
    return ";".join(f"{names[p]}:{s:.2f}" for p, s in zip(index, score, strict=True) if p >= 0)
