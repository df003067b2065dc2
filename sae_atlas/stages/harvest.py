"""Harvest residual activations of transcripts at chosen hook points into the activation store.

The model runs only as deep as the deepest requested hook (`stop_at_layer`), all hooks are read
in one pass, transcripts are sorted by length and batched under a padded-token budget (right
padding, which a causal model never attends to, so no attention mask is needed), and padding is
never stored. Each batch is one commit of the store: a killed harvest resumes after its last
batch. Cost: one forward pass through the first L+1 layers per token; about 1,000-1,300
tokens/s through 16 layers of the default model on a 2-core CPU in float32. Memory: the model,
one batch (its transcripts are read from a TranscriptStore when the batch runs; the C heap's free
pages go back after each batch, `sae_atlas.heap`), and the order and length of each transcript
(16 bytes per transcript); nothing per token of the corpus, never the activations.

Sharded (under `torchrun` or `accelerate launch`, see `distributed`): rank r of W harvests the r-th
of W contiguous runs of the length-sorted transcripts, cut at equal token counts, into its own
shard store (`feature_store.activations.shard_path`); after a barrier rank 0 joins the shards into
`out` (`join_shards`, HDF5 virtual datasets), whose rows are in the order a single process writes.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from feature_store.activations import ActivationWriter, join_shards, shard_path
from feature_store.appendable import store_state, stored_config
from feature_store.schema import ACTIVATIONS_KIND, RUNTIME_ATTR
from feature_store.transcripts import Transcript, TranscriptStore
from sae_atlas.config import HarvestConfig, to_dict
from sae_atlas.errors import SaeAtlasError
from sae_atlas.heap import release_free_heap
from sae_atlas.model import ModelHandle, batch_activations, length_batches
from sae_atlas.model.dtype import refuse_other_dtype, runtime_json
from sae_atlas.stages.base import CountProgress, StageResult

BARRIER_TIMEOUT = timedelta(hours=24)
"""How long a rank waits at the barrier for the others (a resumed shard may be far behind)."""


@dataclass(frozen=True)
class HarvestResult(StageResult):
    """The stage's result, with the transcripts and tokens the harvested store holds."""

    n_transcripts: int
    n_tokens: int

    @property
    def tokens_per_second(self) -> float:
        return self.n_tokens / self.seconds if self.seconds > 0 else float("nan")


@dataclass(frozen=True)
class Shard:
    """This process's part of a sharded harvest: rank `rank` of `world_size`."""

    rank: int
    world_size: int


@contextmanager
def distributed(device: str) -> Iterator[tuple[Shard | None, str]]:
    """The process group torchrun / accelerate launch describe in RANK, WORLD_SIZE, LOCAL_RANK
    (and MASTER_ADDR / MASTER_PORT), joined for the block: gloo on cpu, nccl on cuda. Yields this
    process's Shard (None without WORLD_SIZE > 1) and its device (cuda becomes cuda:LOCAL_RANK)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        yield None, device
        return
    rank = int(os.environ["RANK"])
    on_cuda = torch.device(device).type == "cuda"
    if on_cuda and torch.device(device).index is None:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
    dist.init_process_group(
        "nccl" if on_cuda else "gloo",
        rank=rank,
        world_size=world_size,
        timeout=BARRIER_TIMEOUT,
        device_id=torch.device(device) if on_cuda else None,
    )
    try:
        yield Shard(rank, world_size), device
    finally:
        dist.destroy_process_group()


Transcripts = Sequence[Transcript] | TranscriptStore
"""A harvest's input: transcripts in memory, or a store whose transcripts are read when needed."""


