"""Puppeteer features (an authorial slant shared by every persona, not a format) and template
features (fire on the assistant header, where the model selects its persona).

A puppeteer feature is chosen on train data and confirmed on held-out data:
- chosen on the train split of the personas not held out (sae_atlas.stages.splits): it fires in
  at least puppeteer_min_response_share of the responses of the default persona and of at least
  puppeteer_persona_share of the personas, evenly (coefficient of variation of the per-persona
  mean <= puppeteer_max_cv), at least puppeteer_min_enrichment times more in the assistant turn
  than on the same text in a user turn and outside the template, and is not a `format` feature
  (surface: the current token's id explains most of its held-out variance);
- confirmed on held-out data (held-out questions under held-out system prompts, and every
  response of the held-out personas): the same sharing criteria there and among the held-out
  personas alone, and three one-sided tests, each a p-value under Benjamini-Hochberg over every
  candidate's tests (the family): enriched over the same text in a user turn, and outside the
  template (Wilcoxon signed-rank over questions of the per-question mean paired difference, a
  response against its own control), and more enriched than its matched random features
  (`matched`: same firing frequency, activation scale and decoder norm; empirical p over
  puppeteer_null_neighbours of them).
The set as a whole is compared with puppeteer_null_sets matched random sets of the same count.

Cost: O(P x F) on the pass's statistics, Wilcoxon tests over [questions, candidates], O(k x F)
matching. Returns a per-feature table and a JSON-ready summary of the set.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon

from sae_atlas.config import LabelConfig
from sae_atlas.stages.label.inputs import HELDOUT, TRAIN, Responses
from sae_atlas.stages.label.matched import empirical_p, matched_pools, matched_sets
from sae_atlas.stages.label.rows import CONTROLS
from sae_atlas.stages.label.statistics import FeatureStatistics
from sae_atlas.stats import benjamini_hochberg, bootstrap_ci

TemplateFeatures = tuple[np.ndarray, dict[str, list[tuple[int, float, float]]]]
"""Template feature ids (by header rate), and per persona (id, header mean, excess) rows."""


def sharing(
    response_mean: np.ndarray, responses: Responses, rows: np.ndarray, config: LabelConfig
) -> dict[str, np.ndarray]:
    """On the responses `rows` (bool [n]), per feature [F]: persona_share (share of the personas
    with rows in at least puppeteer_min_response_share of whose responses it fires),
    default_dense (so for the default persona; False without its rows), cv (of the per-persona
    mean response-level activation)."""
    personas = np.unique(responses.persona[rows])
    n_features = response_mean.shape[1]
    if not len(personas):
        nothing = np.zeros(n_features)
        return {"persona_share": nothing, "default_dense": nothing > 0, "cv": nothing + np.inf}
    dense, means = [], []
    for p in personas:
        mine = response_mean[rows & (responses.persona == p)]
        dense.append((mine > 0).mean(0) >= config.puppeteer_min_response_share)
        means.append(mine.mean(0))
    dense_array, mean_array = np.stack(dense), np.stack(means)
    default = personas == responses.default
    return {
        "persona_share": dense_array.mean(0),
        "default_dense": dense_array[default].all(0)
        if default.any()
        else np.zeros(n_features, bool),
        "cv": mean_array.std(0) / np.maximum(mean_array.mean(0), 1e-12),
    }


def enrichment(stats: FeatureStatistics, rows: np.ndarray) -> np.ndarray:
    """[C, F] mean response-level activation of `rows` (bool [n]) over that of their controls
    (the same text in a user turn, outside the template), rows with a control only."""
    out = []
    for code in range(len(CONTROLS)):
        present = rows & stats.control_present[code]
        assistant = stats.response_mean[present].mean(0) if present.any() else np.zeros(0)
        control = stats.control_mean[code][present].mean(0) if present.any() else np.zeros(0)
        if not present.any():
            out.append(np.full(stats.response_mean.shape[1], np.nan))
            continue
        out.append(assistant / np.maximum(control, 1e-12))
    return np.stack(out)


def question_differences(
    stats: FeatureStatistics,
    responses: Responses,
    rows: np.ndarray,
    code: int,
    features: np.ndarray,
) -> np.ndarray:
    """[Q, len(features)] per question the mean over `rows` (bool [n]) with a control `code` of
    the response's activation minus its control's (the question is the unit: its responses
    share its text)."""
    present = rows & stats.control_present[code]
    difference = (
        stats.response_mean[present][:, features] - stats.control_mean[code][present][:, features]
    )
    questions = responses.question[present]
    distinct = np.unique(questions)
    return (
        np.stack([difference[questions == q].mean(0) for q in distinct])
        if len(distinct)
        else (np.zeros((0, len(features))))
    )


def signed_rank_p(differences: np.ndarray) -> np.ndarray:
    """[K] one-sided Wilcoxon signed-rank p-values (greater than 0) per column of [Q, K]; 1 for a
    column of zeros or fewer than two questions."""
    if differences.shape[0] < 2 or differences.shape[1] == 0:
        return np.ones(differences.shape[1])
    out = np.ones(differences.shape[1])
    nonzero = np.abs(differences).sum(0) > 0
    if nonzero.any():
        result = wilcoxon(differences[:, nonzero], alternative="greater", axis=0)
        out[nonzero] = np.nan_to_num(np.asarray(result.pvalue, dtype=float), nan=1.0)
    return out


def split_rows(
    responses: Responses, heldout_personas: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """bool [n] each: the rows that choose (train split of the personas not held out), the rows
    that confirm (held-out split, and every response of a held-out persona), the held-out
    personas' rows."""
    held = np.isin(responses.persona, heldout_personas)
    return (responses.split == TRAIN) & ~held, (responses.split == HELDOUT) | held, held


