"""Feature cards: top and quantile example contexts, promoted / suppressed tokens through the
unembedding, top tokens and a short label per feature.

Cost: reads the token table only for the blocks of whole transcripts that hold an example row;
the unembedding product runs in blocks of features ([block, vocab]). Returns per-feature lists
of strings and the examples table (feature_store.labels EXAMPLE_COLUMNS).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from sae_lens import SAE

from feature_store.activations import ActivationStore
from feature_store.schema import LIST_SEPARATOR
from sae_atlas.config import LabelConfig
from sae_atlas.model import ModelHandle, final_norm_weight
from sae_atlas.stages.label.rows import store_blocks
from sae_atlas.stages.label.statistics import FeatureStatistics

PRINTABLE = {code: "\ufffd" for code in range(32)} | {ord("\n"): "\\n", ord("\t"): " "}
"""Decoded text shown in contexts and lists: newlines as `\\n`, other control characters as U+FFFD
(HDF5 strings cannot hold NUL)."""


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


@dataclass(frozen=True)
class Cards:
    """Per feature [F] each: top_tokens, pos_logits / neg_logits (empty without a handle) and
    labels (card_label); examples: the examples table (examples_table); folded: whether the
    logits fold in the final norm's weight."""

    top_tokens: list[str]
    pos_logits: list[str]
    neg_logits: list[str]
    labels: list[str]
    examples: pd.DataFrame
    folded: bool


def make_cards(
    store: ActivationStore,
    provenance: pd.DataFrame,
    sae: SAE[Any],
    handle: ModelHandle | None,
    stats: FeatureStatistics,
    tags: list[list[str]],
    template_ids: set[int],
    config: LabelConfig,
) -> Cards:
    """The Cards of every feature: its examples' contexts and tokens (read from `store`), its
    logit tokens through `handle`'s unembedding, and a label from its tags (`template` for an
    untagged feature among `template_ids`)."""
    n_features = int(sae.cfg.d_sae)
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
    seen = stats.group_fires.sum((0, 1)) + stats.template_fires + stats.control_fires.sum(0)
    heads = [tags[f] or (["template"] if f in template_ids else []) for f in range(n_features)]
    return Cards(
        top_tokens=tokens,
        pos_logits=pos_logits,
        neg_logits=neg_logits,
        labels=[
            card_label(heads[f], tokens[f], pos_logits[f], seen[f] > 0) for f in range(n_features)
        ],
        examples=examples_table(examples, example_tokens, text),
        folded=folded,
    )
