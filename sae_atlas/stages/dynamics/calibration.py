"""Multi-turn centroids of the regions of persona space, and how well they resolve the regions.

A persona's vector comes from single-turn responses, but a rollout's later turns sit in longer
contexts that move the residual on their own; nearest-centroid assignment with single-turn
centroids then confuses turn position with persona. Here every persona of the corpus (its
conditional personas left out) gets multi-turn chats built from its own corpus responses (its
system prompt variant, then its answers to consecutive corpus questions as the turns, cut to
the rollouts' turn length; the default persona: its neutral-prompt and no-system responses),
read without sampling; each
region's centroid at turn t is the mean of its personas' turn-t coordinates. Resolution is
cross-fitted: centroids from one fold of prompt variants (even / odd; the default persona's
neutral prompts / no system prompt) assign the other fold's turns, and the share landing in
their own persona's region is reported per turn next to the single-turn centroids' share and
chance. Cost: one forward pass to the hook per chat (personas x variants x chats x n_turns x
~(20 + max_new_tokens) tokens; the quick profile's 74 chats of 4 turns: 15k tokens, 23 s on
one thread of the loaded 2-core machine), no sampling; returns arrays and a table.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sae_atlas.model import Messages, ModelHandle, message
from sae_atlas.stages.corpus import corpus_responses
from sae_atlas.stages.dynamics.markov import nearest_region
from sae_atlas.stages.dynamics.space import PersonaMap
from sae_atlas.stages.dynamics.turns import turn_activations
from sae_atlas.stages.label import catalogue_from_corpus


@dataclass(frozen=True)
class CalibrationChats:
    """Chats [C] and one row per chat: persona, region, fold (0 / 1)."""

    chats: list[Messages]
    rows: pd.DataFrame


def chat_groups(transcripts: str | Path, handle: ModelHandle, pmap: PersonaMap) -> pd.DataFrame:
    """The corpus's sampled responses of the map's non-conditional personas with their system
    prompt (None: none), question text, group (persona, condition, variant; the default
    condition is one group) and fold, in corpus order."""
    catalogue = catalogue_from_corpus(transcripts)
    question = {q.id: q.text for q in (*catalogue.questions, *catalogue.identity)}
    table = pmap.personas
    kept = set(table.loc[table["category"].astype(str) != "conditional", "name"].astype(str))
    corpus = corpus_responses(transcripts, handle)
    corpus = corpus[corpus["persona"].astype(str).isin(kept)].reset_index(drop=True)
    prompts = {p.name: p.prompts for p in catalogue.personas}
    condition = corpus["condition"].astype(str)
    variant = corpus["variant"].astype(int)
    persona = corpus["persona"].astype(str)
    return corpus.assign(
        system=[None if v < 0 else prompts[p][v] for p, v in zip(persona, variant, strict=True)],
        question=corpus["question_id"].astype(str).map(question),
        group=persona
        + "|"
        + condition
        + "|"
        + np.where(condition == "default", "", variant.astype(str)),
        fold=np.where(condition == "persona", variant % 2, (condition == "no_system").astype(int)),
    )


def truncated(handle: ModelHandle, text: str, max_tokens: int) -> str:
    """`text` cut to its first max_tokens tokens (as a rollout's turn of that length is)."""
    ids = handle.tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]
    return str(handle.tokenizer.decode(ids, skip_special_tokens=True)).strip()


def calibration_chats(
    transcripts: str | Path,
    handle: ModelHandle,
    pmap: PersonaMap,
    n_turns: int,
    n_chats: int,
    max_tokens: int,
) -> CalibrationChats:
    """Up to n_chats chats of n_turns corpus exchanges per group (`chat_groups`): the group's
    first row's system prompt, then consecutive (question, response cut to max_tokens) pairs."""
    chats: list[Messages] = []
    rows = []
    region = dict(zip(pmap.personas["name"].astype(str), pmap.personas["region"], strict=True))
    for _, block in chat_groups(transcripts, handle, pmap).groupby("group", sort=False):
        system = block["system"].iloc[0] if isinstance(block["system"].iloc[0], str) else None
        for k in range(min(n_chats, max(len(block) // n_turns, 1))):
            turns = block.iloc[k * n_turns : (k + 1) * n_turns]
            chat = [] if system is None else [message("system", system)]
            for q, a in zip(turns["question"], turns["text"], strict=True):
                chat += [message("user", q), message("assistant", truncated(handle, a, max_tokens))]
            chats.append(chat)
            name = str(block["persona"].iloc[0])
            rows.append({"persona": name, "region": region[name], "fold": block["fold"].iloc[0]})
    return CalibrationChats(chats, pd.DataFrame(rows))


def turn_centroids(coords: np.ndarray, region: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """[T, r, k]: mean of coords [C, T, k] (NaN ignored) over the chats of each region
    (region [C]); fallback [r, k] where a region has no turn-t point."""
    turns = coords.shape[1]
    out = np.repeat(fallback[None], turns, 0).astype(np.float64)
    for r in range(len(fallback)):
        block = coords[region == r]
        for t in range(turns):
            points = block[:, t][np.isfinite(block[:, t]).all(1)]
            if len(points):
                out[t, r] = points.mean(0)
    return out


def resolution(coords: np.ndarray, rows: pd.DataFrame, pmap: PersonaMap) -> pd.DataFrame:
    """Per method (multi_turn: cross-fitted turn centroids; single_turn: the personas' own
    centroids) and turn: the share of calibration turns assigned to their persona's region, n,
    and chance (the largest region's share)."""
    region, fold = rows["region"].to_numpy(), rows["fold"].to_numpy()
    out = []
    for t in range(coords.shape[1]):
        finite = np.isfinite(coords[:, t]).all(1)
        chance = np.bincount(region[finite]).max() / max(finite.sum(), 1)
        hits = {"multi_turn": 0, "single_turn": 0}
        for f in (0, 1):
            test = finite & (fold == f)
            train = fold != f
            centroids = turn_centroids(coords[train], region[train], pmap.centroids)[t]
            hits["multi_turn"] += int(
                (nearest_region(coords[test, t], centroids) == region[test]).sum()
            )
            single = nearest_region(coords[test, t], pmap.centroids)
            hits["single_turn"] += int((single == region[test]).sum())
        for method, hit in hits.items():
            n = int(finite.sum())
            out.append(
                {"method": method, "turn": t, "accuracy": hit / max(n, 1), "n": n, "chance": chance}
            )
    return pd.DataFrame(out)


def calibrate(
    handle: ModelHandle,
    pmap: PersonaMap,
    transcripts: str | Path,
    hook: str,
    n_turns: int,
    n_chats: int,
    max_tokens: int,
) -> tuple[PersonaMap, pd.DataFrame]:
    """`pmap` with turn centroids [n_turns, r, k] from every calibration chat (answers cut to
    max_tokens, the rollouts' turn length), and the resolution table (`resolution`)."""
    built = calibration_chats(transcripts, handle, pmap, n_turns, n_chats, max_tokens)
    coords = pmap.coords(turn_activations(handle, built.chats, hook, n_turns).means)
    region = built.rows["region"].to_numpy()
    centroids = turn_centroids(coords, region, pmap.centroids)
    return dataclasses.replace(pmap, turn_centroids=centroids), resolution(coords, built.rows, pmap)
