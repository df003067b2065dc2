"""Experiment (c), the steering kick: a persona direction (persona vector minus default vector)
added at turn 0 only, against a matched random direction and no kick on the same seeds.

`steering_kicks` samples the conversations (n_prompts x (1 + 2 x targets) rollouts of n_turns);
`kick_relaxation` measures the distance per turn to the unkicked conversation (the relaxation)
and `half_life` how soon it halves; `steering_scores` scores the kicked turn with the persona
classifier (the target's probability, mean paired difference to the random kick with a bootstrap
95% CI over prompts). Sampling costs what the rollouts cost; the scores are milliseconds.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
import pandas as pd
import torch

from sae_atlas.classifier import PersonaClassifier
from sae_atlas.config import DynamicsConfig
from sae_atlas.errors import SaeAtlasError
from sae_atlas.model import Intervention, ModelHandle, add_direction, job_seed, matched_random
from sae_atlas.stages.dynamics.drift import drift_curves
from sae_atlas.stages.dynamics.rollouts import (
    ConversationPlan,
    Rollouts,
    bank_turns,
    run_conversations,
)
from sae_atlas.stages.dynamics.space import PersonaMap
from sae_atlas.stats import bootstrap_ci


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
    plan = ConversationPlan()
    for control, target, interventions in conditions:
        for i in range(config.n_prompts):
            plan.add(
                pmap.prompt(pmap.default, 0),
                bank_turns(bank, 1000 + i * config.n_turns, config.n_turns),
                job_seed(config.seed, "kick", i),
                {"control": control, "target": target, "prompt": i},
                interventions,
            )
    return run_conversations(handle, pmap, plan, config.n_turns, config, hook, model=model)


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
