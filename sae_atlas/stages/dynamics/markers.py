"""Assistant-style markers in responses and what ablating features does to them.

`MARKERS` are regexes for assistant-style traits ("as an AI", "happy to help", bullet lists, ...);
`marker_hits` flags them per text, `paired_rates` compares two paired sets of responses (rates and
the mean paired difference with a bootstrap 95% CI), and `marker_ablation` is the puppeteer part
of experiment (c): one response per starting persona and prompt, without and with zero- and
mean-ablating features through the SAE, on the same seeds. Sampling costs (1 + ablations) x
starts x n_prompts one-turn responses; the rates are milliseconds.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from sae_atlas.config import DynamicsConfig
from sae_atlas.model import ModelHandle, ablate_features, job_seed
from sae_atlas.stages.dynamics.rollouts import ConversationPlan, sample_chats
from sae_atlas.stages.dynamics.space import PersonaMap
from sae_atlas.stats import bootstrap_ci

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
    plan = ConversationPlan()
    for condition in ((), *ablations.values()):
        for name in starts:
            for i in range(config.n_prompts):
                plan.add(
                    pmap.prompt(name, 0),
                    [bank[(2000 + i) % len(bank)]],
                    job_seed(config.seed, "markers", name, i),
                    steering=condition,
                )
    chats = sample_chats(handle, plan, 1, config, model)
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
