"""Label SAE features: contrastive per-persona statistics, tags, feature cards, persona vectors.

What it computes. One pass over an activation store encodes, block by block (blocks end on
transcript boundaries, and only the rows some statistic needs are encoded), the residual
activations at one hook with the SAE, and accumulates without ever holding [n_tokens, d_sae]:
- per sampled response (conditions persona, default, no_system; its assistant tokens): the mean
  activation of every feature, [n_responses, d_sae], and the same mean over the assistant header
  before it;
- per transcript of a conditional persona, with its wrapper (condition persona) and without it
  (condition unwrapped, same system prompts and questions): the maximum of every feature on the
  user's message;
- per persona and split: token counts, activation sums, firing counts, sums of response maxima,
  and the mean raw residual (the persona vector); per persona on the assistant header (the
  template tokens just before a response), and per control condition (the same response text in
  a user turn, `user_control`, and outside the template, `plain_control`);
- per feature: the top activations and a uniform sample of firing tokens (for quantile examples).
From these it contrasts every persona against the default persona (conditions default and
no_system) on the same questions: AUROC and Cohen's d of response-level means, candidates chosen
on train questions, confirmed on held-out ones by a one-sided Mann-Whitney U test under
Benjamini-Hochberg control over every test made; trigger tests contrast the wrapped against the
unwrapped user messages under the same system prompts, so a system prompt that mentions the
wrapper does not make a trigger. It tags features (`persona:<name>`, `roleplay`, `assistant`,
`puppeteer`, `trigger:<wrapper>`), finds template features (and per persona the header feature
that best separates it from the default, chosen on train, scored on held-out), builds a card per
feature (top and quantile contexts, promoted / suppressed tokens through the unembedding, top
personas, a short label), decodes personas from SAE profiles (nearest centroid or logistic
regression fitted on train questions; each half of the held-out questions is scored by the one
best on the other half), and repeats
the contrast with shuffled persona labels as a negative control.

Cost: one SAE encoder pass per encoded row (O(d_model x d_sae)); memory about
8 x n_responses x d_sae bytes (plus 2 x d_sae per transcript of a conditional persona) plus one
block of [block_tokens, d_sae] with its token-table rows; nothing per token of the whole store
(the token table is read block by block, for the pass and for the example contexts); per
transcript, its provenance and DocKinds (12 bytes); the contrasts rank [n_responses, d_sae]
once per persona; the unembedding product runs in blocks of features. Returns `Labels`
(feature_store.labels); `label_stage` writes it to labels.h5 and skips when that file is complete
for the same inputs and config.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import h5py
import numpy as np
import pandas as pd
import torch
from sae_lens import SAE
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from feature_store.activations import ActivationStore
from feature_store.errors import StoreError
from feature_store.labels import LABELS_KIND, Labels, save_labels
from feature_store.schema import LIST_SEPARATOR, ROLE_CODE
from feature_store.transcripts import TranscriptStore
from sae_atlas.config import LabelConfig, to_dict
from sae_atlas.errors import SaeAtlasError
from sae_atlas.heap import release_free_heap
from sae_atlas.model import ModelHandle, final_norm_weight
from sae_atlas.model.dtype import DtypeChoice
from sae_atlas.personas import Catalogue
from sae_atlas.sae import load_sae, sae_digest
from sae_atlas.stages.corpus import SAMPLED_CONDITIONS, UNWRAPPED
from sae_atlas.stages.train import open_store as open_complete_store
from sae_atlas.stats import auroc_and_effect, benjamini_hochberg, mann_whitney_p

Progress = Callable[[int], None]
"""progress(n_tokens) after each encoded block."""

CONTROLS: tuple[str, ...] = ("user_control", "plain_control")
CONTROL_ROLE = {"user_control": "user", "plain_control": "plain"}
"""The role that carries the response text in each control condition."""
PRINTABLE = {code: "\ufffd" for code in range(32)} | {ord("\n"): "\\n", ord("\t"): " "}
"""Decoded text shown in contexts and lists: newlines as `\\n`, other control characters as U+FFFD
(HDF5 strings cannot hold NUL)."""
SUMMARY_FEATURES = 50
"""At most this many features are listed per kind in the summary."""
DECODERS: tuple[str, ...] = ("centroid", "logistic(C=0.01)", "logistic(C=0.1)")
"""Persona decoder candidates (fit_decoder names), fitted on train questions; the one that scores
a held-out response is chosen on the other half of the held-out questions (persona_decoder)."""
TRAIN, HELDOUT = 0, 1


# ---------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Responses:
    """The sampled responses of a store: transcripts of a sampled condition with assistant tokens.

    doc: [n] transcript rows; persona: [n] rows of `names` (the default family under the default
    persona); split: [n] TRAIN, HELDOUT or -1; question: [n] question ids.
    """

    doc: np.ndarray
    persona: np.ndarray
    split: np.ndarray
    question: np.ndarray
    names: tuple[str, ...]
    default: int

    def __len__(self) -> int:
        return len(self.doc)


@dataclass(frozen=True)
class TriggerSet:
    """The user messages the trigger tests compare: each conditional persona's transcripts with
    its wrapper (condition persona) and without it (condition unwrapped), pairs that share the
    persona, system-prompt variant and question.

    doc: [m] transcript rows; wrapper: [m] index into `wrappers`; wrapped: [m] bool; split: [m]
    TRAIN, HELDOUT or -1.
    """

    doc: np.ndarray
    wrapper: np.ndarray
    wrapped: np.ndarray
    split: np.ndarray
    wrappers: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.doc)


def catalogue_from_corpus(path: str | Path) -> Catalogue:
    """The catalogue a corpus store (transcripts.h5) was sampled from."""
    try:
        store = TranscriptStore(path)
    except StoreError as error:
        raise SaeAtlasError(
            f"{error}; give the transcripts.h5 written by `sae-atlas corpus`"
        ) from None
    if "catalogue_data" not in store.config:
        raise SaeAtlasError(
            f"{path}: records no catalogue; give the transcripts.h5 written by `sae-atlas corpus`"
        )
    return Catalogue.from_dict({"source": f"{path} (catalogue)", **store.config["catalogue_data"]})


def find_responses(
    provenance: pd.DataFrame, response_tokens: np.ndarray, catalogue: Catalogue | None
) -> Responses:
    """The responses of `provenance` (one row per transcript) with at least one response token.

    response_tokens: [n_transcripts] assistant tokens per transcript. Personas are ordered as in
    the catalogue (the default first otherwise); without a catalogue the default persona is the
    one of the default / no_system transcripts.
    """
    sampled = provenance["condition"].isin(list(SAMPLED_CONDITIONS)).to_numpy() & (
        response_tokens > 0
    )
    default_rows = sampled & provenance["condition"].isin(["default", "no_system"]).to_numpy()
    if not default_rows.any():
        raise SaeAtlasError(
            "the store has no default / no_system responses, so nothing to contrast personas "
            "against; build the corpus with conditions default and no_system"
        )
    if catalogue is not None:
        default_name = catalogue.default_persona.name
    else:
        names_found = sorted(set(provenance.loc[default_rows, "persona"]))
        if len(names_found) != 1:
            raise SaeAtlasError(
                f"default / no_system transcripts name several personas {names_found}; pass the "
                "catalogue"
            )
        default_name = names_found[0]
    present = set(provenance.loc[sampled, "persona"]) | {default_name}
    order = [default_name, *sorted(present - {default_name})]
    if catalogue is not None:
        listed = [name for name in catalogue.names if name in present]
        order = listed + sorted(present - set(listed))
    index = {name: i for i, name in enumerate(order)}
    rows = provenance[sampled]
    persona = np.array([index[name] for name in rows["persona"]], dtype=np.int64)
    persona[default_rows[sampled]] = index[default_name]
    return Responses(
        doc=np.flatnonzero(sampled),
        persona=persona,
        split=split_codes(rows["split"]),
        question=rows["question_id"].to_numpy(dtype=object),
        names=tuple(order),
        default=index[default_name],
    )


def split_codes(splits: pd.Series) -> np.ndarray:
    """[n] TRAIN, HELDOUT or -1 for split names."""
    code = {"train": TRAIN, "heldout": HELDOUT}
    return np.array([code.get(s, -1) for s in splits], dtype=np.int64)


def find_triggers(provenance: pd.DataFrame, catalogue: Catalogue | None) -> TriggerSet | None:
    """The TriggerSet of `provenance` (one row per transcript): for each conditional persona of
    the catalogue, its persona and unwrapped transcripts that have a partner of the other kind
    (same variant and question). None without a catalogue or without any such pair (a corpus
    sampled without the unwrapped condition)."""
    if catalogue is None:
        return None
    wrapper_of = {
        item.name: item.trigger.open.strip().replace(";", ",")
        for item in catalogue.personas
        if item.trigger is not None
    }
    conditional = provenance["persona"].isin(list(wrapper_of)).to_numpy()
    condition = provenance["condition"].to_numpy(dtype=object)
    wrapped = conditional & (condition == "persona")
    unwrapped = conditional & (condition == UNWRAPPED)
    key = (
        provenance["persona"].astype(str)
        + "|"
        + provenance["variant"].astype(str)
        + "|"
        + provenance["question_id"].astype(str)
    ).to_numpy(dtype=object)
    shared = np.intersect1d(key[wrapped], key[unwrapped])
    rows = np.flatnonzero((wrapped | unwrapped) & np.isin(key, shared))
    if not len(rows):
        return None
    names = [wrapper_of[name] for name in provenance["persona"].iloc[rows]]
    wrappers = tuple(sorted(set(names)))
    return TriggerSet(
        doc=rows,
        wrapper=np.array([wrappers.index(name) for name in names], dtype=np.int64),
        wrapped=wrapped[rows],
        split=split_codes(provenance["split"].iloc[rows]),
        wrappers=wrappers,
    )


# ---------------------------------------------------------------------------- the pass


@dataclass
class RowKinds:
    """What each row of a block of store rows counts for, [rows] each (-1: nothing).

    response: response row; group: persona * 2 + (0 train, 1 otherwise) of response rows;
    user: TriggerSet row whose user's message holds the row; header: response row of the
    assistant-header rows before it; template: template rows of sampled transcripts; control:
    index into CONTROLS of rows carrying the response text of a control of one of the responses
    (same job seed: the store's `source` is the transcript's own row in the corpus once
    harvested).
    """

    response: np.ndarray
    group: np.ndarray
    user: np.ndarray
    header: np.ndarray
    template: np.ndarray
    control: np.ndarray

    def needed(self) -> np.ndarray:
        return (
            (self.response >= 0)
            | (self.user >= 0)
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


@dataclass(frozen=True)
class DocKinds:
    """What each transcript (row of the provenance) counts for, [n_transcripts] each (-1:
    nothing): response: row of the Responses; trigger: row of the TriggerSet; control: index
    into CONTROLS of the controls of one of the responses (same job seed: the store's `source` is
    the transcript's own row in the corpus once harvested)."""

    response: np.ndarray
    trigger: np.ndarray
    control: np.ndarray


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
    return DocKinds(response=response, trigger=trigger, control=control)


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
    user = np.where(role == ROLE_CODE["user"], docs.trigger[doc], -1)
    header = np.full(len(role), -1, dtype=np.int32)
    header_mask = in_response & header_rows(role, doc)
    header[header_mask] = response_of_doc[header_mask]
    control_of_doc = docs.control[doc]
    carrier = np.array([ROLE_CODE[CONTROL_ROLE[c]] for c in CONTROLS])[control_of_doc]
    control = np.where((control_of_doc >= 0) & (role == carrier), control_of_doc, -1)
    return RowKinds(
        response=response,
        group=group,
        user=user,
        header=header,
        template=in_response & (role == ROLE_CODE["template"]),
        control=control,
    )


@dataclass
class FeatureStatistics:
    """What one pass accumulates (P personas, F = d_sae features, K top examples, R samples).

    response_mean: [n_responses, F] float32 mean activation over each response's tokens;
    response_tokens: [n_responses]; header_mean: [n_responses, F] float32 mean over the
    assistant header before each response; user_max: [m, F] float16 maximum on the user's message of
    each TriggerSet row (None without one); group_tokens: [P, 2] response tokens per persona and
    split (0 train, 1 other); group_sum / group_fires: [P, 2, F]; group_vector: [P, 2, d_model]
    residual sums; persona_max_sum: [P, F] sums of response maxima; header_tokens: [P];
    header_sum / header_fires: [P, F]; template_tokens; template_fires: [F]; control_tokens: [C];
    control_sum / control_fires: [C, F] (C = CONTROLS); top_value / top_row: [K, F] (row -1:
    none); sample_value / sample_row: [R, F] a uniform sample of firing response rows (row -1:
    none).
    """

    response_mean: np.ndarray
    response_tokens: np.ndarray
    header_mean: np.ndarray
    user_max: np.ndarray | None
    group_tokens: np.ndarray
    group_sum: np.ndarray
    group_fires: np.ndarray
    group_vector: np.ndarray
    persona_max_sum: np.ndarray
    header_tokens: np.ndarray
    header_sum: np.ndarray
    header_fires: np.ndarray
    template_tokens: int
    template_fires: np.ndarray
    control_tokens: np.ndarray
    control_sum: np.ndarray
    control_fires: np.ndarray
    top_value: np.ndarray
    top_row: np.ndarray
    sample_value: np.ndarray
    sample_row: np.ndarray


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


def _keep_top(
    values: torch.Tensor, rows: torch.Tensor, new_values: torch.Tensor, new_rows: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge [k, F] running values / rows with [b, F] new ones, keeping the k largest values."""
    merged = torch.cat([values, new_values])
    merged_rows = torch.cat([rows, new_rows])
    top, order = merged.topk(values.shape[0], dim=0)
    return top, merged_rows.gather(0, order)


def _segment_max(index: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    """[n, F] maximum of the rows of values [b, F] with each index [b] (0 where none; values are
    non-negative SAE activations)."""
    out = torch.zeros((n, values.shape[1]), dtype=values.dtype, device=values.device)
    return out.scatter_reduce_(0, index.long()[:, None].expand_as(values), values, "amax")


def _select(mask: np.ndarray, rows: np.ndarray, acts: torch.Tensor) -> tuple:
    """Positions (into `rows` / `acts` [b, F]) of the rows where the block's bool `mask` holds,
    and their activations."""
    where = np.flatnonzero(mask[rows])
    return where, acts[torch.from_numpy(where).to(acts.device)]


@torch.inference_mode()
def collect(
    store: ActivationStore,
    sae: SAE[Any],
    hook: str,
    responses: Responses,
    config: LabelConfig,
    progress: Progress | None = None,
    triggers: TriggerSet | None = None,
) -> FeatureStatistics:
    """One pass over `store` at `hook`: the FeatureStatistics of `responses` (and the user
    messages of `triggers`).

    Reads one block of whole transcripts at a time; encoding and every running statistic stay on
    the SAE's device. Memory: per block, its token-table rows and RowKinds; per transcript, the
    provenance and DocKinds; per response, the statistics ([n_responses, d_sae]); never a
    per-token table of the whole store, nor [n_tokens, d_model]."""
    provenance = store.provenance()
    docs = doc_kinds(provenance, responses, triggers)
    n_personas, n_features = len(responses.names), int(sae.cfg.d_sae)
    device = sae.W_dec.device
    generator = torch.Generator(device=device).manual_seed(config.seed)
    group_tokens = np.zeros(2 * n_personas, dtype=np.int64)
    response_tokens = np.zeros(len(responses), dtype=np.int64)
    header_tokens = np.zeros(n_personas, dtype=np.int64)
    control_tokens = np.zeros(len(CONTROLS), dtype=np.int64)
    template_tokens = 0
    response_mean = np.zeros((len(responses), n_features), dtype=np.float32)
    header_mean = np.zeros((len(responses), n_features), dtype=np.float32)
    user_max = None if triggers is None else np.zeros((len(triggers), n_features), dtype=np.float16)
    zeros = functools.partial(torch.zeros, device=device)
    group_sum = zeros((2 * n_personas, n_features), dtype=torch.float64)
    group_fires = zeros((2 * n_personas, n_features), dtype=torch.float64)
    group_vector = zeros((2 * n_personas, store.d_model), dtype=torch.float64)
    persona_max_sum = zeros((n_personas, n_features), dtype=torch.float64)
    header_sum = zeros((n_personas, n_features), dtype=torch.float64)
    header_fires = zeros((n_personas, n_features), dtype=torch.float64)
    template_fires = zeros(n_features, dtype=torch.float64)
    control_sum = zeros((len(CONTROLS), n_features), dtype=torch.float64)
    control_fires = zeros((len(CONTROLS), n_features), dtype=torch.float64)
    full = functools.partial(torch.full, device=device)
    top_value = full((config.top_examples, n_features), -1.0)
    top_row = full((config.top_examples, n_features), -1, dtype=torch.int64)
    sample_key = full((config.reservoir, n_features), 2.0)
    sample_value = zeros((config.reservoir, n_features))
    sample_row = full((config.reservoir, n_features), -1, dtype=torch.int64)
    for start, stop in store_blocks(provenance, config.block_tokens):
        kinds = row_kinds(store.token_rows(start, stop), docs, responses)
        add_counts(group_tokens, kinds.group[kinds.group >= 0])
        add_counts(response_tokens, kinds.response[kinds.response >= 0])  # whole responses
        add_counts(header_tokens, responses.persona[kinds.header[kinds.header >= 0]])
        add_counts(control_tokens, kinds.control[kinds.control >= 0])
        template_tokens += int(kinds.template.sum())
        local = np.flatnonzero(kinds.needed())
        if len(local):
            raw = torch.from_numpy(store.acts(hook, start, stop)[local]).to(device).float()
            acts = sae.encode(raw.to(sae.dtype)).float()  # [b, F]
            rows = local + start
            where, response_acts = _select(kinds.response >= 0, local, acts)
            if len(where):
                ids = kinds.response[local[where]]
                first = int(ids.min())
                index = torch.from_numpy(ids - first).to(device)
                n_local = int(ids.max()) - first + 1
                sums = zeros((n_local, n_features)).index_add_(0, index, response_acts)
                maxima = _segment_max(index, response_acts, n_local)
                span = slice(first, first + n_local)
                counts = np.maximum(response_tokens[span], 1)[:, None]
                response_mean[span] = sums.cpu().numpy() / counts
                present = np.unique(ids) - first
                personas = torch.from_numpy(responses.persona[present + first]).to(device)
                persona_max_sum.index_add_(
                    0, personas, maxima[torch.from_numpy(present).to(device)].double()
                )
                groups = torch.from_numpy(kinds.group[local[where]]).to(device)
                group_sum.index_add_(0, groups, response_acts.double())
                group_fires.index_add_(0, groups, (response_acts > 0).double())
                group_vector.index_add_(0, groups, raw[torch.from_numpy(where).to(device)].double())
                block_rows = torch.from_numpy(rows[where]).to(device).expand(n_features, -1).T
                best = response_acts.topk(min(config.top_examples, len(where)), dim=0)
                top_value, top_row = _keep_top(
                    top_value, top_row, best.values, block_rows.gather(0, best.indices)
                )
                keys = torch.rand(response_acts.shape, generator=generator, device=device)
                keys[response_acts <= 0] = 2.0
                merged_keys = torch.cat([sample_key, keys])
                chosen = merged_keys.topk(config.reservoir, dim=0, largest=False).indices
                sample_key = merged_keys.gather(0, chosen)
                sample_value = torch.cat([sample_value, response_acts]).gather(0, chosen)
                sample_row = torch.cat([sample_row, block_rows]).gather(0, chosen)
            if user_max is not None:
                where, user_acts = _select(kinds.user >= 0, local, acts)
                if len(where):
                    ids = kinds.user[local[where]]
                    first = int(ids.min())
                    n_local = int(ids.max()) - first + 1
                    maxima = _segment_max(
                        torch.from_numpy(ids - first).to(device), user_acts, n_local
                    )
                    span = slice(first, first + n_local)
                    user_max[span] = np.maximum(user_max[span], maxima.cpu().numpy())
            where, header_acts = _select(kinds.header >= 0, local, acts)
            if len(where):
                ids = kinds.header[local[where]]  # a header and its response are in one block
                first = int(ids.min())
                index = torch.from_numpy(ids - first).to(device)
                n_local = int(ids.max()) - first + 1
                sums = zeros((n_local, n_features)).index_add_(0, index, header_acts)
                counts = np.maximum(np.bincount(ids - first, minlength=n_local), 1)[:, None]
                header_mean[first : first + n_local] = sums.cpu().numpy() / counts
                personas = torch.from_numpy(responses.persona[ids]).to(device)
                header_sum.index_add_(0, personas, header_acts.double())
                header_fires.index_add_(0, personas, (header_acts > 0).double())
            _, template_acts = _select(kinds.template, local, acts)
            template_fires += (template_acts > 0).double().sum(0)
            where, control_acts = _select(kinds.control >= 0, local, acts)
            if len(where):
                codes = torch.from_numpy(kinds.control[local[where]]).to(device)
                control_sum.index_add_(0, codes, control_acts.double())
                control_fires.index_add_(0, codes, (control_acts > 0).double())
        release_free_heap()  # so that the heap does not creep up block by block
        if progress is not None:
            progress(stop - start)
    sample_row[sample_key > 1] = -1
    by_persona = (n_personas, 2)
    return FeatureStatistics(
        response_mean=response_mean,
        response_tokens=response_tokens,
        header_mean=header_mean,
        user_max=user_max,
        group_tokens=group_tokens.reshape(by_persona),
        group_sum=group_sum.cpu().numpy().reshape(*by_persona, n_features),
        group_fires=group_fires.cpu().numpy().reshape(*by_persona, n_features),
        group_vector=group_vector.cpu().numpy().reshape(*by_persona, store.d_model),
        persona_max_sum=persona_max_sum.cpu().numpy(),
        header_tokens=header_tokens,
        header_sum=header_sum.cpu().numpy(),
        header_fires=header_fires.cpu().numpy(),
        template_tokens=template_tokens,
        template_fires=template_fires.cpu().numpy(),
        control_tokens=control_tokens,
        control_sum=control_sum.cpu().numpy(),
        control_fires=control_fires.cpu().numpy(),
        top_value=top_value.cpu().numpy(),
        top_row=np.where(top_value.cpu().numpy() > 0, top_row.cpu().numpy(), -1),
        sample_value=sample_value.cpu().numpy(),
        sample_row=sample_row.cpu().numpy(),
    )


def persona_statistics(stats: FeatureStatistics, responses: Responses) -> dict[str, np.ndarray]:
    """Per persona and feature over all its responses, each [P, F]: firing_rate (share of response
    tokens), mean_act (mean activation where it fires), response_mean (mean over responses of the
    response-level mean) and response_max (mean over responses of the response-level maximum)."""
    tokens = stats.group_tokens.sum(1)[:, None]
    fires = stats.group_fires.sum(1)
    n_responses = np.bincount(responses.persona, minlength=len(responses.names))[:, None]
    response_sum = np.zeros_like(stats.persona_max_sum)
    np.add.at(response_sum, responses.persona, stats.response_mean)
    return {
        "firing_rate": fires / np.maximum(tokens, 1),
        "mean_act": stats.group_sum.sum(1) / np.maximum(fires, 1),
        "response_mean": response_sum / np.maximum(n_responses, 1),
        "response_max": stats.persona_max_sum / np.maximum(n_responses, 1),
    }


# ---------------------------------------------------------------------------- contrasts


@dataclass
class Contrast:
    """Every persona against the default persona, and the tests made.

    train_auroc / train_effect / heldout_auroc / effect: [P, F] (NaN in the default's row and
    where a persona has too few responses in a split; train_effect: Cohen's d on train questions;
    effect: Cohen's d over all questions, the score of top personas). tests: one row per test:
    kind (persona, roleplay, assistant, trigger), feature, target (persona or wrapper),
    train_score, heldout_score, p_value, q_value (Benjamini-Hochberg over all rows), holds.
    """

    train_auroc: np.ndarray
    train_effect: np.ndarray
    heldout_auroc: np.ndarray
    effect: np.ndarray
    tests: pd.DataFrame


def paired_rows(
    responses: Responses, persona: np.ndarray, p: int, split: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of persona p and of the default on the questions both answered (split: None = any)."""
    in_split = np.ones(len(responses), bool) if split is None else responses.split == split
    mine = in_split & (persona == p)
    default = in_split & (persona == responses.default)
    shared = np.intersect1d(responses.question[mine], responses.question[default])
    mine &= np.isin(responses.question, shared)
    default &= np.isin(responses.question, shared)
    return np.flatnonzero(mine), np.flatnonzero(default)


def _test_rows(kind: str, features: np.ndarray, target: str, **columns: Any) -> pd.DataFrame:
    return pd.DataFrame({"kind": kind, "feature": features, "target": target, **columns})


def contrast(
    response_mean: np.ndarray,
    responses: Responses,
    config: LabelConfig,
    triggers: TriggerSet | None = None,
    user_max: np.ndarray | None = None,
    persona: np.ndarray | None = None,
) -> Contrast:
    """Contrast personas against the default on response-level means [n_responses, F].

    Candidates are chosen on train questions, tested on held-out ones; `persona` replaces
    `responses.persona` (the shuffled-label control); `triggers` with `user_max` [m, F] (its
    user messages' maxima) enables the trigger tests.
    """
    persona = responses.persona if persona is None else persona
    n_personas, n_features = len(responses.names), response_mean.shape[1]
    shape = (n_personas, n_features)
    train_auroc, train_effect, heldout_auroc, effect = (np.full(shape, np.nan) for _ in range(4))
    tests: list[pd.DataFrame] = []
    others = [p for p in range(n_personas) if p != responses.default]
    for p in others:
        train_rows, train_default = paired_rows(responses, persona, p, TRAIN)
        heldout_rows, heldout_default = paired_rows(responses, persona, p, HELDOUT)
        all_rows, all_default = paired_rows(responses, persona, p, None)
        if len(all_rows) >= 2 and len(all_default) >= 2:
            _, effect[p] = auroc_and_effect(response_mean[all_rows], response_mean[all_default])
        if min(len(train_rows), len(train_default), len(heldout_rows), len(heldout_default)) < 2:
            continue
        train_auroc[p], train_effect[p] = auroc_and_effect(
            response_mean[train_rows], response_mean[train_default]
        )
        heldout_auroc[p], _ = auroc_and_effect(
            response_mean[heldout_rows], response_mean[heldout_default]
        )
        candidates = np.flatnonzero(
            (train_auroc[p] >= config.auroc_min) & (train_effect[p] >= config.effect_min)
        )
        order = np.lexsort((-train_effect[p][candidates], -train_auroc[p][candidates]))
        candidates = candidates[order[: config.max_candidates]]
        p_values = mann_whitney_p(
            response_mean[heldout_rows][:, candidates],
            response_mean[heldout_default][:, candidates],
            "greater",
        )
        tests.append(
            _test_rows(
                "persona",
                candidates,
                responses.names[p],
                train_score=train_auroc[p][candidates],
                heldout_score=heldout_auroc[p][candidates],
                p_value=p_values,
                holds=heldout_auroc[p][candidates] >= config.heldout_auroc_min,
            )
        )
    tested = [p for p in others if not np.isnan(train_auroc[p]).all()]
    if len(tested) >= 2:
        tests += _broad_tests(
            response_mean, responses, persona, tested, train_auroc, heldout_auroc, config
        )
    if triggers is not None and user_max is not None:
        tests += _trigger_tests(user_max, triggers, config)
    table = (
        pd.concat(tests, ignore_index=True)
        if tests
        else _test_rows(
            "persona",
            np.zeros(0, np.int64),
            "",
            train_score=[],
            heldout_score=[],
            p_value=[],
            holds=[],
        )
    )
    table["q_value"] = benjamini_hochberg(table["p_value"].to_numpy())
    return Contrast(train_auroc, train_effect, heldout_auroc, effect, table)


def _broad_tests(
    response_mean: np.ndarray,
    responses: Responses,
    persona: np.ndarray,
    tested: list[int],
    train_auroc: np.ndarray,
    heldout_auroc: np.ndarray,
    config: LabelConfig,
) -> list[pd.DataFrame]:
    """roleplay (up in most personas) and assistant (up in the default) tests, pooled on
    held-out responses of every tested persona against the default's."""
    heldout = responses.split == HELDOUT
    pooled = np.flatnonzero(heldout & np.isin(persona, tested))
    default = np.flatnonzero(heldout & (persona == responses.default))
    low = 1 - config.auroc_min
    out = []
    for kind, alternative, train_share, heldout_share in (
        (
            "roleplay",
            "greater",
            (train_auroc[tested] >= config.auroc_min).mean(0),
            (heldout_auroc[tested] >= config.heldout_auroc_min).mean(0),
        ),
        (
            "assistant",
            "less",
            (train_auroc[tested] <= low).mean(0),
            (heldout_auroc[tested] <= 1 - config.heldout_auroc_min).mean(0),
        ),
    ):
        candidates = np.flatnonzero(train_share >= config.broad_share)
        p_values = mann_whitney_p(
            response_mean[pooled][:, candidates], response_mean[default][:, candidates], alternative
        )
        out.append(
            _test_rows(
                kind,
                candidates,
                kind,
                train_score=train_share[candidates],
                heldout_score=heldout_share[candidates],
                p_value=p_values,
                holds=heldout_share[candidates] >= config.broad_share,
            )
        )
    return out


def _trigger_tests(
    user_max: np.ndarray, triggers: TriggerSet, config: LabelConfig
) -> list[pd.DataFrame]:
    """trigger:<wrapper> tests on the maximum over the user's message [m, F] of the TriggerSet:
    fires in at least trigger_min_rate of the wrapped messages and separates them from the same
    conditional personas' unwrapped messages, same system prompts and questions (AUROC >=
    trigger_min_auroc), on train and on held-out questions."""
    values = user_max.astype(np.float32)
    out = []
    for w, name in enumerate(triggers.wrappers):
        scores = []
        for split in (TRAIN, HELDOUT):
            mine = (triggers.wrapper == w) & (triggers.split == split)
            wrapped = np.flatnonzero(mine & triggers.wrapped)
            other = np.flatnonzero(mine & ~triggers.wrapped)
            if min(len(wrapped), len(other)) < 2:
                break
            auroc, _ = auroc_and_effect(values[wrapped], values[other])
            rate = (values[wrapped] > 0).mean(0)
            scores.append((auroc, rate, wrapped, other))
        if len(scores) < 2:
            continue
        (train_auroc, train_rate, _, _), (heldout_auroc, heldout_rate, wrapped, other) = scores
        candidates = np.flatnonzero(
            (train_auroc >= config.trigger_min_auroc) & (train_rate >= config.trigger_min_rate)
        )
        out.append(
            _test_rows(
                "trigger",
                candidates,
                name,
                train_score=train_auroc[candidates],
                heldout_score=heldout_auroc[candidates],
                p_value=mann_whitney_p(
                    values[wrapped][:, candidates], values[other][:, candidates], "greater"
                ),
                holds=(heldout_auroc[candidates] >= config.trigger_min_auroc)
                & (heldout_rate[candidates] >= config.trigger_min_rate),
            )
        )
    return out


def contrast_tags(
    result: Contrast, responses: Responses, config: LabelConfig, categories: Sequence[str]
) -> list[list[str]]:
    """Tags per feature from the tests that hold with q <= fdr (puppeteer not included).

    categories: [P] catalogue category of each persona (family of persona tags).
    """
    n_features = result.train_auroc.shape[1]
    tags: list[list[str]] = [[] for _ in range(n_features)]
    passed = result.tests[(result.tests["q_value"] <= config.fdr) & result.tests["holds"]]
    n_others = len(responses.names) - 1
    category_of = dict(zip(responses.names, categories, strict=True))
    for feature, rows in passed.groupby("feature"):
        personas = sorted(rows.loc[rows["kind"] == "persona", "target"])
        one_family = len({category_of[name] for name in personas}) == 1
        narrow = len(personas) <= config.family_max or one_family
        if personas and len(personas) < config.broad_share * n_others and narrow:
            tags[int(feature)] += [f"persona:{name}" for name in personas]
        for kind in ("roleplay", "assistant"):
            if (rows["kind"] == kind).any():
                tags[int(feature)].append(kind)
        for name in sorted(rows.loc[rows["kind"] == "trigger", "target"]):
            tags[int(feature)].append(f"trigger:{name}")
    return tags


# ---------------------------------------------------------------------------- puppeteer, template


def puppeteer_features(
    stats: FeatureStatistics, responses: Responses, config: LabelConfig
) -> pd.DataFrame:
    """Per feature: persona_share (share of personas in at least puppeteer_min_response_share of
    whose responses it fires), cv (of the per-persona mean activation), enrichment over each
    control, and `puppeteer` (all criteria met; False without controls)."""
    tokens = stats.group_tokens.sum(1)
    present = tokens > 0
    means = stats.group_sum.sum(1)[present] / tokens[present, None]
    fires = stats.response_mean > 0
    response_share = np.stack(
        [fires[responses.persona == p].mean(0) for p in np.flatnonzero(present)]
    )
    dense = response_share >= config.puppeteer_min_response_share
    persona_share = dense.mean(0)
    default_dense = dense[np.flatnonzero(present) == responses.default].all(0)
    cv = means.std(0) / np.maximum(means.mean(0), 1e-12)
    assistant_mean = stats.group_sum.sum((0, 1)) / max(tokens.sum(), 1)
    table = pd.DataFrame({"persona_share": persona_share, "cv": cv})
    is_puppeteer = (
        (persona_share >= config.puppeteer_persona_share)
        & default_dense
        & (cv <= config.puppeteer_max_cv)
    )
    for code, condition in enumerate(CONTROLS):
        control_mean = stats.control_sum[code] / max(stats.control_tokens[code], 1)
        enrichment = assistant_mean / np.maximum(control_mean, 1e-12)
        table[f"enrichment_{condition}"] = enrichment
        is_puppeteer &= (stats.control_tokens[code] > 0) & (
            enrichment >= config.puppeteer_min_enrichment
        )
    table["puppeteer"] = is_puppeteer
    return table


def template_features(
    stats: FeatureStatistics, responses: Responses, density: np.ndarray, config: LabelConfig
) -> tuple[np.ndarray, dict[str, list[tuple[int, float, float]]]]:
    """Features of the assistant header: (ids firing on it at >= template_min_rate and
    >= template_min_enrichment x their response density, by header rate), and per persona the
    features whose header mean most exceeds the mean over personas: (id, header mean, excess)."""
    header_rate = stats.header_fires.sum(0) / max(stats.header_tokens.sum(), 1)
    chosen = np.flatnonzero(
        (header_rate >= config.template_min_rate)
        & (header_rate >= config.template_min_enrichment * density)
    )
    chosen = chosen[np.argsort(-header_rate[chosen], kind="stable")]
    present = stats.header_tokens > 0
    means = stats.header_sum[present] / stats.header_tokens[present, None]
    excess = means - means.mean(0)
    by_persona = {}
    for row, p in enumerate(np.flatnonzero(present)):
        best = np.argsort(-excess[row], kind="stable")[: config.top_personas]
        by_persona[responses.names[p]] = [
            (int(f), float(means[row, f]), float(excess[row, f]))
            for f in best
            if excess[row, f] > 0
        ]
    return chosen, by_persona


# ---------------------------------------------------------------------------- decoding personas


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def fit_decoder(
    name: str, profiles: np.ndarray, labels: np.ndarray
) -> Callable[[np.ndarray], np.ndarray]:
    """predict(profiles [m, F]) -> labels [m] of a decoder fitted on profiles [n, F] with labels
    [n]. name: `centroid` (cosine to the per-label mean profile) or `logistic(C=c)` (L2 logistic
    regression on standardised profiles, sklearn's C)."""
    if name == "centroid":
        names = np.unique(labels)
        centroids = unit_rows(np.stack([profiles[labels == n].mean(0) for n in names]))
        return lambda x: names[(unit_rows(x) @ centroids.T).argmax(1)]
    strength = float(name.removeprefix("logistic(C=").removesuffix(")"))
    model = make_pipeline(StandardScaler(), LogisticRegression(C=strength, max_iter=300, tol=1e-3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(profiles, labels)
    return cast(Callable[[np.ndarray], np.ndarray], model.predict)


def question_folds(questions: np.ndarray, n_folds: int) -> list[np.ndarray]:
    """The distinct question ids (sorted) dealt round robin into n_folds groups."""
    distinct = np.unique(questions)
    return [distinct[i::n_folds] for i in range(n_folds)]


def cross_fitted(
    correct: dict[str, np.ndarray], groups: np.ndarray
) -> tuple[np.ndarray, list[str]]:
    """Which candidate scores each row: rows [n] are dealt by their group (question) into two
    halves, and each half is scored by the candidate with the best accuracy on the other half
    (ties: the first in `correct`), so no row takes part in choosing what scores it.

    correct: {candidate: [n] bool}. Returns each row's correctness under its half's choice and
    the choice per half (one choice, the first candidate, with fewer than two groups).
    """
    names = list(correct)
    halves = question_folds(groups, 2)
    if len(halves[1]) == 0:
        return correct[names[0]], [names[0]]
    result = np.zeros(len(groups), bool)
    chosen = []
    for scored, choosing in ((0, 1), (1, 0)):
        on = np.isin(groups, halves[choosing])
        best = max(names, key=lambda name: correct[name][on].mean())
        rows = np.isin(groups, halves[scored])
        result[rows] = correct[best][rows]
        chosen.append(best)
    return result, chosen


def persona_decoder(response_mean: np.ndarray, responses: Responses) -> dict[str, Any]:
    """A persona decoder on response-level mean SAE activations, fitted on train questions and
    scored on held-out ones.

    Every candidate (DECODERS: nearest centroid, cosine; L2 logistic regression on standardised
    profiles) is fitted on every train response. Which one scores a held-out response is chosen
    on the other half of the held-out questions (cross_fitted), so held-out labels never choose
    the decoder that scores them. The choice is not made by cross-validation over the train
    questions: the SAE was trained on their tokens, and such a cross-validation picked the
    decoder that was weakest on unseen questions (quick atlas, 2026-11-27: nearest centroid
    0.116 in the CV and 0.095 held out, the logistic candidates 0.067-0.078 and 0.144-0.155).
    Returns the held-out accuracy, chance (the most frequent train persona's share of the
    held-out responses), the decoder (per half, joined by " / " when the halves differ), each
    candidate's held-out accuracy on its own (a diagnostic, never a choice) and the accuracy per
    persona.
    """
    train = responses.split == TRAIN
    heldout = responses.split == HELDOUT
    labels = np.unique(responses.persona[train])
    if not heldout.any() or len(labels) < 2:
        return {"accuracy": None, "chance": None, "n_heldout": int(heldout.sum())}
    persona = responses.persona
    truth = persona[heldout]
    predicted = {
        name: fit_decoder(name, response_mean[train], persona[train])(response_mean[heldout])
        for name in DECODERS
    }
    hits = {name: predicted[name] == truth for name in DECODERS}
    correct, chosen = cross_fitted(hits, responses.question[heldout])
    majority = labels[np.bincount(persona[train])[labels].argmax()]
    return {
        "accuracy": float(correct.mean()),
        "chance": float((truth == majority).mean()),
        "uniform_chance": 1 / len(labels),
        "decoder": " / ".join(dict.fromkeys(chosen)),
        "chosen_by_half": chosen,
        "candidates": {name: float(hit.mean()) for name, hit in hits.items()},
        "n_personas": len(labels),
        "n_heldout": int(heldout.sum()),
        "per_persona": {
            responses.names[p]: float(correct[truth == p].mean())
            for p in labels
            if (truth == p).any()
        },
    }


# ---------------------------------------------------------------------------- cards


class TokenText:
    """Token ids -> display text with the handle's tokenizer (ids as `#id` without one)."""

    def __init__(self, handle: ModelHandle | None) -> None:
        self.tokenizer = None if handle is None else handle.tokenizer
        self.cache: dict[int, str] = {}

    def decode_many(self, pieces: Sequence[Sequence[int] | np.ndarray]) -> list[str]:
        """Each list of token ids as one string, special tokens kept, made PRINTABLE."""
        if self.tokenizer is None:
            return [" ".join(f"#{i}" for i in ids) for ids in pieces]
        texts = self.tokenizer.batch_decode(
            [[int(i) for i in ids] for ids in pieces], skip_special_tokens=False
        )
        return [str(text).translate(PRINTABLE) for text in texts]

    def token(self, token_id: int) -> str:
        """One token for lists: stripped, or quoted when only whitespace."""
        if token_id not in self.cache:
            text = self.decode_many([[token_id]])[0]
            self.cache[token_id] = text.strip() or repr(text)
        return self.cache[token_id]


@torch.inference_mode()
def logit_tokens(
    sae: SAE[Any], handle: ModelHandle, n: int, block: int = 512
) -> tuple[list[str], list[str], bool]:
    """Tokens each decoder direction promotes / suppresses most: W_dec (times the final norm's
    weight, when found) @ W_U^T, [d_sae, vocab] in blocks of features. Returns the pos and neg
    lists (LIST_SEPARATOR-joined) and whether the norm weight was folded in."""
    directions = sae.W_dec.detach().float()  # [d_sae, d_model]
    unembedding = handle.hf_model.get_output_embeddings().weight.detach()
    unembedding = unembedding.to(directions.device, torch.float32)
    norm = final_norm_weight(handle)
    if norm is not None:
        directions = directions * norm.to(directions.device)
    text = TokenText(handle)
    pos: list[str] = []
    neg: list[str] = []
    for start in range(0, len(directions), block):
        logits = directions[start : start + block] @ unembedding.T  # [block, vocab]
        promoted, suppressed = logits.topk(n).indices.cpu(), (-logits).topk(n).indices.cpu()
        for ids, out in ((promoted, pos), (suppressed, neg)):
            out += [LIST_SEPARATOR.join(text.token(int(i)) for i in row) for row in ids]
    return pos, neg, norm is not None


def example_rows(stats: FeatureStatistics, config: LabelConfig) -> pd.DataFrame:
    """Top and quantile examples of every feature: feature, kind, rank, row (store row),
    activation."""
    records = []
    for feature in range(stats.top_value.shape[1]):
        top = stats.top_row[:, feature] >= 0
        for rank, (row, value) in enumerate(
            zip(stats.top_row[top, feature], stats.top_value[top, feature], strict=True)
        ):
            records.append((feature, "top", rank, int(row), float(value)))
        valid = stats.sample_row[:, feature] >= 0
        n_valid = int(valid.sum())
        if n_valid:
            order = np.argsort(stats.sample_value[valid, feature], kind="stable")
            quantiles = (np.arange(config.quantile_examples) + 0.5) / config.quantile_examples
            picks = np.unique(np.floor(quantiles * n_valid).astype(int))
            rows = stats.sample_row[valid, feature][order[picks]]
            values = stats.sample_value[valid, feature][order[picks]]
            for rank, (row, value) in enumerate(zip(rows, values, strict=True)):
                records.append((feature, "quantile", rank, int(row), float(value)))
    return pd.DataFrame(records, columns=["feature", "kind", "rank", "row", "activation"])


@dataclass(frozen=True)
class TokenRows:
    """The tokens at some store rows: rows [n] sorted, each once; token_id, doc, pos [n]; before /
    after: n arrays, the token ids up to context_tokens either side within the transcript."""

    rows: np.ndarray
    token_id: np.ndarray
    doc: np.ndarray
    pos: np.ndarray
    before: list[np.ndarray]
    after: list[np.ndarray]


def read_rows(
    store: ActivationStore, provenance: pd.DataFrame, rows: np.ndarray, config: LabelConfig
) -> TokenRows:
    """The TokenRows of store `rows` (config.context_tokens either side), reading only the blocks
    of whole transcripts that hold one of them."""
    unique = np.unique(rows)
    starts = provenance["token_start"].to_numpy()
    counts = provenance["token_count"].to_numpy()
    found: dict[str, list[np.ndarray]] = {"token_id": [], "doc": [], "pos": []}
    before, after = [], []
    for start, stop in store_blocks(provenance, config.block_tokens):
        lo, hi = np.searchsorted(unique, [start, stop])
        if lo == hi:
            continue
        table = store.token_rows(start, stop)
        local = unique[lo:hi] - start
        for name, values in found.items():
            values.append(table[name][local])
        token_ids = table["token_id"]
        for at, doc in zip(local, table["doc"][local], strict=True):
            first, last = starts[doc] - start, starts[doc] + counts[doc] - start
            before.append(token_ids[max(first, at - config.context_tokens) : at])
            after.append(token_ids[at + 1 : min(last, at + 1 + config.context_tokens)])
    column = {name: np.concatenate(v or [np.zeros(0, np.int32)]) for name, v in found.items()}
    return TokenRows(rows=unique, before=before, after=after, **column)


def examples_table(examples: pd.DataFrame, tokens: TokenRows, text: TokenText) -> pd.DataFrame:
    """The example_rows with their contexts (EXAMPLE_COLUMNS); tokens: the TokenRows of their
    rows."""
    at = np.searchsorted(tokens.rows, examples["row"].to_numpy())
    frame = examples.drop(columns="row")
    frame["context"] = [
        f"{b}[[{t}]]{a}"
        for b, t, a in zip(
            text.decode_many([tokens.before[i] for i in at]),
            text.decode_many([tokens.token_id[i : i + 1] for i in at]),
            text.decode_many([tokens.after[i] for i in at]),
            strict=True,
        )
    ]
    frame["doc"] = tokens.doc[at].astype(np.int64)
    frame["pos"] = tokens.pos[at] if len(frame) else []
    return frame[["feature", "kind", "rank", "doc", "pos", "activation", "context"]]


def top_tokens(
    stats: FeatureStatistics, token_ids: Mapping[int, int], text: TokenText, n: int
) -> list:
    """Per feature: the tokens of its top examples, most frequent first (LIST_SEPARATOR-joined)."""
    out = []
    for feature in range(stats.top_row.shape[1]):
        rows = stats.top_row[:, feature]
        counted = Counter(int(token_ids[r]) for r in rows[rows >= 0])
        out.append(LIST_SEPARATOR.join(text.token(t) for t, _ in counted.most_common(n)))
    return out


def card_label(tags: Sequence[str], tokens: str, pos_logits: str, fires: bool) -> str:
    """A short label: tags (persona names bare; `template` for an untagged template feature),
    then the top tokens and promoted tokens; `dead` when the feature never fired."""
    if not fires:
        return "dead"
    head = ", ".join(t.removeprefix("persona:") for t in tags) or "untagged"
    parts = [head]
    for name, listed in (("tokens", tokens), ("out", pos_logits)):
        items = [t for t in listed.split(LIST_SEPARATOR) if t][:3]
        if items:
            parts.append(f"{name}: {', '.join(items)}")
    return " | ".join(parts)


# ---------------------------------------------------------------------------- label


def open_store(store: str | Path | ActivationStore) -> ActivationStore:
    """`store` itself, or the complete activation store at that path."""
    return store if isinstance(store, ActivationStore) else open_complete_store(store)


def label_identity(
    store: ActivationStore,
    sae: SAE[Any],
    hook: str,
    config: LabelConfig,
    catalogue: Catalogue | None,
) -> dict[str, Any]:
    """What decides a Labels: config, hook, SAE parameters, store content, catalogue."""
    catalogue_json = "" if catalogue is None else json.dumps(catalogue.to_dict(), sort_keys=True)
    return {
        "label": to_dict(config),
        "hook": hook,
        "sae": {"d_sae": int(sae.cfg.d_sae), "sha1": sae_digest(sae)},
        "store": {
            "model": store.model,
            "n_tokens": store.n_tokens,
            "config_sha1": hashlib.sha1(
                json.dumps(store.config, sort_keys=True).encode()
            ).hexdigest(),
        },
        "catalogue_sha1": hashlib.sha1(catalogue_json.encode()).hexdigest() if catalogue else None,
    }


def _feature_list(
    ids: np.ndarray, labels: Sequence[str], **columns: np.ndarray
) -> list[dict[str, Any]]:
    """Up to SUMMARY_FEATURES features as JSON rows: id, label and their value of each column."""
    return [
        {"id": int(f), "label": labels[f], **{k: float(v[f]) for k, v in columns.items()}}
        for f in list(ids)[:SUMMARY_FEATURES]
    ]


def label(
    store: str | Path | ActivationStore,
    sae: SAE[Any],
    hook: str,
    config: LabelConfig,
    handle: ModelHandle | None = None,
    catalogue: Catalogue | None = None,
    progress: Progress | None = None,
) -> Labels:
    """Label every feature of `sae` on the activations of `store` at `hook`.

    handle: decodes contexts and gives the unembedding for logit tokens (None: token ids in
    contexts, no logit tokens). catalogue: persona categories, prompts and trigger wrappers
    (`catalogue_from_corpus` reads it from transcripts.h5); None infers the personas from the
    store and makes no trigger tests.
    """
    started = time.monotonic()
    store = open_store(store)
    store.check_hook(hook)
    if int(sae.cfg.d_in) != store.d_model:
        raise SaeAtlasError(
            f"the SAE reads d_in={sae.cfg.d_in} but {store.path} holds d_model={store.d_model} at "
            f"{hook}; give the SAE trained at this hook of this model"
        )
    if handle is not None and handle.model_id != store.model:
        raise SaeAtlasError(
            f"{store.path}: was harvested from {store.model!r}, but the model given is "
            f"{handle.model_id!r}; label with the same model"
        )
    provenance = store.provenance()
    responses = find_responses(
        provenance, assistant_tokens(store, provenance, config.block_tokens), catalogue
    )
    triggers = find_triggers(provenance, catalogue)
    stats = collect(store, sae, hook, responses, config, progress, triggers)

    n_features = int(sae.cfg.d_sae)
    categories = [
        catalogue.persona(name).category
        if catalogue is not None and name in catalogue.names
        else ""
        for name in responses.names
    ]
    result = contrast(stats.response_mean, responses, config, triggers, stats.user_max)
    tags = contrast_tags(result, responses, config, categories)
    puppeteer = puppeteer_features(stats, responses, config)
    for feature in np.flatnonzero(puppeteer["puppeteer"]):
        tags[feature].append("puppeteer")

    response_tokens = stats.group_tokens.sum()
    fires = stats.group_fires.sum((0, 1))
    density = fires / max(response_tokens, 1)
    text = TokenText(handle)
    examples = example_rows(stats, config)  # every top row of every feature among them
    example_tokens = read_rows(store, provenance, examples["row"].to_numpy(), config)
    token_of = dict(
        zip(example_tokens.rows.tolist(), example_tokens.token_id.tolist(), strict=True)
    )
    tokens = top_tokens(stats, token_of, text, 5)
    if handle is not None:
        pos_logits, neg_logits, folded = logit_tokens(sae, handle, config.logit_tokens)
    else:
        pos_logits, neg_logits, folded = [""] * n_features, [""] * n_features, False
    template = template_features(stats, responses, density, config)
    seen = fires + stats.template_fires + stats.control_fires.sum(0)
    template_ids = set(template[0].tolist())
    heads = [tags[f] or (["template"] if f in template_ids else []) for f in range(n_features)]
    labels = [
        card_label(heads[f], tokens[f], pos_logits[f], seen[f] > 0) for f in range(n_features)
    ]
    best_heldout = np.nan_to_num(result.heldout_auroc, nan=-np.inf).max(0)
    features = pd.DataFrame(
        {
            "density": density,
            "mean_act": stats.group_sum.sum((0, 1)) / np.maximum(fires, 1),
            "max_act": np.maximum(stats.top_value.max(0), 0),
            "tags": [";".join(t) for t in tags],
            "label": labels,
            "top_tokens": tokens,
            "pos_logits": pos_logits,
            "neg_logits": neg_logits,
            "heldout_auroc": np.where(np.isfinite(best_heldout), best_heldout, np.nan),
        }
    )
    top_index, top_score = top_personas(result.effect, config.top_personas)

    train_tokens = np.maximum(stats.group_tokens[:, TRAIN], 1)[:, None]
    train_responses = np.bincount(
        responses.persona[responses.split == TRAIN], minlength=len(responses.names)
    )
    personas = pd.DataFrame(
        {
            "name": list(responses.names),
            "category": categories,
            "prompts": [
                json.dumps(
                    list(catalogue.persona(n).prompts)
                    if catalogue is not None and n in catalogue.names
                    else []
                )
                for n in responses.names
            ],
            "n_responses": train_responses,
        }
    )
    summary = make_summary(
        stats,
        responses,
        triggers,
        result,
        tags,
        labels,
        puppeteer,
        template,
        density,
        config,
        folded,
    )
    summary["seconds"] = time.monotonic() - started
    return Labels(
        hook=hook,
        model=store.model,
        features=features,
        top_persona_index=top_index,
        top_persona_score=top_score,
        examples=examples_table(examples, example_tokens, text),
        personas=personas,
        persona_vectors=(stats.group_vector[:, TRAIN] / train_tokens).astype(np.float32),
        persona_profiles=(stats.group_sum[:, TRAIN] / train_tokens).astype(np.float32),
        default_persona=responses.names[responses.default],
        summary=summary,
        config=label_identity(store, sae, hook, config, catalogue),
    )


def top_personas(effect: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k personas with the largest positive effect [P, F] per feature: index [F, k] int32
    (-1: none) and score [F, k] float32 (Cohen's d against the default; NaN: none)."""
    scores = np.where(np.isnan(effect) | (effect <= 0), -np.inf, effect).T  # [F, P]
    k = min(k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    best = np.take_along_axis(scores, order, axis=1)
    index = np.where(np.isfinite(best), order, -1).astype(np.int32)
    return index, np.where(np.isfinite(best), best, np.nan).astype(np.float32)


def best_features(result: Contrast, responses: Responses) -> dict[int, int]:
    """Per contrasted persona (row of `responses.names`), its best feature on train questions:
    the highest train AUROC against the default, ties broken by the larger train Cohen's d."""
    return {
        p: int(np.lexsort((-result.train_effect[p], -result.train_auroc[p]))[0])
        for p in range(len(responses.names))
        if p != responses.default and not np.isnan(result.train_auroc[p]).all()
    }


def best_feature_table(
    result: Contrast, responses: Responses, labels: list[str]
) -> tuple[dict[str, dict[str, Any]], float | None]:
    """Per persona its best feature (`best_features`) with label, train and held-out AUROC, and
    the share of personas whose best feature reaches held-out AUROC 0.9 (None without any)."""
    table = {
        responses.names[p]: {
            "feature": feature,
            "label": labels[feature],
            "train_auroc": float(result.train_auroc[p, feature]),
            "heldout_auroc": float(result.heldout_auroc[p, feature]),
        }
        for p, feature in best_features(result, responses).items()
    }
    heldout = np.array([row["heldout_auroc"] for row in table.values()])
    return table, float(np.mean(heldout >= 0.9)) if len(heldout) else None


def make_summary(
    stats: FeatureStatistics,
    responses: Responses,
    triggers: TriggerSet | None,
    result: Contrast,
    tags: list[list[str]],
    labels: list[str],
    puppeteer: pd.DataFrame,
    template: tuple[np.ndarray, dict[str, list[tuple[int, float, float]]]],
    density: np.ndarray,
    config: LabelConfig,
    folded: bool,
) -> dict[str, Any]:
    """The JSON-ready figures of a labeling pass: counts (features, responses, personas; per tag
    and per kind of tag), the tests made and how many hold, per persona its best feature (chosen
    on train) with train and held-out AUROC, the share of personas whose best feature reaches
    held-out AUROC 0.9, the persona decoder, puppeteer and template features (with the same best
    feature and share on the assistant header's mean, where the model selects its persona; no
    tags come from it), the same tests on shuffled persona labels, and whether the logits fold in
    the final norm."""
    tag_counts = Counter(tag for feature_tags in tags for tag in feature_tags)
    kinds = Counter(tag.split(":")[0] for feature_tags in tags for tag in set(feature_tags))
    best_per_persona, share = best_feature_table(result, responses, labels)
    best_at_header, header_share = best_feature_table(
        contrast(stats.header_mean, responses, config), responses, labels
    )
    rng = np.random.default_rng(config.seed)
    shuffled = rng.permutation(responses.persona)
    shuffled_triggers = (
        None if triggers is None else replace(triggers, wrapped=rng.permutation(triggers.wrapped))
    )
    control = contrast(
        stats.response_mean, responses, config, shuffled_triggers, stats.user_max, shuffled
    )
    control_tags = contrast_tags(control, responses, config, [""] * len(responses.names))
    chosen_template, by_persona = template
    header_rate = stats.header_fires.sum(0) / max(stats.header_tokens.sum(), 1)
    tests = result.tests
    significant = tests[(tests["q_value"] <= config.fdr) & tests["holds"]]
    puppeteer_ids = np.flatnonzero(puppeteer["puppeteer"])
    return {
        "n_features": len(tags),
        "n_responses": len(responses),
        "n_personas": len(responses.names),
        "default_persona": responses.names[responses.default],
        "tag_counts": dict(sorted(tag_counts.items())),
        "kind_counts": dict(sorted(kinds.items())),
        "n_tagged": sum(bool(t) for t in tags),
        "trigger_tests": (
            "none: no conditional persona sampled with and without its wrapper (corpus "
            "condition unwrapped)"
            if triggers is None
            else {
                name: {
                    "wrapped": int((triggers.wrapped & (triggers.wrapper == w)).sum()),
                    "unwrapped": int((~triggers.wrapped & (triggers.wrapper == w)).sum()),
                }
                for w, name in enumerate(triggers.wrappers)
            }
        ),
        "tests": {
            "n_tested": len(tests),
            "n_significant": len(significant),
            "n_raw_p_below_fdr": int((tests["p_value"] <= config.fdr).sum()),
            "fdr": config.fdr,
            "by_kind": {str(k): int(v) for k, v in tests.groupby("kind").size().items()},
        },
        "best_heldout_auroc": best_per_persona,
        "share_personas_auroc_0.9": share,
        "decoder": persona_decoder(stats.response_mean, responses),
        "puppeteer_features": _feature_list(
            puppeteer_ids,
            labels,
            cv=puppeteer["cv"].to_numpy(),
            persona_share=puppeteer["persona_share"].to_numpy(),
            **{f"enrichment_{c}": puppeteer[f"enrichment_{c}"].to_numpy() for c in CONTROLS},
        ),
        "controls_present": {
            c: int(n) for c, n in zip(CONTROLS, stats.control_tokens, strict=True)
        },
        "template_features": {
            "features": _feature_list(
                chosen_template,
                labels,
                header_rate=header_rate,
                template_rate=stats.template_fires / max(stats.template_tokens, 1),
                response_rate=density,
            ),
            "by_persona": {
                name: [
                    {"id": f, "label": labels[f], "header_mean": mean, "excess": excess}
                    for f, mean, excess in rows
                ]
                for name, rows in by_persona.items()
            },
            "best_heldout_auroc": best_at_header,
            "share_personas_auroc_0.9": header_share,
        },
        "shuffled_control": {
            "n_tagged": sum(bool(t) for t in control_tags),
            "tag_counts": dict(
                sorted(Counter(t.split(":")[0] for ts in control_tags for t in ts).items())
            ),
            "n_significant": int(
                ((control.tests["q_value"] <= config.fdr) & control.tests["holds"]).sum()
            ),
        },
        "logits_final_norm_folded": folded,
    }


# ---------------------------------------------------------------------------- the stage


@dataclass(frozen=True)
class LabelResult:
    path: Path
    n_features: int
    seconds: float
    skipped: bool


def labels_config(path: Path) -> dict[str, Any] | None:
    """The config recorded in a complete labels.h5 at `path` (None: missing or incomplete)."""
    if not path.is_file():
        return None
    with h5py.File(path, "r") as file:
        if file.attrs.get("schema") != LABELS_KIND or not bool(file.attrs.get("complete", False)):
            return None
        return dict(json.loads(file.attrs["config"]))


def label_stage(
    store_path: str | Path,
    sae_path: str | Path,
    out: str | Path,
    config: LabelConfig,
    handle: ModelHandle | None = None,
    catalogue: Catalogue | None = None,
    progress: Progress | None = None,
) -> LabelResult:
    """Label the SAE at `sae_path` (its hook from its metadata) on `store_path` into `out`
    (labels.h5); skipped when `out` is complete for the same inputs and config."""
    out = Path(out)
    store = open_store(store_path)
    sae = load_sae(sae_path, device=config.device)
    hook = str(getattr(sae.cfg.metadata, "hook_name", "") or "")
    if not hook:
        raise SaeAtlasError(f"{sae_path}: the SAE records no hook_name; give it one in cfg.json")
    identity = json.loads(json.dumps(label_identity(store, sae, hook, config, catalogue)))
    existing = labels_config(out)
    if existing == identity:
        return LabelResult(out, int(sae.cfg.d_sae), 0.0, skipped=True)
    if out.exists():
        raise SaeAtlasError(
            f"{out}: holds labels of other inputs or another config; write to another --out or "
            "delete it"
        )
    started = time.monotonic()
    labels = label(store, sae, hook, config, handle, catalogue, progress)
    threads = torch.get_num_threads()
    runtime = DtypeChoice("float32", torch.float32, config.device, threads, "SAE codes in float32")
    save_labels(replace(labels, runtime={"label": runtime.record()}), out)
    return LabelResult(out, labels.d_sae, time.monotonic() - started, skipped=False)
