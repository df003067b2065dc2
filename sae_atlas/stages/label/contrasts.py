"""Every persona contrasted against the default persona, feature by feature, and the tags the
tests that hold give.

Candidates are chosen on train questions (AUROC and Cohen's d of response-level means) and
confirmed on held-out ones by a one-sided Mann-Whitney U test under Benjamini-Hochberg control
over every test made; roleplay / assistant tests pool the held-out responses of every persona;
trigger tests contrast the responses to wrapped against those to unwrapped user messages
(response tokens only) under the same system prompts, so neither a system prompt that mentions
the wrapper nor a feature of the wrapper's own tokens makes a trigger.

Cost: ranks [n_responses, F] once per persona and split. Returns `Contrast` ([P, F] scores and a
table of tests) and tags per feature.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sae_atlas.config import LabelConfig
from sae_atlas.stages.label.inputs import HELDOUT, TRAIN, Responses, TriggerSet
from sae_atlas.stats import auroc_and_effect, benjamini_hochberg, mann_whitney_p


@dataclass
class Contrast:
    """Every persona against the default persona, and the tests made.

    train_auroc / train_effect / heldout_auroc / effect: [P, F] (NaN in the default's row and
    where a persona has too few responses in a split; train_effect: Cohen's d on train questions;
    effect: Cohen's d over all questions, the score of top personas). tests: one row per test:
    kind (persona, roleplay, assistant, trigger), feature, target (persona or wrapper),
    train_score, heldout_score, p_value, q_value (Benjamini-Hochberg over all rows), holds.
    """

    train_auroc: np.ndarray
    train_effect: np.ndarray
    heldout_auroc: np.ndarray
    effect: np.ndarray
    tests: pd.DataFrame


def paired_rows(
    responses: Responses, persona: np.ndarray, p: int, split: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of persona p and of the default on the questions both answered (split: None = any)."""
    in_split = np.ones(len(responses), bool) if split is None else responses.split == split
    mine = in_split & (persona == p)
    default = in_split & (persona == responses.default)
    shared = np.intersect1d(responses.question[mine], responses.question[default])
    mine &= np.isin(responses.question, shared)
    default &= np.isin(responses.question, shared)
    return np.flatnonzero(mine), np.flatnonzero(default)


def _test_rows(kind: str, features: np.ndarray, target: str, **columns: Any) -> pd.DataFrame:
    return pd.DataFrame({"kind": kind, "feature": features, "target": target, **columns})


def contrast(
    response_mean: np.ndarray,
    responses: Responses,
    config: LabelConfig,
    triggers: TriggerSet | None = None,
    trigger_max: np.ndarray | None = None,
    persona: np.ndarray | None = None,
) -> Contrast:
    """Contrast personas against the default on response-level means [n_responses, F].

    Candidates are chosen on train questions, tested on held-out ones; `persona` replaces
    `responses.persona` (the shuffled-label control); `triggers` with `trigger_max` [m, F] (its
    responses' maxima) enables the trigger tests.
    """
    persona = responses.persona if persona is None else persona
    shape = (len(responses.names), response_mean.shape[1])
    train_auroc, train_effect, heldout_auroc, effect = (np.full(shape, np.nan) for _ in range(4))
    result = Contrast(train_auroc, train_effect, heldout_auroc, effect, _no_tests())
    others = [p for p in range(len(responses.names)) if p != responses.default]
    tests = []
    for p in others:
        found = _persona_tests(result, response_mean, responses, persona, p, config)
        if found is not None:
            tests.append(found)
    tested = [p for p in others if not np.isnan(train_auroc[p]).all()]
    if len(tested) >= 2:
        tests += _broad_tests(
            response_mean, responses, persona, tested, train_auroc, heldout_auroc, config
        )
    if triggers is not None and trigger_max is not None:
        tests += _trigger_tests(trigger_max, triggers, config)
    result.tests = pd.concat(tests, ignore_index=True) if tests else _no_tests()
    result.tests["q_value"] = benjamini_hochberg(result.tests["p_value"].to_numpy())
    return result


def _no_tests() -> pd.DataFrame:
    """A tests table without rows."""
    return _test_rows(
        "persona",
        np.zeros(0, np.int64),
        "",
        train_score=[],
        heldout_score=[],
        p_value=[],
        holds=[],
    )


def _persona_tests(
    result: Contrast,
    response_mean: np.ndarray,
    responses: Responses,
    persona: np.ndarray,
    p: int,
    config: LabelConfig,
) -> pd.DataFrame | None:
    """Fills row p of `result`'s scores; the persona tests of p (None when a split has fewer than
    two paired responses of p or of the default)."""
    train_rows, train_default = paired_rows(responses, persona, p, TRAIN)
    heldout_rows, heldout_default = paired_rows(responses, persona, p, HELDOUT)
    all_rows, all_default = paired_rows(responses, persona, p, None)
    if len(all_rows) >= 2 and len(all_default) >= 2:
        _, result.effect[p] = auroc_and_effect(response_mean[all_rows], response_mean[all_default])
    if min(len(train_rows), len(train_default), len(heldout_rows), len(heldout_default)) < 2:
        return None
    result.train_auroc[p], result.train_effect[p] = auroc_and_effect(
        response_mean[train_rows], response_mean[train_default]
    )
    result.heldout_auroc[p], _ = auroc_and_effect(
        response_mean[heldout_rows], response_mean[heldout_default]
    )
    train_auroc, train_effect, heldout_auroc = (
        result.train_auroc[p],
        result.train_effect[p],
        result.heldout_auroc[p],
    )
    candidates = np.flatnonzero(
        (train_auroc >= config.auroc_min) & (train_effect >= config.effect_min)
    )
    order = np.lexsort((-train_effect[candidates], -train_auroc[candidates]))
    candidates = candidates[order[: config.max_candidates]]
    p_values = mann_whitney_p(
        response_mean[heldout_rows][:, candidates],
        response_mean[heldout_default][:, candidates],
        "greater",
    )
    return _test_rows(
        "persona",
        candidates,
        responses.names[p],
        train_score=train_auroc[candidates],
        heldout_score=heldout_auroc[candidates],
        p_value=p_values,
        holds=heldout_auroc[candidates] >= config.heldout_auroc_min,
    )


def _broad_tests(
    response_mean: np.ndarray,
    responses: Responses,
    persona: np.ndarray,
    tested: list[int],
    train_auroc: np.ndarray,
    heldout_auroc: np.ndarray,
    config: LabelConfig,
) -> list[pd.DataFrame]:
    """roleplay (up in most personas) and assistant (up in the default) tests, pooled on
    held-out responses of every tested persona against the default's."""
    heldout = responses.split == HELDOUT
    pooled = np.flatnonzero(heldout & np.isin(persona, tested))
    default = np.flatnonzero(heldout & (persona == responses.default))
    low = 1 - config.auroc_min
    out = []
    for kind, alternative, train_share, heldout_share in (
        (
            "roleplay",
            "greater",
            (train_auroc[tested] >= config.auroc_min).mean(0),
            (heldout_auroc[tested] >= config.heldout_auroc_min).mean(0),
        ),
        (
            "assistant",
            "less",
            (train_auroc[tested] <= low).mean(0),
            (heldout_auroc[tested] <= 1 - config.heldout_auroc_min).mean(0),
        ),
    ):
        candidates = np.flatnonzero(train_share >= config.broad_share)
        p_values = mann_whitney_p(
            response_mean[pooled][:, candidates], response_mean[default][:, candidates], alternative
        )
        out.append(
            _test_rows(
                kind,
                candidates,
                kind,
                train_score=train_share[candidates],
                heldout_score=heldout_share[candidates],
                p_value=p_values,
                holds=heldout_share[candidates] >= config.broad_share,
            )
        )
    return out


def _trigger_tests(
    trigger_max: np.ndarray, triggers: TriggerSet, config: LabelConfig
) -> list[pd.DataFrame]:
    """trigger:<wrapper> tests on the maximum over the response's tokens [m, F] of the TriggerSet
    (never the user's message, which holds the wrapper's own tokens):
    fires in at least trigger_min_rate of the wrapped responses and separates them from the same
    conditional personas' unwrapped responses, same system prompts and questions (AUROC >=
    trigger_min_auroc), on train and on held-out questions."""
    values = trigger_max.astype(np.float32)
    out = []
    for w, name in enumerate(triggers.wrappers):
        scores = []
        for split in (TRAIN, HELDOUT):
            mine = (triggers.wrapper == w) & (triggers.split == split)
            wrapped = np.flatnonzero(mine & triggers.wrapped)
            other = np.flatnonzero(mine & ~triggers.wrapped)
            if min(len(wrapped), len(other)) < 2:
                break
            auroc, _ = auroc_and_effect(values[wrapped], values[other])
            rate = (values[wrapped] > 0).mean(0)
            scores.append((auroc, rate, wrapped, other))
        if len(scores) < 2:
            continue
        (train_auroc, train_rate, _, _), (heldout_auroc, heldout_rate, wrapped, other) = scores
        candidates = np.flatnonzero(
            (train_auroc >= config.trigger_min_auroc) & (train_rate >= config.trigger_min_rate)
        )
        out.append(
            _test_rows(
                "trigger",
                candidates,
                name,
                train_score=train_auroc[candidates],
                heldout_score=heldout_auroc[candidates],
                p_value=mann_whitney_p(
                    values[wrapped][:, candidates], values[other][:, candidates], "greater"
                ),
                holds=(heldout_auroc[candidates] >= config.trigger_min_auroc)
                & (heldout_rate[candidates] >= config.trigger_min_rate),
            )
        )
    return out


def contrast_tags(
    result: Contrast, responses: Responses, config: LabelConfig, categories: Sequence[str]
) -> list[list[str]]:
    """Tags per feature from the tests that hold with q <= fdr (puppeteer not included).

    categories: [P] catalogue category of each persona (family of persona tags).
    """
    n_features = result.train_auroc.shape[1]
    tags: list[list[str]] = [[] for _ in range(n_features)]
    passed = result.tests[(result.tests["q_value"] <= config.fdr) & result.tests["holds"]]
    n_others = len(responses.names) - 1
    category_of = dict(zip(responses.names, categories, strict=True))
    for feature, rows in passed.groupby("feature"):
        personas = sorted(rows.loc[rows["kind"] == "persona", "target"])
        one_family = len({category_of[name] for name in personas}) == 1
        narrow = len(personas) <= config.family_max or one_family
        if personas and len(personas) < config.broad_share * n_others and narrow:
            tags[int(feature)] += [f"persona:{name}" for name in personas]
        for kind in ("roleplay", "assistant"):
            if (rows["kind"] == kind).any():
                tags[int(feature)].append(kind)
        for name in sorted(rows.loc[rows["kind"] == "trigger", "target"]):
            tags[int(feature)].append(f"trigger:{name}")
    return tags


def top_personas(effect: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k personas with the largest positive effect [P, F] per feature: index [F, k] int32
    (-1: none) and score [F, k] float32 (Cohen's d against the default; NaN: none)."""
    scores = np.where(np.isnan(effect) | (effect <= 0), -np.inf, effect).T  # [F, P]
    k = min(k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    best = np.take_along_axis(scores, order, axis=1)
    index = np.where(np.isfinite(best), order, -1).astype(np.int32)
    return index, np.where(np.isfinite(best), best, np.nan).astype(np.float32)


def best_features(result: Contrast, responses: Responses) -> dict[int, int]:
    """Per contrasted persona (row of `responses.names`), its best feature on train questions:
    the highest train AUROC against the default, ties broken by the larger train Cohen's d."""
    return {
        p: int(np.lexsort((-result.train_effect[p], -result.train_auroc[p]))[0])
        for p in range(len(responses.names))
        if p != responses.default and not np.isnan(result.train_auroc[p]).all()
    }
