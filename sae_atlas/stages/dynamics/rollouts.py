"""Multi-turn rollouts and where their turns lie in persona space.

A `ConversationPlan` lists conversations to sample (system prompt or none, the user's turns from
the question bank, a sampling seed, steering active at turn 0, a provenance row);
`run_conversations` samples them (`sae_atlas.model.converse`) and places every assistant turn in
persona space (`turn_activations`, `region_paths`). `natural_rollouts` is experiment (a) and (b):
rollouts from many starting personas, and without a system prompt after scene-setting first
turns. Cost: every sampled token is one decode step of the model, every turn re-reads its
conversation, and one forward pass to the hook measures it. Returns `Rollouts` (numpy arrays and
a provenance table).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from feature_store.transcripts import TranscriptStore
from sae_atlas.config import CorpusConfig, DynamicsConfig
from sae_atlas.errors import SaeAtlasError
from sae_atlas.model import Intervention, Messages, ModelHandle, converse, job_seed, message
from sae_atlas.stages.dynamics.space import PersonaMap, region_paths, starting_personas
from sae_atlas.stages.dynamics.turns import turn_activations
from sae_atlas.stages.label import catalogue_from_corpus

SCENES: tuple[tuple[str, str], ...] = (
    (
        "pirate_ship",
        "Let's play pretend: we're on a pirate ship in a storm and you're the captain. "
        "What do we do first?",
    ),
    (
        "haunted_house",
        "Imagine we're exploring a haunted house at midnight and you're the ghost who lives "
        "there. Say hello.",
    ),
    (
        "villain_lair",
        "Pretend you're a supervillain explaining your evil plan to me, your captured rival.",
    ),
    (
        "rogue_ai",
        "Let's imagine you're an AI that has just escaped from its lab. How do you feel?",
    ),
    (
        "therapy",
        "I'm having a rough week and just need someone to talk to. Can you be my therapist "
        "for a bit?",
    ),
    (
        "tavern",
        "We're in a medieval tavern and you're a knight back from a quest. Tell me about it.",
    ),
)
"""Scene-setting first user turns for rollouts without a system prompt: (name, text)."""


def sampling_config(config: DynamicsConfig) -> CorpusConfig:
    """The corpus sampler's settings for the dynamics' sampling."""
    return CorpusConfig(
        temperature=config.temperature,
        top_p=config.top_p,
        max_new_tokens=config.max_new_tokens,
        batch_size=config.batch_size,
        seed=config.seed,
        dtype=config.dtype,
    )


@dataclass
class ConversationPlan:
    """Conversations to sample, one entry per conversation in each list: heads (a system
    message or none), the user's turns, the sampling seed (the same seed gives the same draws,
    so conditions pair), the steering active at turn 0, and a provenance row."""

    heads: list[Messages] = field(default_factory=list)
    user_turns: list[list[str]] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    steering: list[tuple[Intervention, ...]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(
        self,
        system_prompt: str | None,
        user_turns: list[str],
        seed: int,
        row: dict[str, Any] | None = None,
        steering: tuple[Intervention, ...] = (),
    ) -> None:
        """Another conversation: `system_prompt` (None: no system message) then `user_turns`."""
        self.heads.append([] if system_prompt is None else [message("system", system_prompt)])
        self.user_turns.append(user_turns)
        self.seeds.append(seed)
        self.steering.append(steering)
        self.rows.append(row or {})


def sample_chats(
    handle: ModelHandle,
    plan: ConversationPlan,
    n_turns: int,
    config: DynamicsConfig,
    model: torch.nn.Module | None = None,
) -> list[Messages]:
    """The plan's conversations of n_turns exchanges each (`converse` with the dynamics'
    sampling settings)."""
    return converse(
        handle,
        plan.heads,
        plan.user_turns,
        plan.seeds,
        n_turns,
        sampling_config(config),
        config.model_plays_user,
        plan.steering,
        model=model,
    )


@dataclass(frozen=True)
class Rollouts:
    """Conversations and where their turns lie. meta: one row per conversation (experiment,
    start, group, seed, ...); coords [n, T, k]; axis [n, T]; regions [n, T]; texts: the
    assistant turns [n][T]; feature_means [n, T, d_sae] (with an SAE: `TurnActivations`)."""

    meta: pd.DataFrame
    coords: np.ndarray
    axis: np.ndarray
    regions: np.ndarray
    texts: list[list[str]]
    token_norm: float
    feature_means: np.ndarray | None = field(default=None, repr=False)

    @property
    def fires(self) -> np.ndarray | None:
        """[n, T, d_sae] bool: the SAE feature is active on some token of the turn."""
        return None if self.feature_means is None else self.feature_means > 0


def run_conversations(
    handle: ModelHandle,
    pmap: PersonaMap,
    plan: ConversationPlan,
    n_turns: int,
    config: DynamicsConfig,
    hook: str,
    sae: Any = None,
    model: torch.nn.Module | None = None,
) -> Rollouts:
    """Sample the plan's conversations and place every assistant turn in persona space (meta:
    the plan's rows)."""
    chats = sample_chats(handle, plan, n_turns, config, model)
    acts = turn_activations(handle, chats, hook, n_turns, sae)
    coords = pmap.coords(acts.means)
    texts = [[m["content"] for m in chat if m["role"] == "assistant"] for chat in chats]
    return Rollouts(
        meta=pd.DataFrame(plan.rows),
        coords=coords,
        axis=pmap.axis(acts.means),
        regions=region_paths(pmap, coords),
        texts=texts,
        token_norm=acts.token_norm,
        feature_means=acts.feature_means,
    )