@dataclass(frozen=True)
class LengthSorted:
    """The transcripts of `source` a harvest runs, in its order: input indices `index` [n] and
    their lengths `lengths` [n] (truncated to max_len), nothing per token. A run of them
    (`ordered[a:b]`) is read from the source at once (`read`)."""

    source: Transcripts
    index: np.ndarray
    lengths: np.ndarray
    max_len: int

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, run: slice) -> LengthSorted:
        return replace(self, index=self.index[run], lengths=self.lengths[run])

    @property
    def n_tokens(self) -> int:
        return int(self.lengths.sum())

    def read(self) -> list[Transcript]:
        """These transcripts, truncated to max_len, `source` set to their input index."""
        if isinstance(self.source, TranscriptStore):
            picked = self.source.read(self.index)
        else:
            picked = [self.source[int(i)] for i in self.index]
        return [
            replace(
                t, token_ids=t.token_ids[: self.max_len], roles=t.roles[: self.max_len], source=i
            )
            for t, i in zip(picked, self.index.tolist(), strict=True)
        ]


def length_sorted(transcripts: Transcripts, max_len: int) -> LengthSorted:
    """The transcripts in the order a harvest runs them: by length once truncated to max_len,
    equal lengths in input order. Reads only the lengths of a TranscriptStore."""
    if isinstance(transcripts, TranscriptStore):
        lengths = transcripts.lengths()
    else:
        lengths = np.array([len(t) for t in transcripts], dtype=np.int64)
    lengths = np.minimum(lengths, max_len)
    index = np.argsort(lengths, kind="stable")
    return LengthSorted(transcripts, index, lengths[index], max_len)


DIGEST_TOKENS = 1 << 20
"""Tokens read at a time to compute a harvest's input digest."""


def transcripts_digest(ordered: LengthSorted) -> str:
    """sha1 of every transcript's tokens and roles, in order: the identity of a harvest's input.
    Reads the transcripts in runs of about DIGEST_TOKENS tokens."""
    digest = hashlib.sha1()
    for run in length_batches(ordered.lengths, DIGEST_TOKENS, len(ordered)):
        for transcript in ordered[run].read():
            digest.update(np.asarray(transcript.token_ids, dtype=np.int32).tobytes())
            digest.update(np.asarray(transcript.roles, dtype=np.uint8).tobytes())
            digest.update(b"|")
    return digest.hexdigest()


def shard_share(ordered: LengthSorted, shard: Shard | None) -> LengthSorted:
    """The contiguous run of `ordered` that `shard` harvests (all of it for None): cut where the
    running token count crosses rank / world_size of the total, so ranks get about equal tokens
    and the shards, one after another, are in single-process order."""
    if shard is None:
        return ordered
    ends = np.concatenate([[0], np.cumsum(ordered.lengths)])
    cuts = np.searchsorted(ends, ends[-1] * np.arange(shard.world_size + 1) / shard.world_size)
    cuts[-1] = len(ordered)
    return ordered[int(cuts[shard.rank]) : int(cuts[shard.rank + 1])]


def harvest(
    transcripts: Transcripts | str | Path,
    out: str | Path,
    config: HarvestConfig,
    *,
    handle: ModelHandle,
    progress: CountProgress | None = None,
    shard: Shard | None = None,
) -> HarvestResult:
    """Write activations of `transcripts` (a list, a TranscriptStore or its path) at
    `config.hooks` with `handle` to the store at `out`.

    Resumes an incomplete store (or shard) for the same input and config; skips a complete one.
    With a `shard` (inside `distributed`), harvests this rank's share into its shard store, then
    waits for every rank and rank 0 joins the shards into `out`. `progress(n_tokens)` is called
    after each committed batch.
    """
    out = Path(out)
    source = TranscriptStore(transcripts) if isinstance(transcripts, str | Path) else transcripts
    check_inputs(source, handle, config)
    ordered = length_sorted(source, config.max_len)
    choice = handle.dtype_choice
    stage_config = {
        **to_dict(config),
        "dtype": choice.name,
        "input_digest": transcripts_digest(ordered),
        "n_transcripts": len(ordered),
    }
    started = time.monotonic()
    refuse_other_dtype(out, (stored_config(out, ACTIVATIONS_KIND) or {}).get("dtype"), choice)
    state = store_state(out, ACTIVATIONS_KIND, handle.model_id, stage_config)
    if state == "complete":
        return HarvestResult(out, 0.0, True, n_transcripts=len(ordered), n_tokens=ordered.n_tokens)
    if shard is None:
        written = write_store(handle, ordered, out, stage_config, config, progress)
    elif state == "incomplete":
        raise SaeAtlasError(
            f"{out}: an unfinished single-process harvest is there; finish it without torchrun "
            "or delete it"
        )
    else:
        share = shard_share(ordered, shard)
        path = shard_path(out, shard.rank, shard.world_size)
        identity = shard_identity(stage_config, share, shard)
        if store_state(path, ACTIVATIONS_KIND, handle.model_id, identity) != "complete":
            write_store(handle, share, path, identity, config, progress)
        written = join_when_all_done(out, shard, stage_config, ordered.n_tokens, started)
    seconds = time.monotonic() - started
    return HarvestResult(out, seconds, False, n_transcripts=len(ordered), n_tokens=written)


