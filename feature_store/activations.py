"""The activation store: residual activations per hook point, per token, on disk.

`activations.h5` (kind sae-atlas/activations) has the token and transcript tables of
`feature_store.transcripts` plus `acts/<hook>`: float16 [n_tokens, d_model] in chunks of
ACTS_CHUNK_ROWS rows. It is written in commits by `ActivationWriter` (crash-safe, resumable; see
`feature_store.appendable`) and read in shuffled batches by `ShuffledBatches`, which reads random
chunks into a shuffle buffer on a background thread, optionally keeping only some roles or splits.
Readers hold at most a block or a shuffle buffer of activations in memory, never the store.

A sharded harvest writes one such store per rank (`shard_path`) and `join_shards` joins them into
one store whose datasets are HDF5 virtual datasets over the shards: every reader reads it as if one
writer had written the shards' rows one after another.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from feature_store.appendable import (
    COPY_ROWS,
    AppendFile,
    open_readable,
    store_state,
    write_root_attrs,
)
from feature_store.errors import StoreError
from feature_store.schema import (
    ACTIVATIONS_KIND,
    ACTS_CHUNK_ROWS,
    GROUP_DESCRIPTIONS,
    PROGRESS_DESCRIPTION,
    ROLE_CODE,
    ROOT_ATTRS,
    SHARDS_ATTR,
    TOKEN_COLUMNS,
    TRANSCRIPT_COLUMNS,
    Column,
    acts_column,
)
from feature_store.transcripts import Transcript, TranscriptStore, token_rows
from feature_store.transcripts import transcript_rows as _transcript_rows


def _columns(hooks: Sequence[str], d_model: int) -> tuple:
    return TOKEN_COLUMNS + TRANSCRIPT_COLUMNS + tuple(acts_column(h, d_model) for h in hooks)


class ActivationWriter:
    """Appends transcripts and their activations in commits; resumable after a crash."""

    def __init__(self, store: AppendFile, hooks: Sequence[str]) -> None:
        self.store = store
        self.hooks = tuple(hooks)

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        model: str,
        hooks: Sequence[str],
        d_model: int,
        config: Mapping[str, Any],
        attrs: Mapping[str, Any] | None = None,
    ) -> ActivationWriter:
        """Create the store, or resume it when an incomplete one for the same config is there."""
        columns = _columns(hooks, d_model)
        state = store_state(path, ACTIVATIONS_KIND, model, config)
        if state == "complete":
            raise StoreError(f"{path}: is already complete; nothing to write")
        if state == "incomplete":
            return cls(AppendFile.resume(path, columns), hooks)
        all_attrs = {"hooks": list(hooks), "d_model": d_model, **(attrs or {})}
        store = AppendFile.create(
            path,
            kind=ACTIVATIONS_KIND,
            model=model,
            config=config,
            columns=columns,
            attrs=all_attrs,
        )
        return cls(store, hooks)

    def __len__(self) -> int:
        """Transcripts committed so far."""
        return self.store.rows["transcripts"]

    @property
    def n_tokens(self) -> int:
        return self.store.rows["tokens"]

    def append(self, transcripts: Sequence[Transcript], acts: Mapping[str, np.ndarray]) -> None:
        """Commit `transcripts` with `acts[hook]`: [sum of their lengths, d_model], in order."""
        if not transcripts:
            return
        n_tokens = sum(len(t) for t in transcripts)
        rows = token_rows(transcripts, self.store.rows["transcripts"])
        rows |= _transcript_rows(transcripts, self.store.rows["tokens"])
        for hook in self.hooks:
            if acts[hook].shape[0] != n_tokens:
                raise ValueError(
                    f"acts[{hook}] has {acts[hook].shape[0]} rows for {n_tokens} tokens"
                )
            rows[f"acts/{hook}"] = acts[hook].astype(np.float16, copy=False)
        self.store.commit(rows)

    def finish(self, attrs: Mapping[str, Any] | None = None) -> None:
        self.store.finish(attrs)

    def close(self) -> None:
        self.store.close()


class ActivationStore(TranscriptStore):
    """Read access to activations.h5. Only committed rows are ever read."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path, kind=ACTIVATIONS_KIND)
        self.hooks: tuple[str, ...] = tuple(str(h) for h in self.attrs["hooks"])
        self.d_model = int(self.attrs["d_model"])
        self.shards: tuple[str, ...] = tuple(json.loads(self.attrs.get(SHARDS_ATTR, "[]")))
        missing = [name for name in self.shards if not (self.path.parent / name).is_file()]
        if missing:
            raise StoreError(
                f"{self.path}: joins shard stores that are not beside it: {', '.join(missing)}; "
                "put them back, or delete this file and rerun the harvest"
            )

    def check_hook(self, hook: str) -> None:
        if hook not in self.hooks:
            raise StoreError(
                f"{self.path}: has no activations at {hook!r}; it has {', '.join(self.hooks)}"
            )

    def acts(self, hook: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows start:stop of acts/<hook>, float16 [stop - start, d_model]."""
        self.check_hook(hook)
        stop = self.n_tokens if stop is None else min(stop, self.n_tokens)
        with open_readable(self.path) as file:
            return file[f"acts/{hook}"][start:stop]

    def token_mask(
        self,
        roles: Sequence[str] | None = None,
        splits: Sequence[str] | None = None,
        conditions: Sequence[str] | None = None,
        min_pos: int = 0,
    ) -> np.ndarray:
        """bool [n_tokens]: tokens whose role, transcript split and condition are among those given
        (None: any), at position min_pos or later in their transcript. Reads the token table block
        by block (`token_blocks`)."""
        if roles is not None:
            unknown = [r for r in roles if r not in ROLE_CODE]
            if unknown:
                raise StoreError(f"unknown role(s) {unknown}; roles are {list(ROLE_CODE)}")
        keep_doc = None
        if splits is not None or conditions is not None:
            provenance = self.provenance()
            keep_doc = np.ones(len(provenance), dtype=bool)
            if splits is not None:
                keep_doc &= provenance["split"].isin(list(splits)).to_numpy()
            if conditions is not None:
                keep_doc &= provenance["condition"].isin(list(conditions)).to_numpy()
        mask = np.empty(self.n_tokens, dtype=bool)
        for start, table in self.token_blocks():
            block = table["pos"] >= min_pos
            if roles is not None:
                block &= np.isin(table["role"], [ROLE_CODE[r] for r in roles])
            if keep_doc is not None:
                block &= keep_doc[table["doc"]]
            mask[start : start + len(block)] = block
        return mask

    def batches(
        self,
        hook: str,
        batch_size: int,
        *,
        mask: np.ndarray | None = None,
        buffer_rows: int = 65536,
        seed: int = 0,
        epochs: int | None = None,
        prefetch: int = 8,
        dtype: type[np.floating] = np.float32,
    ) -> ShuffledBatches:
        """Shuffled batches [batch_size, d_model] of `dtype` (float32, or the stored float16) of
        the rows where `mask` is true."""
        self.check_hook(hook)
        return ShuffledBatches(
            self.path,
            hook,
            batch_size,
            n_rows=self.n_tokens,
            mask=mask,
            buffer_rows=buffer_rows,
            seed=seed,
            epochs=epochs,
            prefetch=prefetch,
            dtype=dtype,
        )


def shard_path(path: str | Path, rank: int, world_size: int) -> Path:
    """The shard store of `rank` of a harvest into `path`: activations.rank0-of-2.h5 beside it."""
    path = Path(path)
    return path.with_name(f"{path.stem}.rank{rank}-of-{world_size}{path.suffix}")


RENUMBERED = {"tokens/doc": "transcripts", "transcripts/token_start": "tokens"}
"""Columns that point into a table (column -> that table): a shard numbers them from 0, so the
joined store stores them, offset by the rows of that table in the shards before."""


def join_shards(
    path: str | Path,
    shards: Sequence[str | Path],
    *,
    config: Mapping[str, Any],
    attrs: Mapping[str, Any] | None = None,
) -> ActivationStore:
    """Write the activation store `path` whose rows are those of the complete shard stores
    `shards` (files beside it), one shard after another, with `config` as its config and `attrs`
    added to its root; returns it opened.

    Every dataset is an HDF5 virtual dataset over the shards (they must stay beside it) except
    RENUMBERED (4 bytes per token, 8 per transcript), so joining costs no copy of activations. It
    is written to a temporary file and renamed: `path` appears complete or not at all.
    """
    path = Path(path)
    if path.exists():
        raise StoreError(f"{path}: already exists; it is never overwritten")
    stores = joinable_shards(path, shards)
    first = stores[0]
    columns = _columns(first.hooks, first.d_model)
    tables = sorted({c.table for c in columns})
    totals = {table: sum(store.rows[table] for store in stores) for table in tables}
    tmp = path.with_name(path.name + ".join")
    tmp.unlink(missing_ok=True)
    with contextlib.ExitStack() as stack:
        sources = [stack.enter_context(open_readable(store.path)) for store in stores]
        file = stack.enter_context(h5py.File(tmp, "w-", libver="latest"))
        kept = {k: v for k, v in sources[0].attrs.items() if k not in ROOT_ATTRS or k == "roles"}
        write_root_attrs(
            file,
            kind=ACTIVATIONS_KIND,
            model=first.model,
            config=config,
            attrs={
                **kept,
                **(attrs or {}),
                "complete": True,
                SHARDS_ATTR: json.dumps([store.path.name for store in stores]),
            },
        )
        for group, text in GROUP_DESCRIPTIONS.items():
            file.require_group(group).attrs["description"] = text
        for column in columns:
            parts = [source[column.path] for source in sources]
            rows = [store.rows[column.table] for store in stores]
            dataset = _joined_column(file, column, parts, rows, stores, totals[column.table])
            for key, value in parts[0].attrs.items():
                dataset.attrs[key] = value
        progress = file.create_dataset(
            "progress", data=np.array([totals[t] for t in tables], dtype=np.int64)
        )
        progress.attrs["tables"] = json.dumps(tables)
        progress.attrs["description"] = PROGRESS_DESCRIPTION
    os.replace(tmp, path)
    return ActivationStore(path)


def joinable_shards(path: Path, shards: Sequence[str | Path]) -> list[ActivationStore]:
    """The shard stores, opened; StoreError unless there is one, each is complete and beside
    `path`, and all hold the same model, hooks and d_model."""
    stores = [ActivationStore(shard) for shard in shards]
    if not stores:
        raise StoreError(f"{path}: no shard stores to join")
    first = stores[0]
    for store in stores:
        if not store.complete:
            raise StoreError(f"{store.path}: is unfinished; finish its harvest before joining")
        if store.path.parent.resolve() != path.parent.resolve():
            raise StoreError(f"{store.path}: a shard must be in the folder of {path}")
        if (store.model, store.hooks, store.d_model) != (first.model, first.hooks, first.d_model):
            raise StoreError(
                f"{store.path}: holds another model, hooks or d_model than {first.path}; "
                "join shards of one harvest"
            )
    return stores


def _joined_column(
    file: h5py.File,
    column: Column,
    parts: Sequence[h5py.Dataset],
    rows: Sequence[int],
    stores: Sequence[ActivationStore],
    total: int,
) -> h5py.Dataset:
    """`column` of the joined file: the shards' `parts` (their first `rows` rows) one after
    another; a virtual dataset, or a copy offset by the rows of the shards before for a
    RENUMBERED column (and for an empty one)."""
    shape = (total, *parts[0].shape[1:])
    if column.path not in RENUMBERED and total:
        layout = h5py.VirtualLayout(shape=shape, dtype=parts[0].dtype)
        start = 0
        for store, part, n in zip(stores, parts, rows, strict=True):
            if n:
                source = h5py.VirtualSource(
                    store.path.name, column.path, shape=part.shape, dtype=part.dtype
                )
                layout[start : start + n] = source[:n]
            start += n
        return file.create_virtual_dataset(column.path, layout)
    chunks = tuple(min(c, n) for c, n in zip(column.chunk, shape, strict=True))
    dataset = file.create_dataset(
        column.path, shape=shape, chunks=chunks if total else None, dtype=parts[0].dtype
    )
    start = offset = 0
    for store, part, n in zip(stores, parts, rows, strict=True):
        for row in range(0, n, COPY_ROWS):
            stop = min(n, row + COPY_ROWS)
            dataset[start + row : start + stop] = part[row:stop] + offset
        start += n
        offset += store.rows[RENUMBERED[column.path]] if column.path in RENUMBERED else 0
    return dataset


_DONE = object()


class ShuffledBatches:
    """An iterator of shuffled activation batches, read ahead on a background thread.

    Chunks of ACTS_CHUNK_ROWS rows are read in a random order (one contiguous HDF5 read each),
    filtered by `mask`, and fed into a buffer of about `buffer_rows` rows; when the buffer is
    full it is shuffled and its first half is handed out as batches. `epochs=None` loops forever.
    Close it (or use it as a context manager) to stop the reader thread early.
    """

    def __init__(
        self,
        path: Path,
        hook: str,
        batch_size: int,
        *,
        n_rows: int,
        mask: np.ndarray | None,
        buffer_rows: int,
        seed: int,
        epochs: int | None,
        prefetch: int,
        dtype: type[np.floating] = np.float32,
    ) -> None:
        if batch_size <= 0:
            raise ValueError("batch_size must be positive")
        self.path, self.hook, self.batch_size = path, hook, batch_size
        self.n_rows = n_rows
        self.mask = mask
        if mask is not None and len(mask) != n_rows:
            raise ValueError(f"mask has {len(mask)} rows, the store has {n_rows}")
        self.n_selected = n_rows if mask is None else int(mask.sum())
        if self.n_selected == 0:
            raise StoreError(f"{path}: no rows of acts/{hook} match the selection")
        self.buffer_rows = max(buffer_rows, 2 * batch_size)
        self.dtype = dtype
        self.rng = np.random.default_rng(seed)
        self.epochs = epochs
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=prefetch)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._produce, daemon=True)
        self.thread.start()

    def _chunks(self) -> Iterator[np.ndarray]:
        starts = np.arange(0, self.n_rows, ACTS_CHUNK_ROWS)
        epoch = 0
        with open_readable(self.path) as file:
            dataset: h5py.Dataset = file[f"acts/{self.hook}"]
            while self.epochs is None or epoch < self.epochs:
                for start in self.rng.permutation(starts):
                    if self.stop.is_set():
                        return
                    stop = min(start + ACTS_CHUNK_ROWS, self.n_rows)
                    if self.mask is not None:
                        keep = self.mask[start:stop]
                        if not keep.any():
                            continue
                        yield dataset[start:stop][keep]
                    else:
                        yield dataset[start:stop]
                epoch += 1

    def _put(self, item: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            pending: list[np.ndarray] = []  # chunks read since the last shuffle
            n_pending = 0
            for chunk in self._chunks():
                pending.append(chunk)
                n_pending += len(chunk)
                if n_pending < self.buffer_rows:
                    continue
                buffer = np.concatenate(pending).astype(self.dtype, copy=False)
                buffer = buffer[self.rng.permutation(len(buffer))]
                half = (len(buffer) // 2 // self.batch_size) * self.batch_size
                for i in range(0, half, self.batch_size):
                    if not self._put(buffer[i : i + self.batch_size]):
                        return
                pending, n_pending = [buffer[half:]], len(buffer) - half
            buffer = np.concatenate(pending).astype(self.dtype, copy=False)
            buffer = buffer[self.rng.permutation(len(buffer))]
            for i in range(0, len(buffer) - self.batch_size + 1, self.batch_size):
                if not self._put(buffer[i : i + self.batch_size]):
                    return
            self._put(_DONE)
        except BaseException as error:  # handed to the consumer, which re-raises it
            self._put(error)

    def __iter__(self) -> ShuffledBatches:
        return self

    def __next__(self) -> np.ndarray:
        item = self.queue.get()
        if item is _DONE:
            self.close()
            raise StopIteration
        if isinstance(item, BaseException):
            self.close()
            raise item
        return item

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)

    def __enter__(self) -> ShuffledBatches:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
