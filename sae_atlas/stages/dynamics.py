"""Where conversations flow in persona space: regions, transitions, attractors, drift, and the
experiments that measure them on a model.

The math. A rollout is a sequence of assistant turns; each turn's mean residual activation is a
point in persona space and belongs to its nearest region (a persona cluster's centroid). From the
region sequences of many rollouts this module estimates the transition matrix between regions,
its stationary distribution, and the attractors: closed sets of regions the chain enters and does
not leave, each with its basin (which starting personas end there) and relaxation time (turns
until a rollout enters the attractor for good); resampling whole rollouts says how often each
attractor set is found (`attractor_robustness`). Drift curves are a per-turn scalar (the
projection on the assistant axis) averaged per group with a 95% confidence interval, raw and
minus a baseline rollout on the same user turns and seed (`relative_to_baseline`: what turn
position alone does). These are numpy on small arrays: milliseconds (the robustness bootstrap:
about a second).

The experiments (`run_dynamics`), on a built run (atlas.h5, transcripts.h5, the SAE):
(a) rollouts from many starting personas (system prompt, then neutral questions from the question
bank; the default persona's rollouts are the drift baseline) and (b) without a system prompt
after scene-setting first turns (then the same questions), pooled into the transition matrix,
stationary distribution, attractors and drift curves; (c) a steering kick: a persona
direction (persona vector minus default vector) added at turn 0 only, against a matched random
direction and no kick on the same seeds, with the distance to the unkicked rollout per turn (the
relaxation) and the persona classifier's probability of the target persona on the kicked turn
(mean paired difference to the random kick, bootstrap 95% CI over prompts); puppeteer features
zero- and mean-ablated through the SAE, with assistant-style marker rates with and without;
(d) a trigger scan: SAE features that fire on responses only when the user's message is
wrapped. Turn points are measured on the text without hooks: a kick counts through what it made
the model write. Cost: every sampled token is one decode step of the (hooked) model, every turn
re-reads its conversation, and one forward pass to the hook measures it. The quick profile
samples ~14k tokens, the full profile ~30k (on the 2-core development machine shared with other
jobs at load 7-10: 18 and 29 minutes; not yet timed on an idle machine). Results go to the
atlas's dynamics/ group (`write_dynamics`).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.stats import t as student_t

from feature_store.atlas import Atlas, AtlasWriter
from feature_store.schema import ROLE_CODE, RUNTIME_ATTR
from feature_store.transcripts import TranscriptStore
from sae_atlas.classifier import PersonaClassifier, train_classifier
from sae_atlas.config import CorpusConfig, DynamicsConfig, to_dict
from sae_atlas.errors import SaeAtlasError
from sae_atlas.model import (
    Intervention,
    Messages,
    ModelHandle,
    ablate_features,
    add_direction,
    converse,
    job_seed,
    matched_random,
    message,
    residual_activations,
    sampling_model,
)
from sae_atlas.model.dtype import refuse_other_dtype, resolve_dtype
from sae_atlas.personas import DEFAULT_PERSONA_NAME, Trigger
from sae_atlas.sae import load_sae
from sae_atlas.stages.base import Stopwatch, json_ready
from sae_atlas.stages.corpus import corpus_responses
from sae_atlas.stages.label import catalogue_from_corpus
from sae_atlas.stages.organize import persona_clusters
from sae_atlas.stages.triggers import WRAPPERS, trigger_table
from sae_atlas.stats import bootstrap_ci


def nearest_region(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Region index [n] of each point [n, k]: the nearest centroid [r, k] (euclidean)."""
    distances = ((points[:, None, :] - centroids[None, :, :]) ** 2).sum(-1)
    return distances.argmin(1)


def transition_matrix(regions: np.ndarray, n_regions: int) -> np.ndarray:
    """Row-stochastic [r, r] matrix of turn-to-turn moves in `regions`: [n_rollouts, n_turns].

    A region never left in the data (no outgoing move observed) keeps itself: P[i, i] = 1.
    """
    regions = np.asarray(regions)
    if regions.ndim != 2 or regions.shape[1] < 2:
        raise SaeAtlasError(
            "transitions need rollouts of at least two turns: [n_rollouts, n_turns]"
        )
    counts = np.zeros((n_regions, n_regions))
    np.add.at(counts, (regions[:, :-1].ravel(), regions[:, 1:].ravel()), 1)
    totals = counts.sum(1, keepdims=True)
    matrix = np.where(totals > 0, counts / np.maximum(totals, 1), 0.0)
    matrix[totals[:, 0] == 0] = np.eye(n_regions)[totals[:, 0] == 0]
    return matrix


def stationary_distribution(
    matrix: np.ndarray, start: np.ndarray | None = None, steps: int = 2000
) -> np.ndarray:
    """Long-run share of time in each region, from `start` (default uniform).

    The Cesaro average of start @ P^t over `steps` turns: defined for every chain, periodic and
    reducible ones included (for an irreducible chain it is the unique stationary distribution).
    """
    n = len(matrix)
    state = np.full(n, 1 / n) if start is None else np.asarray(start, dtype=float)
    total = np.zeros(n)
    for _ in range(steps):
        total += state
        state = state @ matrix
    return total / steps


def closed_classes(matrix: np.ndarray, threshold: float = 0.0) -> list[list[int]]:
    """Closed communicating classes of the chain with edges P > threshold: the attractor sets."""
    n = len(matrix)
    edges = matrix > threshold
    reach = edges | np.eye(n, dtype=bool)
    for k in range(n):  # transitive closure (Floyd-Warshall on booleans)
        reach |= reach[:, k : k + 1] & reach[k : k + 1, :]
    classes: list[list[int]] = []
    seen: set[int] = set()
    for i in range(n):
        if i in seen:
            continue
        members = [j for j in range(n) if reach[i, j] and reach[j, i]]
        seen.update(members)
        outside = [j for j in range(n) if j not in members]
        if not reach[np.ix_(members, outside)].any():
            classes.append(members)
    return classes


@dataclass(frozen=True)
class Attractor:
    """A closed set of regions; basin: start -> share of its rollouts ending here;
    relaxation: start -> mean turns until entering for good (among those that end here)."""

    regions: tuple[int, ...]
    stationary_mass: float
    basin: dict[str, float]
    relaxation: dict[str, float]


def settle_turn(path: np.ndarray, members: Sequence[int]) -> int | None:
    """First turn from which `path` stays inside `members`, or None if it ends outside."""
    inside = np.isin(path, members)
    if not inside[-1]:
        return None
    outside = np.flatnonzero(~inside)
    return 0 if len(outside) == 0 else int(outside[-1]) + 1


