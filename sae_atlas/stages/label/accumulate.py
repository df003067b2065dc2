"""The streamed SAE pass: one small accumulator per statistic, fed block by block.

`stream` reads an activation store one block of whole transcripts at a time, encodes with the
SAE only the rows some statistic needs (`Statistic.needs`), and hands each `Block` to every
statistic's `update`; each statistic's `result()` is then its final value. A statistic reads the
rows of one kind (`RowIds`: responses, assistant headers, trigger responses, controls...) and one
value of them (`Value`: SAE codes, firing indicators, the raw residual).

Cost: one SAE encoder pass per encoded row (O(d_model x d_sae)); memory, per block, its
token-table rows, RowKinds and [encoded rows, d_sae] codes (on the SAE's device); per statistic,
its own arrays (documented on each); never a per-token table of the whole store.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sae_lens import SAE

from feature_store.activations import ActivationStore
from sae_atlas.heap import release_free_heap
from sae_atlas.stages.base import CountProgress
from sae_atlas.stages.label.inputs import Responses
from sae_atlas.stages.label.rows import DocKinds, RowKinds, add_counts, row_kinds

RowIds = Callable[[RowKinds], np.ndarray]
"""[rows] the item (response, persona, TriggerSet row, control...) each row of a block counts
for; -1: none."""


@dataclass(frozen=True)
class Selection:
    """The encoded rows of a block that a RowIds gives an item: where: [s] positions among the
    encoded rows; ids: [s] their items; values: [s, d] the chosen value of each."""

    where: np.ndarray
    ids: np.ndarray
    values: torch.Tensor


@dataclass
class Block:
    """One block of whole transcripts: start: its first store row; kinds: what its rows count
    for; encoded: [b] positions of the rows some statistic needs; raw: [b, d_model] float32
    residual of those rows; acts: [b, d_sae] float32 SAE codes (both on the SAE's device)."""

    start: int
    kinds: RowKinds
    encoded: np.ndarray
    raw: torch.Tensor
    acts: torch.Tensor
    last: tuple[Any, Selection] | None = field(default=None, repr=False)

    def select(self, rows: RowIds, value: Value) -> Selection:
        """The Selection of `rows` with `value`; the last one is kept, so statistics of the same
        rows and value, updated one after the other, share one gather."""
        if self.last is None or self.last[0] != (rows, value):
            ids = rows(self.kinds)
            where = np.flatnonzero(ids[self.encoded] >= 0)
            self.last = (
                (rows, value),
                Selection(where, ids[self.encoded[where]], value(self, where)),
            )
        return self.last[1]

    def store_rows(self, where: np.ndarray) -> np.ndarray:
        """[s] store rows of encoded rows at positions `where`."""
        return self.encoded[where] + self.start

    def _at(self, where: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(where).to(self.acts.device)

    def codes(self, where: np.ndarray) -> torch.Tensor:
        """[s, d_sae] SAE codes of encoded rows at positions `where`."""
        return self.acts[self._at(where)]

    def fires(self, where: np.ndarray) -> torch.Tensor:
        """[s, d_sae] 1.0 where a feature fires (code > 0), else 0.0."""
        return (self.codes(where) > 0).float()

    def residual(self, where: np.ndarray) -> torch.Tensor:
        """[s, d_model] the raw residual of encoded rows at positions `where`."""
        return self.raw[self._at(where)]


Value = Callable[[Block, np.ndarray], torch.Tensor]
"""What a statistic reads of the selected rows: Block.codes, Block.fires or Block.residual."""


class Statistic(ABC):
    """One statistic of the pass: it reads one value (`read`) of the rows that `rows` gives an
    item, is updated with each block (`update`) and gives its value after the pass (`result`)."""

    def __init__(self, rows: RowIds, read: Value = Block.codes) -> None:
        self.rows, self.read = rows, read

    def needs(self, kinds: RowKinds) -> np.ndarray:
        """bool [rows]: the rows `rows` gives an item."""
        return self.rows(kinds) >= 0

    def update(self, block: Block) -> None:
        """Adds the block's rows of this statistic, if it has any."""
        selected = block.select(self.rows, self.read)
        if len(selected.ids):
            self.add(selected, block)

    @abstractmethod
    def add(self, selected: Selection, block: Block) -> None:
        """Adds the `selected` rows (at least one) of `block`."""


def response_ids(kinds: RowKinds) -> np.ndarray:
    """Response rows: the row of the Responses of each assistant token."""
    return kinds.response


def header_ids(kinds: RowKinds) -> np.ndarray:
    """Assistant-header rows: the row of the Responses of the response after them."""
    return kinds.header


def trigger_ids(kinds: RowKinds) -> np.ndarray:
    """Response rows of the TriggerSet's transcripts: its row."""
    return kinds.trigger


def first_response_ids(k: int) -> RowIds:
    """Response rows among the first k tokens of their response."""

    def first(kinds: RowKinds) -> np.ndarray:
        ids = kinds.response
        rows = np.flatnonzero(ids >= 0)  # one response's rows are consecutive among them
        starts = np.r_[0, np.flatnonzero(np.diff(ids[rows])) + 1]
        position = np.arange(len(rows)) - np.repeat(starts, np.diff(np.r_[starts, len(rows)]))
        out = np.full(len(ids), -1, dtype=ids.dtype)
        out[rows[position < k]] = ids[rows[position < k]]
        return out

    return first


def _span(ids: np.ndarray) -> tuple[int, int]:
    """(first, n): the items first .. first + n - 1 that `ids` spans."""
    first = int(ids.min())
    return first, int(ids.max()) - first + 1


def segment_max(index: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    """[n, d] maximum of the rows of values [s, d] with each index [s] (0 where none; values are
    non-negative)."""
    out = torch.zeros((n, values.shape[1]), dtype=values.dtype, device=values.device)
    return out.scatter_reduce_(0, index.long()[:, None].expand_as(values), values, "amax")


class Means(Statistic):
    """[n, d] float32: per item, the mean of what it reads over the item's rows (they all lie in
    one block: a response's, its header's and a control transcript's do; the items of a block
    need not be consecutive, and items absent from it keep their value)."""

    def __init__(self, n: int, d: int, rows: RowIds, read: Value = Block.codes) -> None:
        super().__init__(rows, read)
        self.mean = np.zeros((n, d), dtype=np.float32)

    def add(self, selected: Selection, block: Block) -> None:
        first, n = _span(selected.ids)
        index = torch.from_numpy(selected.ids - first).to(selected.values.device)
        sums = torch.zeros((n, selected.values.shape[1]), device=selected.values.device)
        sums.index_add_(0, index, selected.values)
        counts = np.bincount(selected.ids - first, minlength=n)
        present = np.flatnonzero(counts)
        self.mean[first + present] = sums.cpu().numpy()[present] / counts[present, None]

    def result(self) -> np.ndarray:
        return self.mean


class Maxima(Statistic):
    """[n, d] `dtype`: per item, the maximum of what it reads over the item's rows (0 without
    any)."""

    def __init__(
        self, n: int, d: int, rows: RowIds, read: Value = Block.codes, dtype: Any = np.float32
    ) -> None:
        super().__init__(rows, read)
        self.max = np.zeros((n, d), dtype=dtype)

    def add(self, selected: Selection, block: Block) -> None:
        first, n = _span(selected.ids)
        index = torch.from_numpy(selected.ids - first).to(selected.values.device)
        span = slice(first, first + n)
        maxima = segment_max(index, selected.values, n).cpu().numpy()
        self.max[span] = np.maximum(self.max[span], maxima)

    def result(self) -> np.ndarray:
        return self.max


class PersonaMaxSums(Statistic):
    """[P, d_sae] float64: per persona, the sum over its responses of each response's maximum."""

    def __init__(self, responses: Responses, n_features: int, device: torch.device) -> None:
        super().__init__(response_ids)
        self.persona = responses.persona
        shape = (len(responses.names), n_features)
        self.sums = torch.zeros(shape, dtype=torch.float64, device=device)

    def add(self, selected: Selection, block: Block) -> None:
        first, n = _span(selected.ids)
        device = selected.values.device
        maxima = segment_max(torch.from_numpy(selected.ids - first).to(device), selected.values, n)
        present = np.unique(selected.ids) - first
        personas = torch.from_numpy(self.persona[present + first]).to(device)
        self.sums.index_add_(0, personas, maxima[torch.from_numpy(present).to(device)].double())

    def result(self) -> np.ndarray:
        return self.sums.cpu().numpy()


class Totals(Statistic):
    """Per item (persona and split, persona, control...): its rows [n] int64, and float64
    activation sums and firing counts [n, d_sae]."""

    def __init__(self, n: int, n_features: int, device: torch.device, rows: RowIds) -> None:
        super().__init__(rows)
        self.tokens = np.zeros(n, dtype=np.int64)
        self.sums = torch.zeros((n, n_features), dtype=torch.float64, device=device)
        self.fires = torch.zeros((n, n_features), dtype=torch.float64, device=device)

    def add(self, selected: Selection, block: Block) -> None:
        add_counts(self.tokens, selected.ids)
        index = torch.from_numpy(selected.ids).to(selected.values.device)
        self.sums.index_add_(0, index, selected.values.double())
        self.fires.index_add_(0, index, (selected.values > 0).double())

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """tokens [n], sums [n, d_sae], fires [n, d_sae]."""
        return self.tokens, self.sums.cpu().numpy(), self.fires.cpu().numpy()


class ResidualSums(Statistic):
    """[n, d_model] float64: per item, the sum of the raw residual over its rows."""

    def __init__(self, n: int, d_model: int, device: torch.device, rows: RowIds) -> None:
        super().__init__(rows, Block.residual)
        self.sums = torch.zeros((n, d_model), dtype=torch.float64, device=device)

    def add(self, selected: Selection, block: Block) -> None:
        index = torch.from_numpy(selected.ids).to(selected.values.device)
        self.sums.index_add_(0, index, selected.values.double())

    def result(self) -> np.ndarray:
        return self.sums.cpu().numpy()


def template_ids(kinds: RowKinds) -> np.ndarray:
    """Template rows of sampled transcripts: 0."""
    return np.where(kinds.template, 0, -1)


class TemplateFires(Statistic):
    """Template rows of sampled transcripts: their count, and per feature how many it fires on
    ([d_sae] float64)."""

    def __init__(self, n_features: int, device: torch.device) -> None:
        super().__init__(template_ids)
        self.tokens = 0
        self.fires = torch.zeros(n_features, dtype=torch.float64, device=device)

    def add(self, selected: Selection, block: Block) -> None:
        self.tokens += len(selected.ids)
        self.fires += (selected.values > 0).double().sum(0)

    def result(self) -> tuple[int, np.ndarray]:
        return self.tokens, self.fires.cpu().numpy()


class TopExamples(Statistic):
    """Per feature the k largest activations on response rows and their store rows, [k, d_sae]
    each (row -1: none)."""

    def __init__(self, k: int, n_features: int, device: torch.device) -> None:
        super().__init__(response_ids)
        self.value = torch.full((k, n_features), -1.0, device=device)
        self.row = torch.full((k, n_features), -1, dtype=torch.int64, device=device)

    def add(self, selected: Selection, block: Block) -> None:
        acts = selected.values
        rows = _feature_rows(block, selected)
        best = acts.topk(min(self.value.shape[0], len(acts)), dim=0)
        merged = torch.cat([self.value, best.values])
        merged_rows = torch.cat([self.row, rows.gather(0, best.indices)])
        self.value, order = merged.topk(self.value.shape[0], dim=0)
        self.row = merged_rows.gather(0, order)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """value [k, d_sae], row [k, d_sae] (-1 where the value is not positive)."""
        value = self.value.cpu().numpy()
        return value, np.where(value > 0, self.row.cpu().numpy(), -1)


def _feature_rows(block: Block, selected: Selection) -> torch.Tensor:
    """[s, d_sae] the store row of each selected row, repeated per feature."""
    rows = torch.from_numpy(block.store_rows(selected.where)).to(selected.values.device)
    return rows.expand(selected.values.shape[1], -1).T


class FiringSample(Statistic):
    """Per feature a uniform sample of `size` response rows where it fires (reservoir sampling
    with keys drawn from `generator`): activations and store rows, [size, d_sae] each (row -1:
    none)."""

    def __init__(
        self, size: int, n_features: int, device: torch.device, generator: torch.Generator
    ) -> None:
        super().__init__(response_ids)
        self.generator = generator
        self.key = torch.full((size, n_features), 2.0, device=device)
        self.value = torch.zeros((size, n_features), device=device)
        self.row = torch.full((size, n_features), -1, dtype=torch.int64, device=device)

    def add(self, selected: Selection, block: Block) -> None:
        acts = selected.values
        keys = torch.rand(acts.shape, generator=self.generator, device=acts.device)
        keys[acts <= 0] = 2.0
        merged_keys = torch.cat([self.key, keys])
        chosen = merged_keys.topk(self.key.shape[0], dim=0, largest=False).indices
        self.key = merged_keys.gather(0, chosen)
        self.value = torch.cat([self.value, acts]).gather(0, chosen)
        self.row = torch.cat([self.row, _feature_rows(block, selected)]).gather(0, chosen)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """value [size, d_sae], row [size, d_sae] (-1: no firing row drawn)."""
        row = self.row.cpu().numpy()
        row[self.key.cpu().numpy() > 1] = -1
        return self.value.cpu().numpy(), row


@torch.inference_mode()
def stream(
    store: ActivationStore,
    sae: SAE[Any] | None,
    hook: str,
    docs: DocKinds,
    responses: Responses,
    statistics: Sequence[Statistic],
    blocks: Sequence[tuple[int, int]],
    progress: CountProgress | None = None,
) -> None:
    """One pass over `store` at `hook` that updates every statistic with every block (`blocks`:
    (start, stop) row ranges of whole transcripts: rows.store_blocks); progress(rows)
    after each. sae None: no SAE codes ([b, 0]), for statistics of the raw residual only."""
    device = torch.device("cpu") if sae is None else sae.W_dec.device
    for start, stop in blocks:
        kinds = row_kinds(store.token_rows(start, stop), docs, responses)
        needed = np.zeros(stop - start, dtype=bool)
        for statistic in statistics:
            needed |= statistic.needs(kinds)
        encoded = np.flatnonzero(needed)
        raw, acts = _encode(store, sae, hook, (start, stop), encoded, device)
        block = Block(start, kinds, encoded, raw, acts)
        for statistic in statistics:
            statistic.update(block)
        release_free_heap()  # so that the heap does not creep up block by block
        if progress is not None:
            progress(stop - start)


def _encode(
    store: ActivationStore,
    sae: SAE[Any] | None,
    hook: str,
    block: tuple[int, int],
    encoded: np.ndarray,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The raw residual [b, d_model] and SAE codes [b, d_sae] (float32, on `device`) of the
    `encoded` rows of the block of store rows `block` (read only when there are some)."""
    n_features = 0 if sae is None else int(sae.cfg.d_sae)
    if not len(encoded):
        empty = torch.zeros((0, store.d_model), device=device)
        return empty, torch.zeros((0, n_features), device=device)
    raw = torch.from_numpy(store.acts(hook, *block)[encoded]).to(device).float()
    if sae is None:
        return raw, raw[:, :0]
    return raw, sae.encode(raw.to(sae.dtype)).float()
