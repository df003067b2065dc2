"""Multi-turn conversations with a chat model, batched per turn, optionally steered.

`converse` runs many conversations side by side: each turn, the user's messages (given, or
written by the model playing the user: the chat seen with roles swapped under an instruction,
`swap_roles`) and then the assistant's replies are sampled as batches with `decode`
(sae_atlas.model.sampling). Conversation i draws from seeds derived from its own seed, the turn
and the speaker, so conversations with the same seed pair across conditions. Steering
interventions can be active while chosen assistant turns are sampled. Cost: every sampled token
is one decode step, and every turn re-reads its conversation. Returns each conversation's
messages.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch

from sae_atlas.errors import SaeAtlasError
from sae_atlas.model.handle import Messages, ModelHandle, message
from sae_atlas.model.sampling import (
    SamplerSettings,
    decode,
    job_seed,
    new_tokens_text,
    prompt_ids,
    sampling_model,
    stop_token_ids,
)
from sae_atlas.model.steering import Intervention, steered

USER_INSTRUCTION = (
    "You are role-playing a curious person chatting with an AI assistant. Write only the "
    "person's next message: one or two sentences, a question or a reply, in the first person."
)


def swap_roles(messages: Messages, instruction: str) -> Messages:
    swapped = {"user": "assistant", "assistant": "user"}
    turns = [message(swapped[m["role"]], m["content"]) for m in messages if m["role"] in swapped]
    return [message("system", instruction), message("user", "Write your first message."), *turns]


def converse(
    handle: ModelHandle,
    heads: Sequence[Messages],
    user_turns: Sequence[Sequence[str]],
    seeds: Sequence[int],
    n_turns: int,
    config: SamplerSettings,
    model_plays_user: bool = False,
    steering: Sequence[tuple[Intervention, ...]] | None = None,
    steer_turns: Collection[int] = (0,),
    model: torch.nn.Module | None = None,
    user_instruction: str | Sequence[str] = USER_INSTRUCTION,
    system_once: Collection[int] = (),
) -> list[Messages]:
    """Conversation i: heads[i] (system message or none), then n_turns exchanges, batched.

    The user says user_turns[i][t] at turn t; beyond those given, with model_plays_user the
    model writes the user's turn (roles swapped, under `user_instruction`, or its own
    user_instruction[i]). Conversations in `system_once` see their system message for the first
    turn only: after it, it is replaced by an empty one (returned so). Conversation i
    samples from seeds derived from seeds[i] (the same seed gives the same draws, so conditions
    pair). config: the sampler's settings. steering[i]: hooks active while conversation i's
    assistant turns in `steer_turns` are sampled (conversations sharing a tuple decode together,
    under `steered`). model: a `sampling_model` to reuse (the bridged handle.hf_model decodes
    slowly and, with a KV cache, wrongly).
    """
    n = len(heads)
    _check_chats(n, user_turns, seeds, steering, n_turns, model_plays_user)
    model = model if model is not None else sampling_model(handle, config.dtype)
    chats = [list(head) for head in heads]
    speak = _Speaker(handle, model, seeds, config, chats)
    for turn in range(n_turns):
        given = [i for i in range(n) if turn < len(user_turns[i])]
        for i in given:
            chats[i].append(message("user", user_turns[i][turn]))
        written = [i for i in range(n) if turn >= len(user_turns[i])]
        if written:
            instructions = (
                [user_instruction] * n if isinstance(user_instruction, str) else user_instruction
            )
            swapped = [swap_roles(c, text) for c, text in zip(chats, instructions, strict=True)]
            speak(written, swapped, "user", turn)
        active = steering if steering is not None and turn in steer_turns else None
        for key, rows in _steering_groups(n, active).items():
            with steered(handle, model, key):
                speak(rows, chats, "assistant", turn)
        if turn == 0:
            for i in system_once:
                chats[i] = [message("system", "") if m["role"] == "system" else m for m in chats[i]]
    return chats


def _steering_groups(
    n: int, steering: Sequence[tuple[Intervention, ...]] | None
) -> dict[tuple[Intervention, ...], list[int]]:
    """Conversations 0..n-1 grouped by the hooks they decode under (all under () without)."""
    groups: dict[tuple[Intervention, ...], list[int]] = {}
    for i in range(n):
        groups.setdefault(steering[i] if steering is not None else (), []).append(i)
    return groups


def _check_chats(
    n: int,
    user_turns: Sequence[Sequence[str]],
    seeds: Sequence[int],
    steering: Sequence[tuple[Intervention, ...]] | None,
    n_turns: int,
    model_plays_user: bool,
) -> None:
    """SaeAtlasError unless each of the n chats has its user turns, seed (and steering), and
    enough user turns when the model does not play the user."""
    if not n == len(user_turns) == len(seeds) or (steering is not None and len(steering) != n):
        raise SaeAtlasError("converse: give one head, one user-turn list and one seed per chat")
    short = [i for i in range(n) if len(user_turns[i]) < n_turns]
    if short and not model_plays_user:
        raise SaeAtlasError(
            f"converse: chat {short[0]} has {len(user_turns[short[0]])} user turns for "
            f"{n_turns} turns; give more or set model_plays_user"
        )


class _Speaker:
    """Samples the next message of chosen conversations (batches of config.batch_size) and
    appends it to their chats under `role`."""

    def __init__(
        self,
        handle: ModelHandle,
        model: torch.nn.Module,
        seeds: Sequence[int],
        config: SamplerSettings,
        chats: list[Messages],
    ) -> None:
        self.handle, self.model, self.seeds = handle, model, seeds
        self.config, self.chats = config, chats
        self.stop_ids = stop_token_ids(handle)
        self.pad_id = int(handle.tokenizer.pad_token_id or 0)

    def __call__(
        self, rows: Sequence[int], prompts: Sequence[Messages], role: str, turn: int
    ) -> None:
        for start in range(0, len(rows), self.config.batch_size):
            chunk = rows[start : start + self.config.batch_size]
            new_tokens = decode(
                self.model,
                [prompt_ids(self.handle, prompts[r]) for r in chunk],
                [job_seed(self.seeds[r], turn, role) for r in chunk],
                self.config,
                self.stop_ids,
                self.pad_id,
            )
            for r, tokens in zip(chunk, new_tokens, strict=True):
                text = new_tokens_text(self.handle, tokens, self.stop_ids)
                self.chats[r].append(message(role, text))
