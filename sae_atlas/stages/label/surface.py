"""Surface form: how much of a feature's activation the current token's id alone predicts.

A lookup table of each feature's mean activation per token id, fitted on train response tokens,
predicts its activation on held-out response tokens (an id never seen in train gets the train
mean over all tokens). The held-out R^2 = 1 - SSE / SST (SST around the held-out mean) is the
share of the feature's held-out variance that the current token's surface form explains: about
0 or below for a feature the token id does not predict (the table then only adds noise), near 1
for one that reads punctuation, whitespace, list markers or a pronoun. The `format` tag takes
R^2 >= LabelConfig.format_min_r2 (0.5: the token id alone explains most of the variance on
unseen text, so the feature is first of all a detector of that form).

SSE decomposes per token id (sum, sum of squares and count of the held-out activations, and the
train mean), so one streamed pass suffices. Cost: per block a few index_add_ over the response
rows; memory 3 x [distinct held-out token ids, d_sae] float32 plus [d_sae] totals.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from feature_store.activations import ActivationStore
from feature_store.schema import ROLE_CODE
from sae_atlas.stages.label.accumulate import Block, Selection, Statistic, response_ids
from sae_atlas.stages.label.inputs import HELDOUT, TRAIN, Responses
from sae_atlas.stages.label.rows import store_blocks


def heldout_token_ids(
    store: ActivationStore, provenance: pd.DataFrame, responses: Responses, block_tokens: int
) -> np.ndarray:
    """Sorted distinct token ids of the held-out responses' tokens (reads the token table)."""
    heldout_doc = np.zeros(len(provenance), dtype=bool)
    heldout_doc[responses.doc[responses.split == HELDOUT]] = True
    found: set[int] = set()
    for start, stop in store_blocks(provenance, block_tokens):
        table = store.token_rows(start, stop)
        rows = heldout_doc[table["doc"]] & (table["role"] == ROLE_CODE["assistant"])
        found.update(np.unique(table["token_id"][rows]).tolist())
    return np.array(sorted(found), dtype=np.int64)


class SurfaceForm(Statistic):
    """Per held-out token id: train sums and counts, held-out sums, sums of squares and counts of
    every feature's activation on response tokens; `result()` the held-out R^2 [d_sae]."""

    def __init__(
        self, token_ids: np.ndarray, responses: Responses, n_features: int, device: torch.device
    ) -> None:
        super().__init__(response_ids)
        self.token_ids = token_ids
        self.split = responses.split
        shape = (len(token_ids), n_features)
        self.train_sum = torch.zeros(shape, device=device)
        self.train_count = torch.zeros(len(token_ids), device=device)
        self.heldout_sum = torch.zeros(shape, device=device)
        self.heldout_square = torch.zeros(shape, device=device)
        self.heldout_count = torch.zeros(len(token_ids), device=device)
        self.all_train_sum = torch.zeros(n_features, dtype=torch.float64, device=device)
        self.all_train_count = 0

    def add(self, selected: Selection, block: Block) -> None:
        tokens = block.kinds.token[block.encoded[selected.where]]
        position = np.searchsorted(self.token_ids, tokens).clip(0, max(len(self.token_ids) - 1, 0))
        known = self.token_ids[position] == tokens if len(self.token_ids) else np.zeros(0, bool)
        split = self.split[selected.ids]
        values = selected.values
        device = values.device
        train = split == TRAIN
        self.all_train_sum += values[torch.from_numpy(train).to(device)].double().sum(0)
        self.all_train_count += int(train.sum())
        for rows, sums, counts, squares in (
            (train & known, self.train_sum, self.train_count, None),
            ((split == HELDOUT) & known, self.heldout_sum, self.heldout_count, self.heldout_square),
        ):
            index = torch.from_numpy(position[rows]).to(device)
            chosen = values[torch.from_numpy(rows).to(device)]
            sums.index_add_(0, index, chosen)
            counts.index_add_(0, index, torch.ones(len(index), device=device))
            if squares is not None:
                squares.index_add_(0, index, chosen.square())

    def result(self) -> np.ndarray:
        """[d_sae] held-out R^2 of the token-id table (NaN for a feature silent on held-out
        tokens)."""
        fallback = self.all_train_sum / max(self.all_train_count, 1)
        seen = self.train_count > 0
        mean = torch.where(
            seen[:, None],
            self.train_sum.double() / self.train_count.clamp(min=1)[:, None].double(),
            fallback[None, :],
        )
        count = self.heldout_count.double()[:, None]
        sums, squares = self.heldout_sum.double(), self.heldout_square.double()
        sse = (squares - 2 * mean * sums + count * mean.square()).sum(0)
        total = count.sum()
        sst = squares.sum(0) - sums.sum(0).square() / total.clamp(min=1)
        r2 = 1 - sse / sst
        return torch.where(sst > 1e-12, r2, torch.nan).cpu().numpy()


FORMAT_LEVELS: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9)
"""The summary counts features at or above each of these held-out R^2 levels, so the effect of
the threshold is visible."""


def format_summary(r2: np.ndarray, threshold: float) -> dict[str, object]:
    """JSON-ready: the threshold, how many features reach it and each of FORMAT_LEVELS, how many
    have an R^2 at all (fire on held-out tokens), and the median R^2 of those."""
    scored = r2[np.isfinite(r2)]
    return {
        "threshold": threshold,
        "n_format": int((scored >= threshold).sum()),
        "n_scored": len(scored),
        "median_r2": float(np.median(scored)) if len(scored) else None,
        "at_least": {str(level): int((scored >= level).sum()) for level in FORMAT_LEVELS},
    }
