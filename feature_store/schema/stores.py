"""Layouts of the append-only row stores: transcripts.h5 and activations.h5.

Row tables: datasets that grow together by whole commits share a `table` name (`tokens`,
`transcripts`); `/progress` holds the committed row count of each table, and readers never look
past it. Written by feature_store.appendable, feature_store.transcripts and
feature_store.activations.
"""

from __future__ import annotations

from feature_store.schema.base import Column

TRANSCRIPTS_KIND = "sae-atlas/transcripts"
ACTIVATIONS_KIND = "sae-atlas/activations"

ROLES: tuple[str, ...] = ("system", "user", "assistant", "template", "plain")
"""Per-token role codes: index in this tuple. `template` is chat-template text (the assistant
header and the like); `plain` is text outside any chat template (the plain-text control)."""
ROLE_CODE: dict[str, int] = {name: code for code, name in enumerate(ROLES)}

SPLITS: tuple[str, ...] = ("train", "heldout", "identity", "none")

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

SHARDS_ATTR = "shards"
"""Root attribute of an activation store joined from shards (feature_store.activations): JSON list
of the shard stores (files beside it, in row order) a sharded harvest wrote. acts/, tokens/ and
transcripts/ are HDF5 virtual datasets over them, except tokens/doc and transcripts/token_start,
which are stored in the joined file, renumbered across the shards."""