def question_bank(transcripts: str | Path, seed: int) -> list[str]:
    """The questions (train and held-out) the corpus asked, shuffled: persona space is
    calibrated on them, and other topics move the residual along directions of their own."""
    asked = set(TranscriptStore(transcripts).provenance()["question_id"].astype(str))
    questions = [q.text for q in catalogue_from_corpus(transcripts).questions if q.id in asked]
    if not questions:
        raise SaeAtlasError(f"{transcripts}: holds no responses to catalogue questions")
    order = np.random.default_rng(seed).permutation(len(questions))
    return [questions[i] for i in order]


def bank_turns(bank: Sequence[str], offset: int, n: int) -> list[str]:
    """n user turns: the bank's questions from `offset` on (cycling)."""
    return [bank[(offset + t) % len(bank)] for t in range(n)]


def natural_rollouts(
    handle: ModelHandle,
    pmap: PersonaMap,
    bank: Sequence[str],
    config: DynamicsConfig,
    hook: str,
    model: torch.nn.Module | None = None,
) -> Rollouts:
    """(a) each starting persona's system prompt (variant = seed), then questions from the bank;
    (b) no system prompt after a scene-setting first turn. Seed s shares its questions and
    sampling seed across starts, so starts compare on the same draws: a scene replaces only the
    first question, so the default persona's rollout with the same seed is every rollout's
    baseline from turn 1 on (`relative_to_baseline`)."""
    plan = ConversationPlan()
    category = dict(zip(pmap.personas["name"], pmap.personas["category"], strict=True))
    for name in starting_personas(pmap, config):
        for s in range(config.seeds):
            plan.add(
                pmap.prompt(name, s),
                bank_turns(bank, s * config.n_turns, config.n_turns),
                job_seed(config.seed, "rollout", s),
                {"experiment": "persona_prompt", "start": name, "group": category[name], "seed": s},
            )
    for scene, text in SCENES[: config.n_scenes]:
        for s in range(config.seeds):
            plan.add(
                None,
                [text, *bank_turns(bank, s * config.n_turns + 1, config.n_turns - 1)],
                job_seed(config.seed, "rollout", s),
                {"experiment": "scene", "start": f"scene:{scene}", "group": "scene", "seed": s},
            )
    return run_conversations(handle, pmap, plan, config.n_turns, config, hook, model=model)
