"""Transcripts with per-token roles and provenance, and the crash-safe store that holds them.

`transcripts.h5` (kind sae-atlas/transcripts) holds `tokens/` (token id, transcript, position,
role per token) and `transcripts/` (persona, condition, variant, question, split, turn, seed per
transcript). The activation store has the same two tables plus `acts/`, so both use
`token_rows` / `transcript_rows` to turn transcripts into rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from feature_store.appendable import (
    AppendFile,
    check_kind,
    committed_rows,
    open_readable,
    store_state,
)
from feature_store.errors import StoreError
from feature_store.schema import (
    NAME_BYTES,
    TOKEN_COLUMNS,
    TRANSCRIPT_COLUMNS,
    TRANSCRIPTS_KIND,
    Column,
)

READ_ROWS = 1 << 20
"""Token rows a reader that streams the token table reads at a time (`token_blocks`)."""

PROVENANCE_FIELDS = ("persona", "condition", "variant", "question_id", "split", "turn", "seed")


@dataclass(frozen=True)
class Transcript:
    """One chat (or plain-text) transcript as the model sees it, with where it came from.

    token_ids: [n_tokens] int32; roles: [n_tokens] uint8 codes of feature_store.schema.ROLES.
    """

    token_ids: np.ndarray
    roles: np.ndarray
    persona: str = ""
    condition: str = ""
    variant: int = -1
    question_id: str = ""
    split: str = "none"
    turn: int = 0
    seed: int = -1
    source: int = -1

    def __post_init__(self) -> None:
        if len(self.token_ids) != len(self.roles):
            raise ValueError(
                f"transcript has {len(self.token_ids)} tokens but {len(self.roles)} roles"
            )
        for name in ("persona", "condition", "question_id", "split"):
            if len(getattr(self, name).encode()) > NAME_BYTES:
                raise ValueError(
                    f"transcript {name} {getattr(self, name)!r} is longer than "
                    f"{NAME_BYTES} bytes; use a shorter name"
                )

    def __len__(self) -> int:
        return len(self.token_ids)


def token_rows(transcripts: Sequence[Transcript], first_doc: int) -> dict[str, np.ndarray]:
    """Rows of tokens/ for `transcripts`, numbered from transcript row `first_doc`."""
    lengths = np.array([len(t) for t in transcripts], dtype=np.int64)
    return {
        "tokens/token_id": np.concatenate([t.token_ids for t in transcripts]).astype(np.int32),
        "tokens/doc": np.repeat(np.arange(first_doc, first_doc + len(transcripts)), lengths).astype(
            np.int32
        ),
        "tokens/pos": np.concatenate([np.arange(n) for n in lengths]).astype(np.int32),
        "tokens/role": np.concatenate([t.roles for t in transcripts]).astype(np.uint8),
    }


def transcript_rows(transcripts: Sequence[Transcript], first_token: int) -> dict[str, np.ndarray]:
    """Rows of transcripts/ for `transcripts`, whose tokens start at token row `first_token`."""
    lengths = np.array([len(t) for t in transcripts], dtype=np.int64)
    starts = first_token + np.concatenate([[0], np.cumsum(lengths)[:-1]])
    rows: dict[str, np.ndarray] = {}
    for column in TRANSCRIPT_COLUMNS:
        name = column.path.split("/", 1)[1]
        if name == "token_start":
            rows[column.path] = starts.astype(np.int64)
        elif name == "token_count":
            rows[column.path] = lengths.astype(np.int32)
        else:
            values = [getattr(t, name) for t in transcripts]
            rows[column.path] = np.array(
                values, dtype=object if column.dtype == "text" else column.numpy_dtype()
            )
    return rows


class TranscriptWriter:
    """Appends transcripts to transcripts.h5 in commits; resumable after a crash."""

    columns: tuple[Column, ...] = TOKEN_COLUMNS + TRANSCRIPT_COLUMNS

    def __init__(self, store: AppendFile) -> None:
        self.store = store

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        model: str,
        config: Mapping[str, Any],
        attrs: Mapping[str, Any] | None = None,
    ) -> TranscriptWriter:
        """Create the store, or resume it when an incomplete one for the same config is there."""
        state = store_state(path, TRANSCRIPTS_KIND, model, config)
        if state == "complete":
            raise StoreError(f"{path}: is already complete; nothing to write")
        if state == "incomplete":
            return cls(AppendFile.resume(path, cls.columns))
        return cls(
            AppendFile.create(
                path,
                kind=TRANSCRIPTS_KIND,
                model=model,
                config=config,
                columns=cls.columns,
                attrs=attrs,
            )
        )

    def __len__(self) -> int:
        return self.store.rows["transcripts"]

    def append(self, transcripts: Sequence[Transcript]) -> None:
        if not transcripts:
            return
        rows = token_rows(transcripts, self.store.rows["transcripts"])
        rows |= transcript_rows(transcripts, self.store.rows["tokens"])
        self.store.commit(rows)

    def finish(self, attrs: Mapping[str, Any] | None = None) -> None:
        self.store.finish(attrs)

    def close(self) -> None:
        self.store.close()


class TranscriptStore:
    """Read access to a transcripts.h5 (or the token tables of an activations.h5)."""

    def __init__(self, path: str | Path, kind: str = TRANSCRIPTS_KIND) -> None:
        self.path = Path(path)
        with open_readable(self.path) as file:
            check_kind(file, kind)
            self.rows = committed_rows(file)
            self.model = str(file.attrs["model"])
            self.complete = bool(file.attrs["complete"])
            self.config = json.loads(file.attrs["config"])
            self.attrs = {k: file.attrs[k] for k in file.attrs}

    def __len__(self) -> int:
        return self.rows["transcripts"]

    @property
    def n_tokens(self) -> int:
        return self.rows["tokens"]

    def provenance(self) -> pd.DataFrame:
        """One row per committed transcript: provenance, token_start, token_count."""
        n = len(self)
        with open_readable(self.path) as file:
            data = {}
            for column in TRANSCRIPT_COLUMNS:
                values = file[column.path][:n]
                if column.dtype == "text":
                    values = np.array([v.decode() for v in values], dtype=object)
                data[column.path.split("/", 1)[1]] = values
        return pd.DataFrame(data)

    def token_table(self) -> dict[str, np.ndarray]:
        """The committed tokens/ columns: token_id, doc, pos, role, each [n_tokens]."""
        return self.token_rows()

    def token_rows(self, start: int = 0, stop: int | None = None) -> dict[str, np.ndarray]:
        """Rows start:stop (of the committed ones) of the tokens/ columns: token_id, doc, pos,
        role, each [stop - start]."""
        stop = self.n_tokens if stop is None else min(stop, self.n_tokens)
        with open_readable(self.path) as file:
            return {c.path.split("/", 1)[1]: file[c.path][start:stop] for c in TOKEN_COLUMNS}

    def token_blocks(self, rows: int | None = None) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """The committed tokens/ columns in consecutive blocks of `rows` (default READ_ROWS) rows:
        (first row, the block's token_id, doc, pos, role)."""
        rows = rows or READ_ROWS
        for start in range(0, self.n_tokens, rows):
            yield start, self.token_rows(start, start + rows)

    def lengths(self) -> np.ndarray:
        """[n_transcripts] int64: each committed transcript's token count (no tokens read)."""
        with open_readable(self.path) as file:
            return file["transcripts/token_count"][: len(self)].astype(np.int64)

    def read(self, indices: Sequence[int] | np.ndarray) -> list[Transcript]:
        """The committed transcripts at `indices` (any order), in that order: their provenance rows
        and token spans only, read with the file open once. Memory: those transcripts."""
        indices = np.asarray(indices, dtype=np.int64)
        if not len(indices):
            return []
        if indices.min() < 0 or indices.max() >= len(self):
            raise IndexError(f"{self.path}: transcripts {indices} of {len(self)}")
        unique, position = np.unique(indices, return_inverse=True)
        with open_readable(self.path) as file:
            columns = {c.path.split("/", 1)[1]: file[c.path][unique] for c in TRANSCRIPT_COLUMNS}
            token_ids, roles = file["tokens/token_id"], file["tokens/role"]
            transcripts = []
            for at in position:
                row = {name: values[at] for name, values in columns.items()}
                span = slice(int(row["token_start"]), int(row["token_start"] + row["token_count"]))
                transcripts.append(_transcript(row, token_ids[span], roles[span]))
        return transcripts

    def __iter__(self) -> Iterator[Transcript]:
        """Every committed transcript, from the whole token table read at once (fast, but holds
        every token; `read` holds only the transcripts asked for)."""
        table = self.token_table()
        for row in self.provenance().to_dict("records"):
            span = slice(int(row["token_start"]), int(row["token_start"]) + int(row["token_count"]))
            yield _transcript(row, table["token_id"][span], table["role"][span])


def _transcript(row: Mapping[str, Any], token_ids: np.ndarray, roles: np.ndarray) -> Transcript:
    """A Transcript from one row of the transcripts/ columns (text as str or bytes)."""

    def text(value: str | bytes) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)

    return Transcript(
        token_ids=token_ids,
        roles=roles,
        persona=text(row["persona"]),
        condition=text(row["condition"]),
        variant=int(row["variant"]),
        question_id=text(row["question_id"]),
        split=text(row["split"]),
        turn=int(row["turn"]),
        seed=int(row["seed"]),
        source=int(row["source"]),
    )
