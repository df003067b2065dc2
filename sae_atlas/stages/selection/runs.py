"""The runs of the persona-selection experiment: a grid of (persona, prompt variant, question),
sampled with and without residual patches, and the residual read at every position class.

`selection_grid` lays out the runs: each chosen persona with n_variants of its system prompts and
each question, and the default persona with n_variants of its neutral prompts on the same
questions; runs that share a question and variant index share a sampling seed (so a persona run,
its default run and every patched copy pair). `tail_residuals` reads the residual after a block at
the last positions of each prompt; `generate` samples responses with an optional patch: the
residual after block `layer` at the prompt positions [len - start, len - stop) replaced by given
vectors, during the prompt's forward pass only (the KV cache carries it to every new token).
`read_positions` re-reads prompt + response without hooks and returns the residual at each
position class (`positions`). Cost: one decode step per new token per batch, and one forward pass
per run to read it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from sae_atlas.errors import SaeAtlasError
from sae_atlas.model import (
    ChatTokens,
    Intervention,
    ModelHandle,
    SamplerSettings,
    decode,
    decoder_layers,
    job_seed,
    message,
    new_tokens_text,
    residual_activations,
    steered,
    stop_token_ids,
)
from sae_atlas.personas.catalogue import Catalogue
from sae_atlas.stages.selection.positions import PositionIndex, position_index


def neutral_prompts(catalogue: Catalogue) -> list[str]:
    """The default persona's system prompts that are neither null nor empty."""
    return [p for p in catalogue.default_persona.prompts if p]


def selection_grid(
    catalogue: Catalogue,
    personas: Sequence[str],
    n_variants: int,
    questions: Sequence[str],
    seed: int,
) -> pd.DataFrame:
    """One row per run: persona, is_default, variant, question (index into `questions`),
    question_text, system (prompt text), seed (shared by runs of the same question and
    variant). SaeAtlasError when a persona has fewer than n_variants prompts."""
    default = catalogue.default_persona.name
    rows = []
    for name in [default, *personas]:
        prompts = (
            neutral_prompts(catalogue)
            if name == default
            else [p for p in catalogue.persona(name).prompts if p]
        )
        if len(prompts) < n_variants:
            raise SaeAtlasError(
                f"persona {name!r} has {len(prompts)} system prompts; the selection experiment "
                f"needs n_variants={n_variants}: lower it or choose other personas"
            )
        for variant in range(n_variants):
            for q, text in enumerate(questions):
                rows.append(
                    {
                        "persona": name,
                        "is_default": name == default,
                        "variant": variant,
                        "question": q,
                        "question_text": text,
                        "system": prompts[variant],
                        "seed": job_seed(seed, "selection", q, variant),
                    }
                )
    return pd.DataFrame(rows)


def prompts_of(handle: ModelHandle, grid: pd.DataFrame) -> list[ChatTokens]:
    """Each run's prompt (system, user, assistant header) as token ids with a role per token."""
    return [
        handle.format_chat([message("system", s), message("user", q)], add_generation_prompt=True)
        for s, q in zip(grid["system"], grid["question_text"], strict=True)
    ]


def _left_padded(prompts: Sequence[np.ndarray], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), longest), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, longest - len(prompt) :] = torch.from_numpy(np.asarray(prompt, dtype=np.int64))
        mask[row, longest - len(prompt) :] = 1
    return ids, mask


@torch.inference_mode()
def tail_residuals(
    model: torch.nn.Module,
    prompts: Sequence[np.ndarray],
    layer: int,
    n_tail: int,
    pad_id: int,
    batch_size: int = 32,
) -> np.ndarray:
    """[n, n_tail, d_model] float32: the residual after block `layer` at the last n_tail
    positions of each prompt (left-padded batches of `model`, a `sampling_model`)."""
    out = []
    seen: list[torch.Tensor] = []

    def grab(module: Any, args: Any, output: Any) -> None:
        seen.append((output[0] if isinstance(output, tuple) else output)[:, -n_tail:].float())

    remover = decoder_layers(model)[layer].register_forward_hook(grab)
    try:
        for start in range(0, len(prompts), batch_size):
            ids, mask = _left_padded(prompts[start : start + batch_size], pad_id)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1)
            out.append(seen.pop().cpu().numpy())
    finally:
        remover.remove()
    return np.concatenate(out)