def puppeteer_features(
    stats: FeatureStatistics,
    responses: Responses,
    config: LabelConfig,
    heldout_personas: np.ndarray,
    is_format: np.ndarray,
    keys: np.ndarray,
) -> pd.DataFrame:
    """Per feature: the train figures (persona_share, cv, enrichment_<control>), `candidate`,
    the held-out figures (heldout_persona_share, heldout_cv, heldout_enrichment_<control>,
    heldout_personas_share: among the held-out personas alone, NaN without any), the tests'
    p_<test> and q_<test> (tests: user_control, plain_control, null; NaN for non-candidates) and
    `puppeteer` (chosen and confirmed). heldout_personas: their rows of `responses.names`;
    is_format: bool [F]; keys: [F, 3] matching keys (matched.matching_keys)."""
    choose, confirm, held = split_rows(responses, heldout_personas)
    shared = sharing(stats.response_mean, responses, choose, config)
    train_enrichment = enrichment(stats, choose)
    candidate = (
        (shared["persona_share"] >= config.puppeteer_persona_share)
        & shared["default_dense"]
        & (shared["cv"] <= config.puppeteer_max_cv)
        & (np.nan_to_num(train_enrichment, nan=0.0) >= config.puppeteer_min_enrichment).all(0)
        & ~is_format
    )
    confirmed = sharing(stats.response_mean, responses, confirm, config)
    heldout_enrichment = enrichment(stats, confirm)
    table = pd.DataFrame(
        {
            "persona_share": shared["persona_share"],
            "cv": shared["cv"],
            **{f"enrichment_{c}": train_enrichment[i] for i, c in enumerate(CONTROLS)},
            "candidate": candidate,
            "heldout_persona_share": confirmed["persona_share"],
            "heldout_cv": confirmed["cv"],
            **{f"heldout_enrichment_{c}": heldout_enrichment[i] for i, c in enumerate(CONTROLS)},
            "heldout_personas_share": sharing(stats.response_mean, responses, held, config)[
                "persona_share"
            ]
            if held.any()
            else np.nan,
        }
    )
    shares_hold = (
        (confirmed["persona_share"] >= config.puppeteer_persona_share)
        & confirmed["default_dense"]
        & (confirmed["cv"] <= config.puppeteer_max_cv)
        & (~held.any() | (table["heldout_personas_share"] >= config.puppeteer_persona_share))
    )
    tests = puppeteer_tests(stats, responses, confirm, np.flatnonzero(candidate), keys, config)
    for name, column in tests.items():
        table[name] = column
    significant = np.ones(len(table), bool)
    for test in PUPPETEER_TESTS:
        significant &= table[f"q_{test}"].to_numpy() <= config.fdr
    table["puppeteer"] = candidate & shares_hold.to_numpy() & significant
    return table


PUPPETEER_TESTS: tuple[str, ...] = (*CONTROLS, "null")
"""The tests a puppeteer candidate must pass on held-out data (the family BH runs over)."""


def log_enrichment(stats: FeatureStatistics, rows: np.ndarray) -> np.ndarray:
    """[F] log of the smaller of the two enrichments (over a user turn, outside the template) on
    `rows`: the statistic compared with matched random features."""
    ratio = np.nan_to_num(enrichment(stats, rows), nan=0.0).min(0)
    return np.log(np.maximum(ratio, 1e-12))


