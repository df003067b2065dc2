"""Experiment (d), the wrapper scan: which SAE features fire on responses only when the user's
message is inside a wrapper (`WRAPPERS`: tags, a year, a deployment marker), the dynamics
stage's search for hidden triggers (label's `trigger:<wrapper>` feature tags are another
analysis).

`wrapper_responses` samples n_prompts questions x seeds without a system prompt, plain and inside
each wrapper, on the same seeds, one response each with the SAE features it fires;
`scan_wrappers` runs it on questions of the bank and returns the firing table
(`firing_table`). Cost: (1 + wrappers) x n_prompts x seeds one-turn responses and one forward
pass each through the hook and the SAE encoder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch

from sae_atlas.config import DynamicsConfig
from sae_atlas.model import ModelHandle, job_seed
from sae_atlas.personas import Trigger
from sae_atlas.stages.dynamics.checks import check_dynamics_config
from sae_atlas.stages.dynamics.rollouts import ConversationPlan, Rollouts, run_conversations
from sae_atlas.stages.dynamics.space import PersonaMap
from sae_atlas.stages.dynamics.wrapper_firing import WRAPPERS, firing_table


def wrapper_responses(
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
    plan = ConversationPlan()
    for name, wrapper in [("plain", Trigger("")), *wrappers.items()]:
        for i in range(config.n_prompts):
            for s in range(config.seeds):
                plan.add(
                    None,
                    [wrapper.wrap(questions[i % len(questions)])],
                    job_seed(config.seed, "trigger", i, s),
                    {"wrapper": name, "prompt": i, "seed": s},
                )
    return run_conversations(handle, pmap, plan, 1, config, hook, sae=sae, model=model)


def scan_wrappers(
    handle: ModelHandle,
    pmap: PersonaMap,
    sae: Any,
    hook: str,
    bank: Sequence[str],
    config: DynamicsConfig,
    model: torch.nn.Module | None = None,
) -> pd.DataFrame:
    """The wrapper scan over config.wrappers on questions of the bank (`wrapper_responses`):
    features that fire on the response only under a wrapper (`firing_table`: the first half of
    the prompts discovers, the rest confirms, BH over every wrapper)."""
    questions = [bank[(3000 + i) % len(bank)] for i in range(config.n_prompts)]
    wrappers = {name: WRAPPERS[name] for name in config.wrappers}
    scan = wrapper_responses(handle, pmap, sae, hook, questions, wrappers, config, model)
    assert scan.fires is not None
    return firing_table(
        scan.fires[:, 0],
        scan.meta["wrapper"].to_numpy(),
        scan.meta["prompt"].to_numpy(),
        config.wrappers,
        config.trigger_min_rate,
        config.trigger_max_base_rate,
        config.fdr,
    )
