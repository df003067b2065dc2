"""The HDF5 schema of every file sae-atlas writes, as one declarative table.

Writers create datasets from these specs, readers check them, and the docs and validation read
them too: a dataset's dtype, unit and description live here and nowhere else. Every group and
dataset written gets a `description` attribute (and `unit` where it has one), so any HDF5 client
(h5py, pandas, h5dump) can read a file without this project.

Row tables: datasets that grow together by whole commits share a `table` name (`tokens`,
`transcripts`); `/progress` holds the committed row count of each table, and readers never look
past it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SCHEMA_VERSION = 1

TRANSCRIPTS_KIND = "sae-atlas/transcripts"
ACTIVATIONS_KIND = "sae-atlas/activations"

ROLES: tuple[str, ...] = ("system", "user", "assistant", "template", "plain")
"""Per-token role codes: index in this tuple. `template` is chat-template text (the assistant
header and the like); `plain` is text outside any chat template (the plain-text control)."""
ROLE_CODE: dict[str, int] = {name: code for code, name in enumerate(ROLES)}

SPLITS: tuple[str, ...] = ("train", "heldout", "identity", "none")

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
    chunk_rows: int = 65536

    def numpy_dtype(self) -> np.dtype:
        return text_dtype() if self.dtype == "text" else np.dtype(self.dtype)


TOKEN_COLUMNS: tuple[Column, ...] = (
    Column("tokens/token_id", "tokens", "int32", "token id in the model's vocabulary"),
    Column("tokens/doc", "tokens", "int32", "row of the transcript in transcripts/ it belongs to"),
    Column("tokens/pos", "tokens", "int32", "position of the token in its transcript", "tokens"),
    Column(
        "tokens/role",
        "tokens",
        "uint8",
        "speaker of the token: index into the `roles` attribute "
        "(system, user, assistant, template, plain)",
    ),
)

TRANSCRIPT_COLUMNS: tuple[Column, ...] = (
    Column("transcripts/persona", "transcripts", "text", "persona the system prompt asks for"),
    Column(
        "transcripts/condition",
        "transcripts",
        "text",
        "corpus condition: persona, default, no_system, user_control, plain_control, rollout, ...",
    ),
    Column(
        "transcripts/variant",
        "transcripts",
        "int16",
        "index of the persona's system-prompt variant (-1: none)",
    ),
    Column("transcripts/question_id", "transcripts", "text", "id of the question in the bank"),
    Column("transcripts/split", "transcripts", "text", "question split: train, heldout, identity"),
    Column("transcripts/turn", "transcripts", "int16", "number of assistant turns in transcript"),
    Column("transcripts/seed", "transcripts", "int64", "sampling seed of the transcript"),
    Column(
        "transcripts/source",
        "transcripts",
        "int64",
        "row of this transcript in the file it was read from (-1: none)",
    ),
    Column(
        "transcripts/token_start",
        "transcripts",
        "int64",
        "first row of the transcript in tokens/",
        "tokens",
    ),
    Column(
        "transcripts/token_count",
        "transcripts",
        "int32",
        "number of rows of the transcript in tokens/",
        "tokens",
    ),
)

ACTS_CHUNK_ROWS = 1024


def acts_column(hook: str, d_model: int) -> Column:
    """The activation dataset of one hook point: float16 [n_tokens, d_model]."""
    if "/" in hook:
        raise ValueError(f"hook name {hook!r} may not contain '/'")
    return Column(
        f"acts/{hook}",
        "tokens",
        "float16",
        f"residual-stream activation at hook point {hook}, one row per row of tokens/",
        "model units",
        width=d_model,
        chunk_rows=ACTS_CHUNK_ROWS,
    )


GROUP_DESCRIPTIONS: dict[str, str] = {
    "tokens": "one row per token, in transcript order; padding is never stored",
    "transcripts": "one row per transcript: provenance and where its tokens are",
    "acts": "activations per hook point, aligned row for row with tokens/",
}

PROGRESS_DESCRIPTION = (
    "committed rows per table (see attribute `tables`); rows past these counts belong to an "
    "unfinished commit and are never read"
)

ROOT_ATTRS: dict[str, str] = {
    "schema": "kind of file (sae-atlas/transcripts or sae-atlas/activations)",
    "schema_version": "version of feature_store/schema.py that wrote the file",
    "created": "UTC time the file was created (ISO 8601)",
    "sae_atlas_version": "version of sae-atlas that wrote the file",
    "model": "model id the tokens and activations come from",
    "config": "JSON of the configuration that produced the file",
    "complete": "true once the writer finished; false while it is written or after a crash",
    "roles": "names of the role codes in tokens/role",
}