def check_inputs(transcripts: Transcripts, handle: ModelHandle, config: HarvestConfig) -> None:
    """SaeAtlasError when the model has no such hook, or a store was sampled from another
    model."""
    handle.check_hooks(config.hooks)
    if isinstance(transcripts, TranscriptStore) and transcripts.model != handle.model_id:
        raise SaeAtlasError(
            f"{transcripts.path}: was written with model {transcripts.model!r}, not "
            f"{handle.model_id!r}; pass the --model (and --adapter) it was written with"
        )


def shard_identity(
    stage_config: dict[str, Any], share: LengthSorted, shard: Shard
) -> dict[str, Any]:
    """The config a shard store records: the harvest's, plus the rank and its share's digest."""
    return {
        **stage_config,
        "shard": {
            "rank": shard.rank,
            "world_size": shard.world_size,
            "input_digest": transcripts_digest(share),
            "n_transcripts": len(share),
        },
    }


def join_when_all_done(
    out: Path, shard: Shard, stage_config: dict[str, Any], n_tokens: int, started: float
) -> int:
    """Wait for every rank's shard, join them into `out` on rank 0 (its seconds counted from
    `started`), wait for that; returns the `n_tokens` of the whole harvest."""
    dist.barrier()
    seconds = time.monotonic() - started
    if shard.rank == 0:
        join_shards(
            out,
            [shard_path(out, rank, shard.world_size) for rank in range(shard.world_size)],
            config=stage_config,
            attrs={"seconds": seconds, "tokens_per_second": n_tokens / max(seconds, 1e-9)},
        )
    dist.barrier()
    return n_tokens


def write_store(
    handle: ModelHandle,
    ordered: LengthSorted,
    out: Path,
    stage_config: dict[str, Any],
    config: HarvestConfig,
    progress: CountProgress | None,
) -> int:
    """Harvest `ordered` (length-sorted) into the store at `out`, resuming it after its last
    commit, and finish it; returns the tokens it holds."""
    started = time.monotonic()
    writer = ActivationWriter.open(
        out,
        model=handle.model_id,
        hooks=config.hooks,
        d_model=handle.d_model,
        config=stage_config,
        attrs={
            "dtype": handle.dtype_choice.name,
            RUNTIME_ATTR: runtime_json("harvest", handle.dtype_choice),
        },
    )
    done = len(writer)
    if progress is not None and done:
        progress(writer.n_tokens)
    pad_id = int(handle.tokenizer.pad_token_id or 0)
    new_tokens = 0
    try:
        todo = ordered[done:]
        for run in length_batches(todo.lengths, config.batch_tokens, config.max_batch):
            batch = todo[run].read()
            writer.append(batch, batch_activations(handle, batch, config.hooks, pad_id))
            release_free_heap()  # the batch's tensors are freed: their pages go back
            n = int(todo.lengths[run].sum())
            new_tokens += n
            if progress is not None:
                progress(n)
    except BaseException:
        writer.close()
        raise
    seconds = time.monotonic() - started
    writer.finish({"seconds": seconds, "tokens_per_second": new_tokens / max(seconds, 1e-9)})
    return writer.n_tokens
