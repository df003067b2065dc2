"""The accumulators of the labeling pass on hand-built blocks: each gives its statistic of the
rows it reads, whatever the blocks the items fall in."""

from __future__ import annotations

import numpy as np
import torch

from sae_atlas.stages.label.accumulate import (
    Block,
    Maxima,
    Means,
    Totals,
    first_response_ids,
    response_ids,
)
from sae_atlas.stages.label.rows import RowKinds


def kinds_of(response: list[int]) -> RowKinds:
    """RowKinds with only response rows (the rest -1 / False)."""
    ids = np.array(response, dtype=np.int32)
    none = np.full(len(ids), -1, dtype=np.int32)
    return RowKinds(ids, ids, none, none, np.zeros(len(ids), bool), none, none, ids)


def block_of(start: int, response: list[int], acts: np.ndarray) -> Block:
    """A block whose every row is encoded, with codes `acts` [rows, d] (and as residual)."""
    codes = torch.from_numpy(acts.astype(np.float32))
    return Block(start, kinds_of(response), np.arange(len(response)), codes, codes)


def test_first_response_ids_count_each_responses_own_rows():
    # response 1 has two turns: its rows are not consecutive in the block
    kinds = kinds_of([-1, 0, 0, 0, -1, 1, 1, -1, 1, 2])
    assert first_response_ids(2)(kinds).tolist() == [-1, 0, 0, -1, -1, 1, 1, -1, -1, 2]
    assert first_response_ids(9)(kinds).tolist() == kinds.response.tolist()


def test_means_maxima_and_totals_over_blocks():
    rng = np.random.default_rng(0)
    response = [[0, 0, -1, 2], [-1, 1, 1, 1, 3]]  # block 2 spans item 2 of block 1
    acts = [np.maximum(rng.normal(size=(len(r), 3)), 0) for r in response]
    means = Means(4, 3, response_ids)
    rates = Means(4, 3, response_ids, Block.fires)
    maxima = Maxima(4, 3, response_ids)
    totals = Totals(4, 3, torch.device("cpu"), response_ids)
    for start, (rows, values) in zip((0, 4), zip(response, acts, strict=True), strict=True):
        block = block_of(start, rows, values)
        for statistic in (means, rates, maxima, totals):
            statistic.update(block)
    rows = np.concatenate([np.array(r) for r in response])
    values = np.concatenate(acts)
    for item in range(4):
        mine = values[rows == item]
        np.testing.assert_allclose(means.result()[item], mine.mean(0), rtol=1e-6)
        np.testing.assert_allclose(rates.result()[item], (mine > 0).mean(0))
        np.testing.assert_allclose(maxima.result()[item], mine.max(0), rtol=1e-6)
    tokens, sums, fires = totals.result()
    assert tokens.tolist() == [2, 3, 1, 1]
    np.testing.assert_allclose(sums[1], values[rows == 1].sum(0), rtol=1e-6)
    np.testing.assert_array_equal(fires[1], (values[rows == 1] > 0).sum(0))
