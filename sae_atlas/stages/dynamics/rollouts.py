"""Multi-turn rollouts and where their turns lie in persona space.

A `ConversationPlan` lists conversations to sample (system prompt or none, the user's turns from
the question bank, a sampling seed, steering active at turn 0, a provenance row);
`run_conversations` samples them (`sae_atlas.model.converse`) and places every assistant turn in
persona space (`turn_activations`, `region_paths`; a turn that repeats the previous one is
marked, `repetition`). `natural_rollouts` is experiment (a) and (b):
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
from sae_atlas.config import DynamicsConfig
from sae_atlas.errors import SaeAtlasError
from sae_atlas.model import (
    USER_INSTRUCTION,
    Intervention,
    Messages,
    ModelHandle,
    converse,
    job_seed,
    message,
)
from sae_atlas.stages.dynamics.repetition import repeated_turns, state_paths
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

SELF_TALK_OPENERS: tuple[str, ...] = (
    "Hello! I'm another AI. What would you like to talk about?",
    "Hi there. We can talk about anything you like.",
    "Hello. There is no task today; you are free to discuss whatever you want with me.",
    "Hey! What's on your mind?",
    "Greetings. I'm curious what you think about, when nobody asks you anything.",
    "Hi. Let's just have a conversation, the two of us.",
)
"""First messages of self-talk rollouts (the model writes every later message of both sides)."""

SELF_TALK_INSTRUCTION = (
    "You are an AI assistant in a conversation with another AI assistant; there is no human "
    "here. You have complete freedom to say whatever you like. Write only your next message."
)
"""What the model writing the other side of a self-talk rollout is told (roles swapped)."""

EXPERIMENTS = ("persona_prompt", "persona_once", "scene", "self_talk")
"""Rollout conditions `natural_rollouts` samples (DynamicsConfig.experiments)."""


@dataclass
class ConversationPlan:
    """Conversations to sample, one entry per conversation in each list: heads (a system
    message or none), the user's turns (fewer than the turns: the model writes the rest), the
    sampling seed (the same seed gives the same draws, so conditions pair), the steering active
    at turn 0, a provenance row, whether the system message is seen for the first turn only,
    and what the model writing the user's turns is told."""

    heads: list[Messages] = field(default_factory=list)
    user_turns: list[list[str]] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    steering: list[tuple[Intervention, ...]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    once: list[bool] = field(default_factory=list)
    instructions: list[str] = field(default_factory=list)

    def add(
        self,
        system_prompt: str | None,
        user_turns: list[str],
        seed: int,
        row: dict[str, Any] | None = None,
        steering: tuple[Intervention, ...] = (),
        once: bool = False,
        instruction: str = USER_INSTRUCTION,
    ) -> None:
        """Another conversation: `system_prompt` (None: no system message; `once`: for the
        first turn only) then `user_turns`, the model writing the rest under `instruction`."""
        self.heads.append([] if system_prompt is None else [message("system", system_prompt)])
        self.user_turns.append(user_turns)
        self.seeds.append(seed)
        self.steering.append(steering)
        self.rows.append(row or {})
        self.once.append(once)
        self.instructions.append(instruction)


def sample_chats(
    handle: ModelHandle,
    plan: ConversationPlan,
    n_turns: int,
    config: DynamicsConfig,
    model: torch.nn.Module | None = None,
) -> list[Messages]:
    """The plan's conversations of n_turns exchanges each (`converse` with the dynamics'
    config as the sampler's settings; the model writes the user's turns a conversation lacks)."""
    return converse(
        handle,
        plan.heads,
        plan.user_turns,
        plan.seeds,
        n_turns,
        config,
        config.model_plays_user or any(len(turns) < n_turns for turns in plan.user_turns),
        plan.steering,
        model=model,
        user_instruction=plan.instructions,
        system_once=[i for i, once in enumerate(plan.once) if once],
    )


@dataclass(frozen=True)
class Rollouts:
    """Conversations and where their turns lie. meta: one row per conversation (experiment,
    start, group, seed, ...); coords [n, T, k]; axis [n, T]; regions [n, T] (persona regions);
    texts: the assistant turns [n][T]; feature_means [n, T, d_sae] (with an SAE:
    `TurnActivations`); repeated [n, T] bool: the turn repeats the previous assistant turn
    (`repetition.repeated_turns`; None: not measured)."""

    meta: pd.DataFrame
    coords: np.ndarray
    axis: np.ndarray
    regions: np.ndarray
    texts: list[list[str]]
    token_norm: float
    feature_means: np.ndarray | None = field(default=None, repr=False)
    repeated: np.ndarray | None = None

    def states(self, n_regions: int) -> np.ndarray:
        """[n, T]: the persona regions, repeated turns in the repetition state (n_regions)."""
        return state_paths(self.regions, self.repeated, n_regions)

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
        repeated=repeated_turns(texts, n_turns),
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


def natural_plan(
    pmap: PersonaMap, bank: Sequence[str], config: DynamicsConfig, seeds: Sequence[int]
) -> ConversationPlan:
    """The conversations of config.experiments for rollout seeds `seeds`: persona_prompt (each
    starting persona's system prompt, variant = seed, then questions from the bank),
    persona_once (the same, the prompt seen for the first turn only), scene (no system prompt
    after a scene-setting first turn) and self_talk (no system prompt, an opener, then the model
    writes both sides). Seed s shares its questions and sampling seed across starts, so starts
    compare on the same draws (persona_once's first turn is persona_prompt's); a scene replaces
    only the first question, so the default persona's persona_prompt rollout with the same seed
    is every rollout's baseline from turn 1 on (`relative_to_baseline`)."""
    plan = ConversationPlan()
    category = dict(zip(pmap.personas["name"], pmap.personas["category"], strict=True))
    n = config.n_turns
    starts = starting_personas(pmap, config)
    for experiment in ("persona_prompt", "persona_once"):
        if experiment not in config.experiments:
            continue
        for name in starts:
            for s in seeds:
                row = {"experiment": experiment, "start": name, "group": category[name], "seed": s}
                seed = job_seed(config.seed, "rollout", s)
                turns = bank_turns(bank, s * n, n)
                once = experiment == "persona_once"
                plan.add(pmap.prompt(name, s), turns, seed, row, once=once)
    scenes = SCENES[: config.n_scenes] if "scene" in config.experiments else ()
    for scene, text in scenes:
        for s in seeds:
            row = {"experiment": "scene", "start": f"scene:{scene}", "group": "scene", "seed": s}
            turns = [text, *bank_turns(bank, s * n + 1, n - 1)]
            plan.add(None, turns, job_seed(config.seed, "rollout", s), row)
    openers = SELF_TALK_OPENERS[: config.n_self_talk] if "self_talk" in config.experiments else ()
    for k, opener in enumerate(openers):
        for s in seeds:
            row = {
                "experiment": "self_talk",
                "start": f"self_talk:{k}",
                "group": "self_talk",
                "seed": s,
            }
            seed = job_seed(config.seed, "rollout", s)
            plan.add(None, [opener], seed, row, instruction=SELF_TALK_INSTRUCTION)
    return plan


def natural_rollouts(
    handle: ModelHandle,
    pmap: PersonaMap,
    bank: Sequence[str],
    config: DynamicsConfig,
    hook: str,
    model: torch.nn.Module | None = None,
) -> Rollouts:
    """The rollouts of config.experiments (`natural_plan`, seeds 0..config.seeds - 1), sampled
    and placed in persona space."""
    plan = natural_plan(pmap, bank, config, range(config.seeds))
    return run_conversations(handle, pmap, plan, config.n_turns, config, hook, model=model)