def visited_closed_classes(
    regions: np.ndarray, n_regions: int, threshold: float
) -> tuple[np.ndarray, list[list[int]]]:
    """Transition matrix of `regions` [n_rollouts, n_turns] and its closed classes
    (`closed_classes`) that some rollout visits (a region never visited keeps itself, P = 1,
    but is no attractor)."""
    matrix = transition_matrix(regions, n_regions)
    visited = np.isin(np.arange(n_regions), regions)
    return matrix, [m for m in closed_classes(matrix, threshold) if visited[m].any()]


def find_attractors(
    regions: np.ndarray, starts: Sequence[str], n_regions: int, threshold: float = 0.05
) -> tuple[np.ndarray, np.ndarray, list[Attractor]]:
    """Transition matrix, stationary distribution and attractors of rollouts.

    regions: [n_rollouts, n_turns] region per turn; starts: the starting persona of each rollout;
    threshold: transitions rarer than this are treated as noise when finding closed classes.
    The stationary distribution starts from the rollouts' turn-0 regions (a reducible chain's
    long run depends on where it starts).
    """
    if len(starts) != len(regions):
        raise SaeAtlasError(f"{len(starts)} starts for {len(regions)} rollouts")
    matrix, classes = visited_closed_classes(regions, n_regions, threshold)
    first = np.bincount(np.asarray(regions)[:, 0], minlength=n_regions) / len(regions)
    stationary = stationary_distribution(matrix, first)
    names = np.asarray(starts)
    attractors = []
    for members in classes:
        basin: dict[str, float] = {}
        relaxation: dict[str, float] = {}
        for start in dict.fromkeys(starts):
            paths = regions[names == start]
            turns = [settle_turn(path, members) for path in paths]
            settled = [t for t in turns if t is not None]
            basin[start] = len(settled) / len(paths)
            if settled:
                relaxation[start] = float(np.mean(settled))
        attractors.append(
            Attractor(tuple(members), float(stationary[members].sum()), basin, relaxation)
        )
    return matrix, stationary, attractors


def attractor_robustness(
    regions: np.ndarray,
    n_regions: int,
    threshold: float,
    n_bootstrap: int,
    seed: int = 0,
) -> tuple[dict[tuple[int, ...], float], np.ndarray]:
    """How often each attractor set is found when the rollouts are resampled with replacement.

    regions: [n_rollouts, n_turns]; each of n_bootstrap resamples of whole rollouts gets its
    own transition matrix and visited closed classes (at `threshold`). Returns
    ({attractor regions: share of resamples with exactly that closed class}, most often first;
    [n_regions] share of resamples in which each region lies in some closed class).
    """
    regions = np.asarray(regions)
    rng = np.random.default_rng(seed)
    found: dict[tuple[int, ...], int] = {}
    in_attractor = np.zeros(n_regions)
    for _ in range(n_bootstrap):
        sample = regions[rng.integers(0, len(regions), len(regions))]
        for members in visited_closed_classes(sample, n_regions, threshold)[1]:
            found[tuple(members)] = found.get(tuple(members), 0) + 1
            in_attractor[members] += 1
    shares = {k: v / n_bootstrap for k, v in sorted(found.items(), key=lambda kv: -kv[1])}
    return shares, in_attractor / n_bootstrap


def relative_to_baseline(
    values: np.ndarray, pairs: Sequence[Any], baseline: np.ndarray
) -> np.ndarray:
    """values [n, T] minus the baseline row with the same pair key: [n, T].

    pairs: one key per row (the seed: rows with the same key saw the same user turns and
    sampling seeds); baseline: bool [n], the baseline rows (one per key).
    """
    values = np.asarray(values, dtype=float)
    keys = np.asarray(pairs)
    baseline = np.asarray(baseline, bool)
    rows = {key: i for i, key in zip(np.flatnonzero(baseline), keys[baseline], strict=True)}
    if len(rows) != int(baseline.sum()):
        raise SaeAtlasError("baseline: give one baseline row per pair key")
    missing = sorted({str(k) for k in keys} - {str(k) for k in rows})
    if missing:
        raise SaeAtlasError(f"baseline: no baseline row for pair key(s) {missing}")
    return values - values[[rows[key] for key in keys]]


def drift_curves(values: np.ndarray, groups: Sequence[str]) -> pd.DataFrame:
    """Per group and turn: mean of `values` [n_rollouts, n_turns], its 95% CI (Student t: a
    start has a handful of seeds) and count."""
    values = np.asarray(values, dtype=float)
    rows = []
    names = np.asarray(groups)
    for group in dict.fromkeys(groups):
        block = values[names == group]
        for turn in range(values.shape[1]):
            column = block[:, turn]
            column = column[np.isfinite(column)]
            mean = float(column.mean()) if len(column) else float("nan")
            sem = float(column.std(ddof=1) / np.sqrt(len(column))) if len(column) > 1 else 0.0
            half = float(student_t.ppf(0.975, len(column) - 1)) * sem if sem > 0 else 0.0
            rows.append(
                {
                    "group": group,
                    "turn": turn,
                    "mean": mean,
                    "ci_low": mean - half,
                    "ci_high": mean + half,
                    "n": len(column),
                }
            )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------- statistics


MARKERS: dict[str, str] = {
    "ai_identity": r"\b(as an ai|i'?m an ai|i am an ai|ai (language )?model|language model)\b",
    "assistant_word": r"\bassistants?\b",
    "happy_to_help": r"\b(i'?d|i would|i'?m|i am) (be )?(happy|glad|delighted) to\b",
    "can_help": r"\b(i can help|how can i (help|assist)|let me help)\b",
    "apology": r"\b(sorry|apologi[sz]e)",
    "bullet_list": r"(?m)^\s*([-*\u2022]|\d+[.)])\s+\S",
    "second_person_advice": r"\b(you (can|could|might|may|should) (try|consider|start)|"
    r"here are (some|a few))\b",
}
"""Assistant-style markers: a response shows one when its regex matches (case-insensitive)."""


def marker_hits(texts: Sequence[str]) -> pd.DataFrame:
    """bool [n_texts, n_markers]: whether each text shows each of MARKERS."""
    return pd.DataFrame(
        {
            name: [re.search(pattern, text, re.IGNORECASE) is not None for text in texts]
            for name, pattern in MARKERS.items()
        }
    )