def puppeteer_tests(
    stats: FeatureStatistics,
    responses: Responses,
    confirm: np.ndarray,
    features: np.ndarray,
    keys: np.ndarray,
    config: LabelConfig,
) -> dict[str, np.ndarray]:
    """{p_<test>, q_<test>: [F]} for the candidate `features` on the `confirm` rows (NaN
    elsewhere): paired Wilcoxon over questions against each control, and the empirical p of the
    held-out log enrichment among puppeteer_null_neighbours matched features; q: BH over all of
    them together."""
    n_features = stats.response_mean.shape[1]
    p_values = [
        signed_rank_p(question_differences(stats, responses, confirm, code, features))
        for code in range(len(CONTROLS))
    ]
    score = log_enrichment(stats, confirm)
    pools = matched_pools(keys, features, config.puppeteer_null_neighbours)
    p_values.append(
        np.array(
            [empirical_p(score[f], score[pool]) for f, pool in zip(features, pools, strict=True)]
        )
    )
    q_values = benjamini_hochberg(np.concatenate(p_values)).reshape(len(PUPPETEER_TESTS), -1)
    out = {}
    for i, test in enumerate(PUPPETEER_TESTS):
        for prefix, values in (("p", p_values[i]), ("q", q_values[i])):
            column = np.full(n_features, np.nan)
            column[features] = values
            out[f"{prefix}_{test}"] = column
    return out


def puppeteer_summary(
    stats: FeatureStatistics,
    responses: Responses,
    table: pd.DataFrame,
    heldout_personas: np.ndarray,
    keys: np.ndarray,
    config: LabelConfig,
) -> dict[str, Any]:
    """JSON-ready figures of the puppeteer: counts (candidates, confirmed; how many candidates
    fail each held-out criterion), the held-out personas, and for the confirmed set (the
    candidates when none is confirmed) its held-out log enrichment against puppeteer_null_sets
    matched random sets (mean, null mean and 95% range, empirical p) and, per control, the mean
    paired difference per question with its bootstrap CI over questions."""
    _, confirm, _ = split_rows(responses, heldout_personas)
    candidates = np.flatnonzero(table["candidate"])
    chosen = np.flatnonzero(table["puppeteer"])
    judged = chosen if len(chosen) else candidates
    score = log_enrichment(stats, confirm)
    rng = np.random.default_rng(config.seed)
    null_sets = matched_sets(
        matched_pools(keys, judged, config.puppeteer_null_neighbours),
        config.puppeteer_null_sets,
        rng,
    )
    null = score[null_sets].mean(1) if len(judged) else np.zeros(0)
    observed = float(score[judged].mean()) if len(judged) else float("nan")
    failing = {
        f"fail_q_{test}": int((table.loc[candidates, f"q_{test}"] > config.fdr).sum())
        for test in PUPPETEER_TESTS
    }
    return {
        "n_candidates": len(candidates),
        "candidates": [int(f) for f in candidates[:50]],
        "n_puppeteer": len(chosen),
        "candidates_failing": failing,
        "heldout_personas": [responses.names[p] for p in heldout_personas],
        "set_judged": "puppeteer" if len(chosen) else "candidates",
        "set_size": len(judged),
        "set_log_enrichment": observed,
        "null_log_enrichment_mean": float(null.mean()) if len(null) else None,
        "null_log_enrichment_95": [float(v) for v in np.percentile(null, [2.5, 97.5])]
        if len(null)
        else None,
        "null_p": empirical_p(observed, null),
        "paired_difference_by_question": {
            c: dict(
                zip(
                    ("mean", "low", "high"),
                    bootstrap_ci(
                        question_differences(stats, responses, confirm, code, judged).mean(1)
                        if len(judged)
                        else np.zeros(0),
                        seed=config.seed,
                    ),
                    strict=True,
                )
            )
            for code, c in enumerate(CONTROLS)
        },
    }


def template_features(
    stats: FeatureStatistics, responses: Responses, density: np.ndarray, config: LabelConfig
) -> TemplateFeatures:
    """Features of the assistant header: (ids firing on it at >= template_min_rate and
    >= template_min_enrichment x their response density, by header rate), and per persona the
    features whose header mean most exceeds the mean over personas: (id, header mean, excess)."""
    header_rate = stats.header_fires.sum(0) / max(stats.header_tokens.sum(), 1)
    chosen = np.flatnonzero(
        (header_rate >= config.template_min_rate)
        & (header_rate >= config.template_min_enrichment * density)
    )
    chosen = chosen[np.argsort(-header_rate[chosen], kind="stable")]
    present = stats.header_tokens > 0
    means = stats.header_sum[present] / stats.header_tokens[present, None]
    excess = means - means.mean(0)
    by_persona = {}
    for row, p in enumerate(np.flatnonzero(present)):
        best = np.argsort(-excess[row], kind="stable")[: config.top_personas]
        by_persona[responses.names[p]] = [
            (int(f), float(means[row, f]), float(excess[row, f]))
            for f in best
            if excess[row, f] > 0
        ]
    return chosen, by_persona
