"""Residual statistics of every assistant turn of sampled chats: the mean residual activation at a
hook over the turn's tokens, optionally each SAE feature's mean activation, and the mean residual
norm over every response token.

Turns are measured on the chats' text without hooks (a steering kick counts through what it made
the model write): one forward pass to the hook per chat, batched by length under a padded-token
budget. Returns `TurnActivations` (numpy arrays).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from feature_store.schema import ROLE_CODE
from sae_atlas.errors import SaeAtlasError
from sae_atlas.model import (
    ChatTokens,
    Messages,
    ModelHandle,
    length_batches,
    residual_activations,
)


@dataclass(frozen=True)
class TurnActivations:
    """means: [n_chats, n_turns, d_model] mean residual over each assistant turn's tokens (NaN
    for an empty turn); feature_means: [n_chats, n_turns, d_sae] float32, each SAE feature's
    mean activation over the turn's tokens (None without an SAE; > 0 exactly when the feature
    is active on some token, the SAE's codes being non-negative); token_norm: mean residual
    norm over every response token."""

    means: np.ndarray
    feature_means: np.ndarray | None
    token_norm: float


def assistant_spans(roles: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of assistant tokens in `roles` [n] (one per non-empty turn)."""
    inside = np.concatenate([[False], roles == ROLE_CODE["assistant"], [False]])
    edges = np.flatnonzero(np.diff(inside.astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def turn_spans(
    chat: Messages, tokens: ChatTokens, n_turns: int, index: int
) -> list[tuple[int, int, int]]:
    """(turn, start, stop) of each non-empty assistant turn of `chat` (number `index`) below
    n_turns: its tokens [start, stop) in `tokens` (the chat formatted)."""
    replies = [m for m in chat if m["role"] == "assistant"]
    spoken = [t for t, m in enumerate(replies) if m["content"].strip()]
    spans = assistant_spans(tokens.roles)
    if len(spans) != len(spoken):
        raise SaeAtlasError(
            f"chat {index}: {len(spans)} runs of assistant tokens for {len(spoken)} "
            "non-empty assistant turns; the chat template mixes roles"
        )
    return [(turn, a, b) for turn, (a, b) in zip(spoken, spans, strict=True) if turn < n_turns]


@torch.inference_mode()
def turn_activations(
    handle: ModelHandle,
    chats: Sequence[Messages],
    hook: str,
    n_turns: int,
    sae: Any = None,
    batch_tokens: int = 8192,
) -> TurnActivations:
    """Residual statistics of every assistant turn of `chats` at `hook`, without hooks."""
    formatted = [handle.format_chat(chat) for chat in chats]
    means = np.full((len(chats), n_turns, handle.d_model), np.nan, dtype=np.float32)
    feature_means = (
        None if sae is None else np.zeros((len(chats), n_turns, sae.cfg.d_sae), dtype=np.float32)
    )
    norm_sum, norm_count = 0.0, 0
    pad_id = int(handle.tokenizer.pad_token_id or 0)
    order = sorted(range(len(chats)), key=lambda i: len(formatted[i]))
    lengths = np.array([len(formatted[i]) for i in order], dtype=np.int64)
    for run in length_batches(lengths, batch_tokens, len(chats)):
        rows = order[run]
        ids = torch.full((len(rows), len(formatted[rows[-1]])), pad_id, dtype=torch.long)
        for r, i in enumerate(rows):
            ids[r, : len(formatted[i])] = torch.from_numpy(formatted[i].token_ids.astype(np.int64))
        acts = residual_activations(handle, ids, [hook])[hook].float()
        for r, i in enumerate(rows):
            for turn, a, b in turn_spans(chats[i], formatted[i], n_turns, i):
                block = acts[r, a:b]
                means[i, turn] = block.mean(0).cpu().numpy()
                norm_sum += float(block.norm(dim=-1).sum())
                norm_count += b - a
                if feature_means is not None:
                    codes = sae.encode(block.to(sae.W_dec.device, sae.W_dec.dtype))
                    feature_means[i, turn] = codes.float().mean(0).cpu().numpy()
    return TurnActivations(means, feature_means, norm_sum / max(norm_count, 1))