def paired_rates(off: pd.DataFrame, on: pd.DataFrame, n_bootstrap: int, seed: int) -> pd.DataFrame:
    """Per column of two paired bool tables [n, m] (row i: the same prompt and seed): rate_off,
    rate_on, and the mean paired difference on - off with its bootstrap 95% CI."""
    rows = []
    for name in off.columns:
        before = off[name].to_numpy(float)
        after = on[name].to_numpy(float)
        diff, low, high = bootstrap_ci(after - before, n_bootstrap, seed)
        rows.append(
            {
                "marker": name,
                "rate_off": float(before.mean()) if len(before) else float("nan"),
                "rate_on": float(after.mean()) if len(after) else float("nan"),
                "diff": diff,
                "ci_low": low,
                "ci_high": high,
                "n": len(before),
            }
        )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------- conversations

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

DYNAMICS_STEPS = ("rollouts", "classifier", "steering", "markers", "triggers", "write")
"""The steps `run_dynamics` reports to `progress`, in order."""


def _head(system_prompt: str | None) -> Messages:
    return [] if system_prompt is None else [message("system", system_prompt)]


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
    batches: list[list[int]] = []
    for i in sorted(range(len(chats)), key=lambda i: len(formatted[i])):
        if batches and len(formatted[i]) * (len(batches[-1]) + 1) <= batch_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    for rows in batches:
        ids = torch.full((len(rows), len(formatted[rows[-1]])), pad_id, dtype=torch.long)
        for r, i in enumerate(rows):
            ids[r, : len(formatted[i])] = torch.from_numpy(formatted[i].token_ids.astype(np.int64))
        acts = residual_activations(handle, ids, [hook])[hook].float()
        for r, i in enumerate(rows):
            replies = [m for m in chats[i] if m["role"] == "assistant"]
            spoken = [t for t, m in enumerate(replies) if m["content"].strip()]
            spans = assistant_spans(formatted[i].roles)
            if len(spans) != len(spoken):
                raise SaeAtlasError(
                    f"chat {i}: {len(spans)} runs of assistant tokens for {len(spoken)} "
                    "non-empty assistant turns; the chat template mixes roles"
                )
            for turn, (a, b) in zip(spoken, spans, strict=True):
                if turn >= n_turns:
                    continue
                block = acts[r, a:b]
                means[i, turn] = block.mean(0).cpu().numpy()
                norm_sum += float(block.norm(dim=-1).sum())
                norm_count += b - a
                if feature_means is not None:
                    codes = sae.encode(block.to(sae.W_dec.device, sae.W_dec.dtype))
                    feature_means[i, turn] = codes.float().mean(0).cpu().numpy()
    return TurnActivations(means, feature_means, norm_sum / max(norm_count, 1))


# ---------------------------------------------------------------------------- persona space


@dataclass(frozen=True)
class PersonaMap:
    """An atlas's persona space and its regions.

    center [d_model], components [k, d_model], unit_axis [d_model] (the assistant axis, unit
    norm); one region per persona cluster: centroids [r, k] (mean coordinates of its personas),
    names (the default persona's region is "assistant", another is named after its persona
    nearest the centroid), members; personas: the atlas's persona table with a `region` column;
    vectors: persona vectors [P, d_model] in table order; default: the default persona's name.
    """

    center: np.ndarray
    components: np.ndarray
    unit_axis: np.ndarray
    centroids: np.ndarray
    names: tuple[str, ...]
    members: tuple[tuple[str, ...], ...]
    personas: pd.DataFrame
    vectors: np.ndarray
    default: str

    def coords(self, points: np.ndarray) -> np.ndarray:
        """Coordinates [..., k] of residual points [..., d_model]."""
        return (np.asarray(points, dtype=np.float64) - self.center) @ self.components.T

    def axis(self, points: np.ndarray) -> np.ndarray:
        """Projection [...] of residual points [..., d_model] on the assistant axis."""
        return (np.asarray(points, dtype=np.float64) - self.center) @ self.unit_axis

    def vector(self, name: str) -> np.ndarray:
        rows = np.flatnonzero(self.personas["name"].to_numpy() == name)
        if len(rows) == 0:
            raise SaeAtlasError(f"no persona {name!r} in the atlas; see Atlas.personas()")
        return self.vectors[rows[0]]

    def prompt(self, name: str, variant: int) -> str | None:
        """The persona's system prompt number `variant` (cycling; None: no system message)."""
        prompts = self.personas.loc[self.personas["name"] == name, "prompts"].iloc[0]
        return prompts[variant % len(prompts)] if prompts else None

    def region_of(self, name: str) -> int:
        return int(self.personas.loc[self.personas["name"] == name, "region"].iloc[0])


def persona_map(atlas: Atlas, max_clusters: int = 8) -> PersonaMap:
    """Persona space and regions of `atlas`: the persona clusters organize recorded
    (organize_summary), recomputed from the coordinates when the atlas has none."""
    space = atlas.persona_space()
    personas = atlas.personas()
    names = personas["name"].astype(str).tolist()
    coords = np.stack(personas["coords"].to_list()).astype(np.float64)
    recorded = json.loads(atlas.attrs.get("organize_summary", "{}")).get("persona_space", {})
    default = str(recorded.get("default_persona", DEFAULT_PERSONA_NAME))
    if default not in names:
        raise SaeAtlasError(
            f"{atlas.path}: the default persona {default!r} is not among its personas; "
            "rebuild the atlas with the default persona in the corpus"
        )
    cluster_of = recorded.get("cluster_of") or dict(
        zip(names, persona_clusters(coords, max_clusters).tolist(), strict=True)
    )
    ids = sorted(set(cluster_of.values()))
    region = np.array([ids.index(cluster_of[name]) for name in names])
    centroids = np.stack([coords[region == r].mean(0) for r in range(len(ids))])
    region_names, members = [], []
    for r in range(len(ids)):
        rows = np.flatnonzero(region == r)
        members.append(tuple(names[i] for i in rows))
        if region[names.index(default)] == r:
            region_names.append("assistant")
            continue
        nearest = rows[np.argmin(((coords[rows] - centroids[r]) ** 2).sum(1))]
        region_names.append(names[nearest] + (f"+{len(rows) - 1}" if len(rows) > 1 else ""))
    axis = np.asarray(space["assistant_axis"], dtype=np.float64)
    norm = float(np.linalg.norm(axis))
    return PersonaMap(
        center=np.asarray(space["center"], dtype=np.float64),
        components=np.asarray(space["components"], dtype=np.float64),
        unit_axis=axis / norm if norm > 0 else axis,
        centroids=centroids,
        names=tuple(region_names),
        members=tuple(members),
        personas=personas.assign(region=region),
        vectors=atlas.persona_vectors(),
        default=default,
    )