@dataclass(frozen=True)
class Patch:
    """Replace the residual after block `layer` at prompt positions [len - start, len - stop)
    (counted from the prompt's end) by `values` [n_runs, start - stop, d_model]."""

    layer: int
    start: int
    stop: int
    values: np.ndarray

    def intervention(self, hook: str, rows: np.ndarray) -> Intervention:
        """The hook replacing these positions for runs `rows` (one decode batch); it acts on
        the prompt's forward pass only (more than one position)."""
        values = torch.from_numpy(self.values[rows])
        stop = -self.stop if self.stop else None

        def function(acts: torch.Tensor, hook: Any = None) -> torch.Tensor:
            if acts.shape[1] > 1:
                acts = acts.clone()
                acts[:, -self.start : stop] = values.to(acts.device, acts.dtype)
            return acts

        return Intervention(hook, function, f"patch positions -{self.start}..-{self.stop}")


def generate(
    handle: ModelHandle,
    model: torch.nn.Module,
    prompts: Sequence[np.ndarray],
    seeds: Sequence[int],
    config: SamplerSettings,
    patch: Patch | None = None,
) -> list[np.ndarray]:
    """New tokens of each run (stop token dropped), sampled in batches of config.batch_size,
    with `patch` applied when given; every prompt prefills whole, in one forward pass (the
    patch counts positions from its end, and patched and unpatched runs pair exactly)."""
    stop_ids = stop_token_ids(handle)
    pad_id = int(handle.tokenizer.pad_token_id or 0)
    out: list[np.ndarray] = []
    for start in range(0, len(prompts), config.batch_size):
        rows = np.arange(start, min(start + config.batch_size, len(prompts)))
        hooks = () if patch is None else (patch.intervention(handle.resid_hook(patch.layer), rows),)
        with steered(handle, model, hooks):
            tokens = decode(
                model,
                [prompts[int(r)] for r in rows],
                [int(seeds[int(r)]) for r in rows],
                config,
                stop_ids,
                pad_id,
                share_prefixes=False,
            )
        out += [t[~np.isin(t, stop_ids)] for t in tokens]
    return out


def texts_of(handle: ModelHandle, new_tokens: Sequence[np.ndarray]) -> list[str]:
    return [new_tokens_text(handle, t, []) for t in new_tokens]


@torch.inference_mode()
def read_positions(
    handle: ModelHandle,
    prompts: Sequence[np.ndarray],
    new_tokens: Sequence[np.ndarray],
    hook: str,
    roles: Sequence[np.ndarray],
    n_response: int,
    header: int,
    batch_size: int = 16,
) -> tuple[np.ndarray, PositionIndex]:
    """[n, n_positions, d_model] float32: the residual at `hook` of prompt + response (no
    hooks) at each position class of `position_index` (NaN where a run has no such token),
    and the index (names of the positions)."""
    pad_id = int(handle.tokenizer.pad_token_id or 0)
    index = position_index(header, n_response)
    out = np.full((len(prompts), len(index.names), handle.d_model), np.nan, dtype=np.float32)
    for start in range(0, len(prompts), batch_size):
        rows = range(start, min(start + batch_size, len(prompts)))
        full = [np.concatenate([prompts[r], new_tokens[r]]) for r in rows]
        ids = torch.full((len(full), max(len(f) for f in full)), pad_id, dtype=torch.long)
        for k, f in enumerate(full):
            ids[k, : len(f)] = torch.from_numpy(f.astype(np.int64))
        acts = residual_activations(handle, ids, [hook])[hook].float().cpu().numpy()
        for k, r in enumerate(rows):
            out[r] = index.gather(acts[k], roles[r], len(prompts[r]), len(new_tokens[r]))
    return out, index
