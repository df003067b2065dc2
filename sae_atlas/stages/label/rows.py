"""What each transcript and each store row counts for in the labeling pass, and the blocks of
whole transcripts the pass reads.

Costs per transcript its DocKinds (12 bytes); per block of the token table its RowKinds (about
21 bytes per row); never a per-token table of the whole store.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from feature_store.activations import ActivationStore
from feature_store.schema import ROLE_CODE
from sae_atlas.stages.label.inputs import TRAIN, Responses, TriggerSet

CONTROLS: tuple[str, ...] = ("user_control", "plain_control")
CONTROL_ROLE = {"user_control": "user", "plain_control": "plain"}
"""The role that carries the response text in each control condition."""


@dataclass(frozen=True)
class DocKinds:
    """What each transcript (row of the provenance) counts for, [n_transcripts] each (-1:
    nothing): response: row of the Responses; trigger: row of the TriggerSet; control: index
    into CONTROLS of the controls of one of the responses (same job seed: the store's `source` is
    the transcript's own row in the corpus once harvested); control_response: the response row
    each control was built from."""

    response: np.ndarray
    trigger: np.ndarray
    control: np.ndarray
    control_response: np.ndarray


@dataclass
class RowKinds:
    """What each row of a block of store rows counts for, [rows] each (-1: nothing).

    response: response row; group: persona * 2 + (0 train, 1 otherwise) of response rows;
    trigger: TriggerSet row whose response holds the row (its response tokens only: the
    wrapper's own tokens are in the user's message, so reading them would make any feature of
    the wrapper text a trigger); header: response row of the
    assistant-header rows before it; template: template rows of sampled transcripts; control:
    index into CONTROLS of rows carrying the response text of a control of one of the responses
    (same job seed: the store's `source` is the transcript's own row in the corpus once
    harvested); control_response: the response row of those control rows; token: token ids.
    """

    response: np.ndarray
    group: np.ndarray
    trigger: np.ndarray
    header: np.ndarray
    template: np.ndarray
    control: np.ndarray
    control_response: np.ndarray
    token: np.ndarray

    def needed(self) -> np.ndarray:
        return (
            (self.response >= 0)
            | (self.trigger >= 0)
            | (self.header >= 0)
            | self.template
            | (self.control >= 0)
        )


def header_rows(role: np.ndarray, doc: np.ndarray) -> np.ndarray:
    """bool [n_tokens]: template rows in the run of template rows just before an assistant turn
    (the assistant header, e.g. `<|im_end|>\\n<|im_start|>assistant\\n`)."""
    assistant, template = ROLE_CODE["assistant"], ROLE_CODE["template"]
    header = np.zeros(len(role), dtype=bool)
    starts = np.flatnonzero(
        (role == assistant) & np.r_[True, (role[:-1] != assistant) | (doc[:-1] != doc[1:])]
    )
    for start in starts:
        row = start - 1
        while row >= 0 and role[row] == template and doc[row] == doc[start]:
            header[row] = True
            row -= 1
    return header


def doc_kinds(
    provenance: pd.DataFrame, responses: Responses, triggers: TriggerSet | None
) -> DocKinds:
    """The DocKinds of a store from its provenance (one row per transcript)."""
    conditions = provenance["condition"].to_numpy(dtype=object)
    n_docs = len(conditions)
    response = np.full(n_docs, -1, dtype=np.int32)
    response[responses.doc] = np.arange(len(responses))
    trigger = np.full(n_docs, -1, dtype=np.int32)
    if triggers is not None:
        trigger[triggers.doc] = np.arange(len(triggers))
    control = np.full(n_docs, -1, dtype=np.int32)
    seeds = provenance["seed"].to_numpy()
    of_response = np.isin(seeds, seeds[responses.doc])  # a control keeps its job's seed
    for code, condition in enumerate(CONTROLS):
        control[of_response & (conditions == condition)] = code
    row_of_seed = dict(zip(seeds[responses.doc].tolist(), range(len(responses)), strict=True))
    control_response = np.full(n_docs, -1, dtype=np.int32)
    built = np.flatnonzero(control >= 0)
    control_response[built] = [row_of_seed[s] for s in seeds[built].tolist()]
    return DocKinds(
        response=response, trigger=trigger, control=control, control_response=control_response
    )


def row_kinds(table: dict[str, np.ndarray], docs: DocKinds, responses: Responses) -> RowKinds:
    """The RowKinds of rows of the token table (`table`: its columns for a range of whole
    transcripts; int32 row indices: about 21 bytes per row)."""
    role, doc = table["role"], table["doc"]
    response_of_doc = docs.response[doc]
    in_response = response_of_doc >= 0
    response = np.where(in_response & (role == ROLE_CODE["assistant"]), response_of_doc, -1)
    group = np.full(len(role), -1, dtype=np.int32)
    rows = response >= 0
    not_train = (responses.split[response[rows]] != TRAIN).astype(np.int32)
    group[rows] = responses.persona[response[rows]] * 2 + not_train
    trigger = np.where(role == ROLE_CODE["assistant"], docs.trigger[doc], -1)
    header = np.full(len(role), -1, dtype=np.int32)
    header_mask = in_response & header_rows(role, doc)
    header[header_mask] = response_of_doc[header_mask]
    control_of_doc = docs.control[doc]
    carrier = np.array([ROLE_CODE[CONTROL_ROLE[c]] for c in CONTROLS])[control_of_doc]
    control = np.where((control_of_doc >= 0) & (role == carrier), control_of_doc, -1)
    return RowKinds(
        control_response=np.where(control >= 0, docs.control_response[doc], -1),
        token=table["token_id"],
        response=response,
        group=group,
        trigger=trigger,
        header=header,
        template=in_response & (role == ROLE_CODE["template"]),
        control=control,
    )


def doc_blocks(
    token_start: np.ndarray, token_count: np.ndarray, block_tokens: int
) -> list[tuple[int, int]]:
    """(start, stop) row ranges of whole consecutive transcripts, about block_tokens rows each."""
    blocks = []
    start = stop = 0
    for first, count in zip(token_start, token_count, strict=True):
        if stop - start >= block_tokens:
            blocks.append((start, stop))
            start = int(first)
        stop = int(first + count)
    if stop > start:
        blocks.append((start, stop))
    return blocks


def store_blocks(provenance: pd.DataFrame, block_tokens: int) -> list[tuple[int, int]]:
    """doc_blocks of a store from its provenance (one row per transcript)."""
    return doc_blocks(
        provenance["token_start"].to_numpy(), provenance["token_count"].to_numpy(), block_tokens
    )


def add_counts(counts: np.ndarray, ids: np.ndarray) -> None:
    """counts[i] += occurrences of i in `ids` (non-negative), touching only the span of ids."""
    if len(ids):
        first = int(ids.min())
        found = np.bincount(ids - first)
        counts[first : first + len(found)] += found


def assistant_tokens(
    store: ActivationStore, provenance: pd.DataFrame, block_tokens: int
) -> np.ndarray:
    """[n_transcripts] assistant tokens per transcript, reading the token table block by block."""
    counts = np.zeros(len(provenance), dtype=np.int64)
    for start, stop in store_blocks(provenance, block_tokens):
        table = store.token_rows(start, stop)
        add_counts(counts, table["doc"][table["role"] == ROLE_CODE["assistant"]])
    return counts