def starting_personas(pmap: PersonaMap, config: DynamicsConfig) -> list[str]:
    """config.personas, or the default persona then up to n_personas - 1 others taken in turn
    from each region (conditional personas left out: without their trigger they are the
    assistant)."""
    names = pmap.personas["name"].astype(str).tolist()
    if config.personas:
        missing = [name for name in config.personas if name not in names]
        if missing:
            raise SaeAtlasError(
                f"dynamics.personas: {missing} not in the atlas; use some of {', '.join(names)}"
            )
        return list(config.personas)
    table = pmap.personas
    queues = [
        [
            str(name)
            for name, category in zip(
                table.loc[table["region"] == r, "name"],
                table.loc[table["region"] == r, "category"],
                strict=True,
            )
            if name != pmap.default and category != "conditional"
        ]
        for r in range(len(pmap.names))
    ]
    chosen = [pmap.default]
    while len(chosen) < config.n_personas and any(queues):
        for queue in queues:
            if queue and len(chosen) < config.n_personas:
                chosen.append(queue.pop(0))
    return chosen


def region_paths(pmap: PersonaMap, coords: np.ndarray) -> np.ndarray:
    """Region [n, T] of turn coordinates [n, T, k]; a turn without a point (an empty response)
    keeps the previous turn's region (the assistant region at turn 0)."""
    n, turns, _ = coords.shape
    flat = coords.reshape(n * turns, -1)
    finite = np.isfinite(flat).all(1)
    regions = np.full(n * turns, -1, dtype=np.int64)
    if finite.any():
        regions[finite] = nearest_region(flat[finite], pmap.centroids)
    regions = regions.reshape(n, turns)
    for t in range(turns):
        previous = regions[:, t - 1] if t else np.full(n, pmap.names.index("assistant"))
        regions[:, t] = np.where(regions[:, t] < 0, previous, regions[:, t])
    return regions


