"""Harvest residual activations of transcripts at chosen hook points into the activation store.

The model runs only as deep as the deepest requested hook (`stop_at_layer`), all hooks are read
in one pass, transcripts are sorted by length and batched under a padded-token budget (right
padding, which a causal model never attends to, so no attention mask is needed), and padding is
never stored. Each batch is one commit of the store: a killed harvest resumes after its last
batch. Cost: one forward pass through the first L+1 layers per token; about 1,000-1,300
tokens/s through 16 layers of the default model on a 2-core CPU in float32.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from feature_store.activations import ActivationWriter
from feature_store.schema import ACTIVATIONS_KIND
from feature_store.transcripts import Transcript, store_state
from sae_atlas.config import HarvestConfig, to_dict
from sae_atlas.models import ModelHandle


@dataclass(frozen=True)
class HarvestResult:
    path: Path
    n_transcripts: int
    n_tokens: int
    seconds: float
    skipped: bool

    @property
    def tokens_per_second(self) -> float:
        return self.n_tokens / self.seconds if self.seconds > 0 else float("nan")


def transcripts_digest(transcripts: Sequence[Transcript]) -> str:
    """sha1 of every transcript's tokens and roles: the identity of a harvest's input."""
    digest = hashlib.sha1()
    for transcript in transcripts:
        digest.update(np.asarray(transcript.token_ids, dtype=np.int32).tobytes())
        digest.update(np.asarray(transcript.roles, dtype=np.uint8).tobytes())
        digest.update(b"|")
    return digest.hexdigest()


def length_sorted(transcripts: Sequence[Transcript], max_len: int) -> list[Transcript]:
    """Transcripts truncated to max_len, `source` set to their input index, sorted by length."""
    prepared = [
        replace(t, token_ids=t.token_ids[:max_len], roles=t.roles[:max_len], source=i)
        for i, t in enumerate(transcripts)
    ]
    return sorted(prepared, key=len)


def length_batches(
    transcripts: Sequence[Transcript], batch_tokens: int, max_batch: int
) -> Iterator[list[Transcript]]:
    """Consecutive batches whose padded size (rows x longest) stays within batch_tokens."""
    batch: list[Transcript] = []
    longest = 0
    for transcript in transcripts:
        longest_with = max(longest, len(transcript))
        if batch and (longest_with * (len(batch) + 1) > batch_tokens or len(batch) >= max_batch):
            yield batch
            batch, longest_with = [], len(transcript)
        batch.append(transcript)
        longest = longest_with
    if batch:
        yield batch


def padded(batch: Sequence[Transcript], pad_id: int) -> tuple[torch.Tensor, np.ndarray]:
    """Right-padded token ids [B, T] and a bool mask [B, T] of the real tokens."""
    longest = max(len(t) for t in batch)
    ids = np.full((len(batch), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(batch), longest), dtype=bool)
    for row, transcript in enumerate(batch):
        ids[row, : len(transcript)] = transcript.token_ids
        mask[row, : len(transcript)] = True
    return torch.from_numpy(ids), mask


@torch.inference_mode()
def residual_activations(
    handle: ModelHandle, tokens: torch.Tensor, hooks: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Activations [B, T, d_model] at each hook, running only the layers the hooks need."""
    deepest = max(handle.check_hooks(hooks))
    _, cache = handle.bridge.run_with_cache(
        tokens.to(handle.device),
        names_filter=list(hooks),
        stop_at_layer=deepest + 1,
    )
    return {hook: cache[hook] for hook in hooks}


def harvest(
    handle: ModelHandle,
    transcripts: Sequence[Transcript],
    out: str | Path,
    config: HarvestConfig,
    progress: Callable[[int], None] | None = None,
) -> HarvestResult:
    """Write activations of `transcripts` at `config.hooks` to the store at `out`.

    Resumes an incomplete store for the same input and config; skips a complete one.
    `progress(n_tokens)` is called after each committed batch.
    """
    out = Path(out)
    handle.check_hooks(config.hooks)
    ordered = length_sorted(transcripts, config.max_len)
    stage_config = {
        **to_dict(config),
        "input_digest": transcripts_digest(ordered),
        "n_transcripts": len(ordered),
    }
    started = time.monotonic()
    if store_state(out, ACTIVATIONS_KIND, handle.model_id, stage_config) == "complete":
        return HarvestResult(out, len(ordered), sum(len(t) for t in ordered), 0.0, skipped=True)
    writer = ActivationWriter.open(
        out,
        model=handle.model_id,
        hooks=config.hooks,
        d_model=handle.d_model,
        config=stage_config,
        attrs={"dtype": str(handle.dtype).removeprefix("torch.")},
    )
    done = len(writer)
    if progress is not None and done:
        progress(writer.n_tokens)
    pad_id = int(handle.tokenizer.pad_token_id or 0)
    new_tokens = 0
    try:
        for batch in length_batches(ordered[done:], config.batch_tokens, config.max_batch):
            tokens, mask = padded(batch, pad_id)
            acts = residual_activations(handle, tokens, config.hooks)
            flat_mask = torch.from_numpy(mask).to(handle.device)
            rows = {
                hook: value[flat_mask].to(torch.float16).cpu().numpy()
                for hook, value in acts.items()
            }
            writer.append(batch, rows)
            n = int(mask.sum())
            new_tokens += n
            if progress is not None:
                progress(n)
    except BaseException:
        writer.close()
        raise
    seconds = time.monotonic() - started
    writer.finish({"seconds": seconds, "tokens_per_second": new_tokens / max(seconds, 1e-9)})
    return HarvestResult(out, len(ordered), writer.n_tokens, seconds, skipped=False)