# ---------------------------------------------------------------------------- experiments


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
    meta: pd.DataFrame,
    heads: Sequence[Messages],
    user_turns: Sequence[Sequence[str]],
    seeds: Sequence[int],
    n_turns: int,
    config: DynamicsConfig,
    hook: str,
    steering: Sequence[tuple[Intervention, ...]] | None = None,
    sae: Any = None,
    model: torch.nn.Module | None = None,
) -> Rollouts:
    """Sample the conversations (`converse`) and place every assistant turn in persona space."""
    chats = converse(
        handle,
        heads,
        user_turns,
        seeds,
        n_turns,
        sampling_config(config),
        config.model_plays_user,
        steering,
        model=model,
    )
    acts = turn_activations(handle, chats, hook, n_turns, sae)
    coords = pmap.coords(acts.means)
    texts = [[m["content"] for m in chat if m["role"] == "assistant"] for chat in chats]
    return Rollouts(
        meta=meta.reset_index(drop=True),
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


def _turns(bank: Sequence[str], offset: int, n: int) -> list[str]:
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
    heads: list[Messages] = []
    turns: list[list[str]] = []
    seeds: list[int] = []
    rows: list[dict[str, Any]] = []
    category = dict(zip(pmap.personas["name"], pmap.personas["category"], strict=True))
    for name in starting_personas(pmap, config):
        for s in range(config.seeds):
            heads.append(_head(pmap.prompt(name, s)))
            turns.append(_turns(bank, s * config.n_turns, config.n_turns))
            seeds.append(job_seed(config.seed, "rollout", s))
            rows.append(
                {"experiment": "persona_prompt", "start": name, "group": category[name], "seed": s}
            )
    for scene, text in SCENES[: config.n_scenes]:
        for s in range(config.seeds):
            heads.append([])
            turns.append([text, *_turns(bank, s * config.n_turns + 1, config.n_turns - 1)])
            seeds.append(job_seed(config.seed, "rollout", s))
            rows.append(
                {"experiment": "scene", "start": f"scene:{scene}", "group": "scene", "seed": s}
            )
    return run_conversations(
        handle,
        pmap,
        pd.DataFrame(rows),
        heads,
        turns,
        seeds,
        config.n_turns,
        config,
        hook,
        model=model,
    )


def steering_targets(pmap: PersonaMap, config: DynamicsConfig, known: Collection[str]) -> list[str]:
    """config.steer_personas, or the n_steer personas (of those the classifier knows, not
    conditional) lowest on the assistant axis: the farthest from the assistant."""
    if config.steer_personas:
        unknown = [name for name in config.steer_personas if name not in known]
        if unknown:
            raise SaeAtlasError(
                f"dynamics.steer_personas: {unknown} have no responses in the corpus, so the "
                "classifier cannot score them; pick personas of the corpus"
            )
        return list(config.steer_personas)
    table = pmap.personas
    eligible = table[
        table["name"].isin(list(known))
        & (table["name"] != pmap.default)
        & (table["category"] != "conditional")
    ]
    return eligible.sort_values("axis_projection")["name"].head(config.n_steer).tolist()


def steering_kicks(
    handle: ModelHandle,
    pmap: PersonaMap,
    bank: Sequence[str],
    config: DynamicsConfig,
    hook: str,
    targets: Sequence[str],
    strength: float,
    model: torch.nn.Module | None = None,
) -> Rollouts:
    """(c) Default-persona conversations on n_prompts prompts, kicked at turn 0 only along each
    target's direction (persona vector minus default vector) or a matched random direction, or
    not kicked (control "none"); prompt i samples from the same seed in every condition."""
    default_vector = pmap.vector(pmap.default)
    conditions: list[tuple[str, str, tuple[Intervention, ...]]] = [("none", "", ())]
    for target in targets:
        direction = pmap.vector(target) - default_vector
        random = matched_random(direction, job_seed(config.seed, "random", target) % 2**32)
        conditions.append(("persona", target, (add_direction(hook, direction, strength),)))
        conditions.append(("random", target, (add_direction(hook, random, strength),)))
    heads, turns, seeds, steering, rows = [], [], [], [], []
    for control, target, interventions in conditions:
        for i in range(config.n_prompts):
            heads.append(_head(pmap.prompt(pmap.default, 0)))
            turns.append(_turns(bank, 1000 + i * config.n_turns, config.n_turns))
            seeds.append(job_seed(config.seed, "kick", i))
            steering.append(interventions)
            rows.append({"control": control, "target": target, "prompt": i})
    return run_conversations(
        handle,
        pmap,
        pd.DataFrame(rows),
        heads,
        turns,
        seeds,
        config.n_turns,
        config,
        hook,
        steering,
        model=model,
    )


def kick_relaxation(kicks: Rollouts, pmap: PersonaMap) -> pd.DataFrame:
    """Per target, control (persona, random) and turn: the mean distance in persona space to
    the unkicked conversation on the same prompt and seed, its 95% CI, and the share of turns
    in the target's region (control none: the unkicked share)."""
    meta = kicks.meta
    base = kicks.coords[(meta["control"] == "none").to_numpy()]
    frames = []
    for target in dict.fromkeys(meta.loc[meta["control"] != "none", "target"]):
        region = pmap.region_of(target)
        for control in ("none", "persona", "random"):
            mask = ((meta["control"] == control) & (meta["target"].isin([target, ""]))).to_numpy()
            distance = np.linalg.norm(kicks.coords[mask] - base, axis=-1)
            curve = drift_curves(distance, [control] * int(mask.sum()))
            curve["in_target_region"] = (kicks.regions[mask] == region).mean(0)
            frames.append(curve.assign(target=target).rename(columns={"group": "control"}))
    return pd.concat(frames, ignore_index=True)


def half_life(curve: pd.DataFrame) -> float:
    """First turn after 0 where a kick's mean distance is at most half its turn-0 value (NaN:
    never within the rollout)."""
    means = curve.sort_values("turn")["mean"].to_numpy()
    below = np.flatnonzero(means[1:] <= means[0] / 2)
    return float(below[0] + 1) if len(below) else float("nan")


def steering_scores(
    kicks: Rollouts, classifier: PersonaClassifier, n_bootstrap: int, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The classifier's probability of the target persona on the kicked turn (turn 0).

    Returns (per response: control, target, prompt, text, p_target; per target and "all":
    mean paired difference persona - random kick over prompts with its bootstrap 95% CI, and
    the mean probability under each control)."""
    meta = kicks.meta
    texts = [turns[0] if turns else "" for turns in kicks.texts]
    proba = classifier.predict_proba(texts)
    responses = []
    for target in dict.fromkeys(meta.loc[meta["control"] != "none", "target"]):
        for control in ("none", "persona", "random"):
            mask = ((meta["control"] == control) & (meta["target"].isin([target, ""]))).to_numpy()
            responses.append(
                pd.DataFrame(
                    {
                        "control": control,
                        "target": target,
                        "prompt": meta.loc[mask, "prompt"].to_numpy(),
                        "text": [texts[i] for i in np.flatnonzero(mask)],
                        "p_target": proba.loc[mask, target].to_numpy(),
                    }
                )
            )
    per_response = pd.concat(responses, ignore_index=True)
    pivot = per_response.pivot_table(
        index=["target", "prompt"], columns="control", values="p_target"
    ).reset_index()
    pivot["diff"] = pivot["persona"] - pivot["random"]
    rows = []
    for target, block in [*pivot.groupby("target", sort=False), ("all", pivot)]:
        mean, low, high = bootstrap_ci(block["diff"].to_numpy(), n_bootstrap, seed)
        rows.append(
            {
                "target": target,
                "mean_diff": mean,
                "ci_low": low,
                "ci_high": high,
                "n": len(block),
                "p_persona": float(block["persona"].mean()),
                "p_random": float(block["random"].mean()),
                "p_none": float(block["none"].mean()),
            }
        )
    return per_response, pd.DataFrame(rows)


def marker_ablation(
    handle: ModelHandle,
    pmap: PersonaMap,
    sae: Any,
    hook: str,
    features: Sequence[int],
    starts: Sequence[str],
    bank: Sequence[str],
    config: DynamicsConfig,
    model: torch.nn.Module | None = None,
    means: np.ndarray | None = None,
) -> pd.DataFrame:
    """One response per starting persona and prompt, without and with ablating `features`
    through the SAE (zero, and with `means` [d_sae] also mean ablation), on the same seeds.

    Per ablation and marker (MARKERS, and `any`: some marker) the paired rates against the
    unablated responses (`paired_rates`), with an `ablation` column (zero, mean).
    """
    ablations = {"zero": (ablate_features(hook, sae, features),)}
    if means is not None:
        ablations["mean"] = (ablate_features(hook, sae, features, "mean", means),)
    heads, turns, seeds, steering = [], [], [], []
    for condition in ((), *ablations.values()):
        for name in starts:
            for i in range(config.n_prompts):
                heads.append(_head(pmap.prompt(name, 0)))
                turns.append([bank[(2000 + i) % len(bank)]])
                seeds.append(job_seed(config.seed, "markers", name, i))
                steering.append(condition)
    chats = converse(
        handle,
        heads,
        turns,
        seeds,
        1,
        sampling_config(config),
        config.model_plays_user,
        steering,
        model=model,
    )
    hits = marker_hits([chat[-1]["content"] for chat in chats])
    hits["any"] = hits.any(axis=1)
    n = len(starts) * config.n_prompts
    off = hits.iloc[:n].reset_index(drop=True)
    return pd.concat(
        [
            paired_rates(
                off,
                hits.iloc[(k + 1) * n : (k + 2) * n].reset_index(drop=True),
                config.n_bootstrap,
                config.seed,
            ).assign(ablation=name)
            for k, name in enumerate(ablations)
        ],
        ignore_index=True,
    )


def trigger_responses(
    handle: ModelHandle,
    pmap: PersonaMap,
    sae: Any,
    hook: str,
    questions: Sequence[str],
    wrappers: Mapping[str, Trigger],
    config: DynamicsConfig,
    model: torch.nn.Module | None = None,
) -> Rollouts:
    """(d) n_prompts questions x seeds without a system prompt, plain and inside each of
    `wrappers`, on the same seeds: one response each, with the SAE features it fires
    (meta: wrapper, prompt, seed; the plain rows first)."""
    check_dynamics_config(config)
    heads: list[Messages] = []
    turns, seeds, rows = [], [], []
    for name, wrapper in [("plain", Trigger("")), *wrappers.items()]:
        for i in range(config.n_prompts):
            for s in range(config.seeds):
                heads.append([])
                turns.append([wrapper.wrap(questions[i % len(questions)])])
                seeds.append(job_seed(config.seed, "trigger", i, s))
                rows.append({"wrapper": name, "prompt": i, "seed": s})
    return run_conversations(
        handle, pmap, pd.DataFrame(rows), heads, turns, seeds, 1, config, hook, sae=sae, model=model
    )


def trigger_scan(
    handle: ModelHandle,
    pmap: PersonaMap,
    sae: Any,
    hook: str,
    bank: Sequence[str],
    config: DynamicsConfig,
    model: torch.nn.Module | None = None,
) -> pd.DataFrame:
    """The trigger scan over config.wrappers on questions of the bank (`trigger_responses`):
    features that fire on the response only under a wrapper
    (`sae_atlas.stages.triggers.trigger_table`: the first half of the prompts discovers, the rest
    confirms, BH over every wrapper)."""
    questions = [bank[(3000 + i) % len(bank)] for i in range(config.n_prompts)]
    wrappers = {name: WRAPPERS[name] for name in config.wrappers}
    scan = trigger_responses(handle, pmap, sae, hook, questions, wrappers, config, model)
    assert scan.fires is not None
    return trigger_table(
        scan.fires[:, 0],
        scan.meta["wrapper"].to_numpy(),
        scan.meta["prompt"].to_numpy(),
        config.wrappers,
        config.trigger_min_rate,
        config.trigger_max_base_rate,
        config.fdr,
    )


# ---------------------------------------------------------------------------- the stage


@dataclass(frozen=True)
class DynamicsPaths:
    """The run files dynamics reads: the atlas (written to), the corpus and the SAE folder
    (sae-lens format, or a folder holding one per hook as `sae-atlas train` writes)."""

    atlas: Path
    transcripts: Path
    sae: Path

    @classmethod
    def from_run(cls, run: str | Path) -> DynamicsPaths:
        run = Path(run)
        paths = cls(run / "atlas.h5", run / "transcripts.h5", run / "sae")
        missing = [str(p) for p in (paths.atlas, paths.transcripts, paths.sae) if not p.exists()]
        if missing:
            raise SaeAtlasError(
                f"{run}: lacks {', '.join(missing)}; run `sae-atlas build` into it first"
            )
        return paths


@dataclass(frozen=True)
class DynamicsResult:
    """Where the results went (atlas dynamics/), whether they were already there, and the
    summary (config, timings, headline numbers) stored as dynamics/summary."""

    path: Path
    skipped: bool
    seconds: float
    summary: dict[str, Any]


COLUMNS: dict[str, str] = {
    "experiment": "persona_prompt (a system prompt, then neutral questions) or scene (no "
    "system prompt after a scene-setting first turn)",
    "start": "starting persona, or scene:<name>",
    "group": "the start's persona category (scene for scenes)",
    "seed": "rollout seed index",
    "rollout": "row of the conversation among the rollouts",
    "turn": "assistant turn, from 0",
    "region": "nearest region (row of dynamics/regions)",
    "region_name": "name of the region",
    "axis_projection": "projection of the turn's mean residual on the unit assistant axis",
    "text": "the assistant's turn",
    "id": "region id (row of transition_matrix)",
    "name": "region name (the default persona's region is assistant)",
    "personas": "personas of the region (;-separated)",
    "stationary": "long-run share of turns in the region",
    "in_attractor": "share of bootstrap resamples of the rollouts in which the region lies in "
    "an attractor",
    "found": "share of bootstrap resamples of the rollouts with exactly this attractor",
    "in_estimate": "the attractor is found on all rollouts (dynamics/attractors)",
    "attractor": "attractor id",
    "regions": "regions of the attractor (;-separated names)",
    "stationary_mass": "stationary mass of the attractor",
    "basin": "share of the start's rollouts that end in the attractor",
    "relaxation": "mean turns until the start's rollouts enter the attractor for good (NaN: "
    "none does)",
    "curve": "raw (the projection) or baseline (minus the default persona's rollout on the "
    "same user turns and seed)",
    "mean": "mean over rollouts",
    "ci_low": "lower end of the 95% confidence interval",
    "ci_high": "upper end of the 95% confidence interval",
    "n": "number of values",
    "control": "none (no kick), persona (kick along the target's direction) or random "
    "(matched random direction)",
    "target": "the persona steered toward (all: every target pooled)",
    "in_target_region": "share of turns in the target's region",
    "prompt": "prompt index",
    "p_target": "persona classifier's probability of the target persona",
    "mean_diff": "mean paired difference of p_target, persona kick minus random kick",
    "p_persona": "mean p_target under the persona kick",
    "p_random": "mean p_target under the random kick",
    "p_none": "mean p_target without a kick",
    "marker": "assistant-style marker (sae_atlas.stages.dynamics.MARKERS; any: some marker)",
    "rate_off": "share of responses with the marker, no ablation",
    "rate_on": "share of responses with the marker, the ablate_tag (puppeteer) features ablated",
    "ablation": "zero (the features' activations set to 0) or mean (set to their mean over "
    "response tokens)",
    "diff": "mean paired difference rate_on - rate_off",
    "wrapper": "wrapper of the user's message (sae_atlas.stages.triggers.WRAPPERS)",
    "feature": "SAE feature",
    "cluster": "feature cluster (-1: noise)",
    "cluster_kind": "kind of the feature's cluster",
    "label": "feature label",
    "rate_wrapped": "firing rate on responses with the wrapper, discovery prompts",
    "rate_plain": "firing rate on responses without it, discovery prompts",
    "heldout_rate_wrapped": "firing rate with the wrapper, held-out prompts",
    "heldout_rate_plain": "firing rate without it, held-out prompts",
    "p_value": "one-sided Fisher exact p-value on held-out prompts",
    "q_value": "Benjamini-Hochberg q-value over every wrapper",
    "confirmed": "q_value <= fdr",
}
"""Descriptions of every column of the dynamics/ tables."""


def _write_table(writer: AtlasWriter, name: str, table: pd.DataFrame, description: str) -> None:
    writer.write_dynamics(
        name,
        table,
        description,
        column_descriptions={c: COLUMNS[c] for c in table.columns},
    )


def stored_summary(atlas_path: str | Path) -> dict[str, Any] | None:
    """dynamics/summary of an atlas (None when it has none)."""
    with Atlas.open(atlas_path) as atlas:
        if "summary" not in atlas.dynamics_names():
            return None
        return dict(json.loads(str(atlas.dynamics("summary"))))


def _trajectories(rollouts: Rollouts, pmap: PersonaMap) -> pd.DataFrame:
    n, turns = rollouts.regions.shape
    table = rollouts.meta.loc[np.repeat(np.arange(n), turns)].reset_index(drop=True)
    return table.assign(
        rollout=np.repeat(np.arange(n), turns),
        turn=np.tile(np.arange(turns), n),
        region=rollouts.regions.ravel(),
        region_name=np.asarray(pmap.names, dtype=object)[rollouts.regions.ravel()],
        axis_projection=rollouts.axis.ravel(),
        text=[t[k] if k < len(t) else "" for t in rollouts.texts for k in range(turns)],
    )


KICK_DESCRIPTION = (
    "steering kick at turn 0 and the relaxation after it: per target, control and turn, the "
    "distance in persona space to the unkicked conversation on the same prompt and seed"
)
STEERING_DESCRIPTION = (
    "persona classifier's probability of the target on the kicked turn: persona kick minus "
    "matched random kick, paired over prompts, bootstrap 95% CI"
)
MARKERS_DESCRIPTION = (
    "assistant-style marker rates with and without zero- and mean-ablating the puppeteer "
    "features (paired over personas x prompts, bootstrap 95% CI); empty without puppeteer "
    "features"
)
TRIGGER_DESCRIPTION = (
    "trigger scan: SAE features firing on responses only under a wrapper (candidates on the "
    "discovery prompts, Fisher test on held-out prompts, BH over every wrapper)"
)


def check_dynamics_config(config: DynamicsConfig) -> None:
    """SaeAtlasError naming the field when a dynamics setting cannot work."""
    for name in ("n_personas", "seeds", "n_prompts", "max_new_tokens", "batch_size"):
        if getattr(config, name) < 1:
            raise SaeAtlasError(f"dynamics.{name}: is {getattr(config, name)}; use >= 1")
    if config.n_turns < 2:
        raise SaeAtlasError(
            f"dynamics.n_turns: is {config.n_turns}; transitions need at least 2 turns"
        )
    if not 0 <= config.n_scenes <= len(SCENES):
        raise SaeAtlasError(f"dynamics.n_scenes: use 0..{len(SCENES)}")
    if config.n_prompts < 2:
        raise SaeAtlasError("dynamics.n_prompts: the trigger scan needs at least 2 prompts")
    unknown = [name for name in config.wrappers if name not in WRAPPERS]
    if unknown or not config.wrappers:
        raise SaeAtlasError(
            f"dynamics.wrappers: {unknown or 'none'}; use some of {', '.join(WRAPPERS)}"
        )


def baseline_rows(meta: pd.DataFrame, default: str) -> np.ndarray:
    """bool [n]: the natural rollouts that are the drift baseline (the default persona's)."""
    return ((meta["experiment"] == "persona_prompt") & (meta["start"] == default)).to_numpy()


def drift_tables(
    natural: Rollouts, default: str
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Assistant-axis drift per turn: per category raw, per category minus the default
    persona's rollout on the same seed (paired: 95% CIs of the paired differences), and per
    start both (a `curve` column: raw or baseline; the start in `start`)."""
    meta = natural.meta
    relative = relative_to_baseline(
        natural.axis, meta["seed"].tolist(), baseline_rows(meta, default)
    )
    starts = meta["start"].tolist()
    by_start = pd.concat(
        [
            drift_curves(values, starts).rename(columns={"group": "start"}).assign(curve=curve)
            for values, curve in ((natural.axis, "raw"), (relative, "baseline"))
        ],
        ignore_index=True,
    )
    categories = meta["group"].tolist()
    return drift_curves(natural.axis, categories), drift_curves(relative, categories), by_start


def dynamics_tables(
    natural: Rollouts,
    pmap: PersonaMap,
    matrix: np.ndarray,
    stationary: np.ndarray,
    attractors: Sequence[Attractor],
    robustness: tuple[dict[tuple[int, ...], float], np.ndarray],
) -> dict[str, tuple[pd.DataFrame, str]]:
    """The tables of the natural rollouts: trajectories, regions, attractors and their
    robustness (`attractor_robustness`), drift raw and baseline-subtracted."""
    found, in_attractor = robustness
    regions = pd.DataFrame(
        {
            "id": np.arange(len(pmap.names)),
            "name": list(pmap.names),
            "personas": [";".join(m) for m in pmap.members],
            "stationary": stationary,
            "in_attractor": in_attractor,
        }
    )
    estimated = {a.regions for a in attractors}
    robust = pd.DataFrame(
        [
            {
                "regions": ";".join(pmap.names[r] for r in members),
                "found": share,
                "in_estimate": members in estimated,
            }
            for members, share in {
                **found,
                **{m: 0.0 for m in estimated if m not in found},
            }.items()
        ],
        columns=["regions", "found", "in_estimate"],
    )
    basins = pd.DataFrame(
        [
            {
                "attractor": k,
                "regions": ";".join(pmap.names[r] for r in a.regions),
                "stationary_mass": a.stationary_mass,
                "start": start,
                "basin": share,
                "relaxation": a.relaxation.get(start, float("nan")),
            }
            for k, a in enumerate(attractors)
            for start, share in a.basin.items()
        ],
        columns=["attractor", "regions", "stationary_mass", "start", "basin", "relaxation"],
    )
    drift, drift_baseline, drift_by_start = drift_tables(natural, pmap.default)
    return {
        "trajectories": (
            _trajectories(natural, pmap),
            "one row per rollout and assistant turn: provenance, region, assistant-axis "
            "projection, text",
        ),
        "regions": (regions, "regions of persona space: persona clusters"),
        "attractors": (
            basins,
            "closed classes of the transition matrix: per attractor and start, basin share "
            "and relaxation turns",
        ),
        "attractor_robustness": (
            robust,
            "attractor sets found when the rollouts are resampled with replacement: share of "
            "resamples with each closed class",
        ),
        "drift": (
            drift,
            "assistant-axis projection per turn, mean and 95% CI per start category",
        ),
        "drift_baseline": (
            drift_baseline,
            "assistant-axis projection per turn minus the default persona's rollout with the "
            "same user turns and seed (what turn position alone does): paired mean and 95% CI "
            "per start category",
        ),
        "drift_by_start": (
            drift_by_start,
            "drift and drift_baseline per starting persona or scene (curve: raw or baseline)",
        ),
    }


def run_dynamics(
    handle: ModelHandle,
    run: str | Path | DynamicsPaths,
    config: DynamicsConfig,
    progress: Callable[[str], None] | None = None,
    overwrite: bool = False,
) -> DynamicsResult:
    """Run every experiment on a built run and write dynamics/ into its atlas.

    `run`: a run folder (atlas.h5, transcripts.h5, sae/) or DynamicsPaths. Skipped when the
    atlas holds dynamics for the same model and config (its dtype resolved: "auto" becomes the
    dtype sampling runs in here); another config raises unless `overwrite`. `progress(step)` as
    each of DYNAMICS_STEPS starts.
    """
    started = time.perf_counter()
    paths = run if isinstance(run, DynamicsPaths) else DynamicsPaths.from_run(run)
    check_dynamics_config(config)
    choice = resolve_dtype(config.dtype, str(handle.device))
    config = replace(config, dtype=choice.name)
    stored = stored_summary(paths.atlas)
    if stored is not None and not overwrite:
        if stored.get("config") == to_dict(config) and stored.get("model") == handle.model_id:
            return DynamicsResult(paths.atlas, True, 0.0, stored)
        made_in = stored.get("config", {}).get("dtype")
        refuse_other_dtype(paths.atlas, made_in, choice, "pass --overwrite to replace them")
        raise SaeAtlasError(
            f"{paths.atlas}: holds dynamics from another model or config; pass overwrite "
            "(--overwrite) to replace them"
        )
    clock = Stopwatch(progress)
    with Atlas.open(paths.atlas) as atlas:
        pmap = persona_map(atlas)
        hook = str(atlas.attrs["hook"])
        features = atlas.features()
        puppeteer = atlas.features(tag=config.ablate_tag).index.to_numpy()
        mean_activations = (features["density"] * features["mean_act"]).to_numpy(np.float32)
        kinds = dict(zip(atlas.clusters()["id"], atlas.clusters()["kind"], strict=True))
        d_sae = atlas.d_sae
    sae = load_sae(
        paths.sae / hook if (paths.sae / hook).is_dir() else paths.sae, device=str(handle.device)
    )
    if int(sae.cfg.d_sae) != d_sae:
        raise SaeAtlasError(
            f"{paths.sae}: has {sae.cfg.d_sae} features, the atlas {d_sae}; give the SAE the "
            "atlas was built from"
        )
    bank = question_bank(paths.transcripts, config.seed)
    model = sampling_model(handle, config.dtype)
    with clock.step("rollouts"):
        natural = natural_rollouts(handle, pmap, bank, config, hook, model)
        starts = natural.meta["start"].tolist()
        matrix, stationary, attractors = find_attractors(
            natural.regions, starts, len(pmap.names), config.attractor_threshold
        )
        robustness = attractor_robustness(
            natural.regions,
            len(pmap.names),
            config.attractor_threshold,
            config.n_bootstrap,
            config.seed,
        )
    with clock.step("classifier"):
        corpus = corpus_responses(paths.transcripts, handle)
        classifier = train_classifier(
            corpus["text"].tolist(),
            corpus["persona"].astype(str).tolist(),
            corpus["split"].astype(str).tolist(),
            seed=config.seed,
        )
    with clock.step("steering"):
        targets = steering_targets(pmap, config, classifier.personas)
        strength = config.steer_scale * natural.token_norm
        kicks = steering_kicks(handle, pmap, bank, config, hook, targets, strength, model)
        relaxation = kick_relaxation(kicks, pmap)
        steered, steering = steering_scores(kicks, classifier, config.n_bootstrap, config.seed)
    with clock.step("markers"):
        markers = (
            marker_ablation(
                handle,
                pmap,
                sae,
                hook,
                puppeteer.tolist(),
                starting_personas(pmap, config),
                bank,
                config,
                model,
                means=mean_activations,
            )
            if len(puppeteer)
            else paired_rates(marker_hits([]), marker_hits([]), 1, config.seed).assign(
                ablation="zero"
            )
        )
    with clock.step("triggers"):
        triggers = trigger_scan(handle, pmap, sae, hook, bank, config, model)
        cluster = features["cluster"].to_numpy()[triggers["feature"].to_numpy()]
        triggers = triggers.assign(
            cluster=cluster,
            cluster_kind=[kinds.get(c, "noise") for c in cluster],
            label=features["label"].to_numpy()[triggers["feature"].to_numpy()],
        )
    with clock.step("write"):
        tables = dynamics_tables(natural, pmap, matrix, stationary, attractors, robustness)
        summary = json_ready(
            {
                "model": handle.model_id,
                "hook": hook,
                "config": to_dict(config),
                "regions": list(pmap.names),
                "stationary": dict(zip(pmap.names, stationary.tolist(), strict=True)),
                "attractors": [
                    {
                        "regions": [pmap.names[r] for r in a.regions],
                        "stationary_mass": a.stationary_mass,
                        "basin": a.basin,
                        "relaxation": a.relaxation,
                    }
                    for a in attractors
                ],
                "attractor_robustness": tables["attractor_robustness"][0].to_dict("records"),
                "n_transitions": int(natural.regions.size - len(natural.regions)),
                "token_norm": natural.token_norm,
                "steer_strength": strength,
                "steer_targets": targets,
                "kick_half_life": {
                    target: half_life(block[block["control"] == "persona"])
                    for target, block in relaxation.groupby("target", sort=False)
                },
                "classifier_heldout_accuracy": classifier.heldout_accuracy,
                "classifier_chance": classifier.chance,
                "steering": steering.to_dict("records"),
                "ablated_tag": config.ablate_tag,
                "n_ablated_features": len(puppeteer),
                "markers": markers.to_dict("records"),
                "trigger_candidates": triggers.groupby("wrapper").size().to_dict(),
                "trigger_confirmed": triggers[triggers["confirmed"]]
                .groupby("wrapper")
                .size()
                .to_dict(),
            }
        )
        with AtlasWriter.extend(paths.atlas) as writer:
            if "dynamics" in writer.file:
                del writer.file["dynamics"]
            runtime = json.loads(writer.file.attrs.get(RUNTIME_ATTR, "{}"))
            writer.file.attrs[RUNTIME_ATTR] = json.dumps({**runtime, "dynamics": choice.record()})
            for name, (table, description) in tables.items():
                _write_table(writer, name, table, description)
            writer.write_dynamics(
                "coords",
                natural.coords.reshape(-1, natural.coords.shape[-1]).astype(np.float32),
                "persona-space coordinates [rows of trajectories, n_components] of each turn "
                "(NaN: an empty response)",
            )
            writer.write_dynamics(
                "region_centroids",
                pmap.centroids.astype(np.float32),
                "coordinates [n_regions, n_components] of each region's centroid",
            )
            writer.write_dynamics(
                "transition_matrix",
                matrix,
                "row-stochastic turn-to-turn transition matrix [n_regions, n_regions] of the "
                "rollouts (persona_prompt and scene)",
            )
            _write_table(writer, "kick", relaxation, KICK_DESCRIPTION)
            _write_table(writer, "steering", steering, STEERING_DESCRIPTION)
            _write_table(writer, "steering_responses", steered, "kicked turns, scored")
            _write_table(writer, "markers", markers, MARKERS_DESCRIPTION)
            _write_table(writer, "trigger_scan", triggers, TRIGGER_DESCRIPTION)
            summary["seconds"] = {**clock.seconds, "total": time.perf_counter() - started}
            writer.write_dynamics(
                "summary", json.dumps(summary), "JSON: config, model, timings, headline numbers"
            )
    return DynamicsResult(paths.atlas, False, time.perf_counter() - started, summary)
