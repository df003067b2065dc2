"""Do an SAE's features carry what the residual carries? Per persona, on held-out questions (and,
in an honest corpus, held-out system prompts), the best feature chosen on train questions
against a residual probe of the same tokens, with paired tests.

From one SAE's `response_statistics` ({statistic: [n_responses, d]}) and their `Responses`, per
method and persona the held-out scores of the persona's responses and of the default's on the
same questions (`HeldoutScores`):
- `<pooling>_best_feature` (pooling in FEATURE_POOLINGS: mean, max or firing rate of the codes
  over the response): the labeling pass's best feature (contrasts.best_features: the highest
  train AUROC against the default, ties by train Cohen's d);
- `<pooling>_sparse<m>` (SPARSE_POOLINGS): an L2 logistic probe (standardised, C = SPARSE_C,
  fixed in advance) over the m features of that pooling ranked first on train the same way;
- `header_best_feature`: the best feature of the mean code over the assistant header;
- `response_probe`, `header_probe`: the residual probes of targets.linear_ceiling (C chosen by
  a CV over train questions) on the mean residual over the response / the header.
Each feature method is compared with the probe of the same tokens (`comparisons`): the shares at
held-out AUROC >= TARGET with Wilson intervals over personas, their paired difference with a
bootstrap interval over personas and an exact McNemar test, and the mean AUROC difference; per
persona the AUROC difference with a bootstrap interval over held-out questions (`persona_table`).
Cost: one contrast per pooling (ranks [n_responses, F] per persona and split) and a few logistic
fits per persona and method (7 per persona for each probe's C); about a minute per SAE on the
quick atlas. Returns JSON-ready dicts and a DataFrame.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sae_atlas.config import LabelConfig
from sae_atlas.stages.label.contrasts import best_features, contrast, paired_rows
from sae_atlas.stages.label.honest import with_interval
from sae_atlas.stages.label.inputs import HELDOUT, TRAIN, Responses
from sae_atlas.stages.label.targets import auroc_cv, probe_split_scores, probe_strength
from sae_atlas.stats import auroc, auroc_difference_ci, bootstrap_ci, mcnemar_p

TARGET = 0.9
"""Held-out AUROC a persona's method must reach to count in a share."""
FEATURE_POOLINGS: tuple[str, ...] = ("mean", "max", "rate")
"""Response poolings (response_statistics entries) whose best feature is scored."""
SPARSE_POOLINGS: tuple[str, ...] = ("mean", "max")
"""Response poolings whose first m train features feed a sparse probe."""
SPARSE_C = 1.0
"""L2 strength of the sparse probes (standardised features), fixed before any result was seen."""
PROBES: dict[str, str] = {"response_probe": "residual", "header_probe": "header_residual"}
"""Residual probes and the response_statistics entry each reads."""


@dataclass(frozen=True)
class HeldoutScores:
    """One method's held-out scores for one persona: positive [n1] (its responses), negative
    [n0] (the default's, on the same questions) and their question ids [n1], [n0]."""

    positive: np.ndarray
    negative: np.ndarray
    positive_question: np.ndarray
    negative_question: np.ndarray

    @property
    def auroc(self) -> float:
        return auroc(self.positive, self.negative)


Scores = dict[str, HeldoutScores]
"""persona name -> HeldoutScores of one method."""


def heldout_rows(responses: Responses, p: int) -> tuple[np.ndarray, np.ndarray]:
    """Held-out rows of persona p and of the default on the questions both answered."""
    return paired_rows(responses, responses.persona, p, HELDOUT)


def ranked_features(
    values: np.ndarray, responses: Responses, config: LabelConfig
) -> dict[int, np.ndarray]:
    """Per contrasted persona (row of `responses.names`) every feature of values [n, F] in the
    order of contrasts.best_features (train AUROC, then train Cohen's d): [F]."""
    result = contrast(values, responses, config)
    best = best_features(result, responses)
    return {p: np.lexsort((-result.train_effect[p], -result.train_auroc[p])) for p in best}


def feature_scores(
    values: np.ndarray, responses: Responses, ranked: Mapping[int, np.ndarray]
) -> tuple[Scores, dict[str, int]]:
    """Held-out scores of each persona's first-ranked feature of values [n, F], and the
    feature."""
    scores, chosen = {}, {}
    for p, order in ranked.items():
        rows, default = heldout_rows(responses, p)
        name, feature = responses.names[p], int(order[0])
        scores[name] = HeldoutScores(
            values[rows, feature],
            values[default, feature],
            responses.question[rows],
            responses.question[default],
        )
        chosen[name] = feature
    return scores, chosen


def probe_persona_scores(
    values: np.ndarray, responses: Responses, p: int, c: float
) -> HeldoutScores | None:
    """Held-out decision values of persona p's probe (targets.probe_split_scores) of values
    [n, d] fitted on train questions with L2 strength c (None: too few responses)."""
    found = probe_split_scores(values, responses, p, TRAIN, HELDOUT, c)
    if found is None:
        return None
    positive, negative, rows, default = found
    return HeldoutScores(positive, negative, responses.question[rows], responses.question[default])


def sparse_scores(
    values: np.ndarray, responses: Responses, ranked: Mapping[int, np.ndarray], m: int
) -> Scores:
    """Held-out decision values of a probe (C = SPARSE_C) fitted on train questions over each
    persona's first m ranked features of values [n, F]."""
    found = {
        responses.names[p]: probe_persona_scores(values[:, order[:m]], responses, p, SPARSE_C)
        for p, order in ranked.items()
    }
    return {name: scores for name, scores in found.items() if scores is not None}


def probe_heldout_scores(values: np.ndarray, responses: Responses) -> tuple[Scores, float]:
    """Held-out decision values of targets.linear_ceiling's probe of values [n, d] per persona,
    and its C (chosen by CV on train questions)."""
    c = probe_strength(values, responses)
    others = [p for p in range(len(responses.names)) if p != responses.default]
    found = {responses.names[p]: probe_persona_scores(values, responses, p, c) for p in others}
    return {name: scores for name, scores in found.items() if scores is not None}, c


def method_scores(
    statistics: Mapping[str, np.ndarray],
    responses: Responses,
    config: LabelConfig,
    sparse_features: int,
) -> tuple[dict[str, Scores], dict[str, Any]]:
    """Every method's Scores (module docstring; no sparse probes for sparse_features 0) and
    what was chosen on train: per pooling the best feature per persona, the probes' C."""
    methods: dict[str, Scores] = {}
    choices: dict[str, Any] = {}
    for pooling in (*FEATURE_POOLINGS, "header"):
        ranked = ranked_features(statistics[pooling], responses, config)
        name = f"{pooling}_best_feature"
        methods[name], choices[name] = feature_scores(statistics[pooling], responses, ranked)
        if pooling in SPARSE_POOLINGS and sparse_features > 0:
            methods[f"{pooling}_sparse{sparse_features}"] = sparse_scores(
                statistics[pooling], responses, ranked, sparse_features
            )
    for probe, source in PROBES.items():
        methods[probe], choices[f"{probe}_c"] = probe_heldout_scores(statistics[source], responses)
    return methods, choices


def reference_of(method: str) -> str | None:
    """The probe a method is compared with (None for a probe)."""
    if method in PROBES:
        return None
    return "header_probe" if method.startswith("header") else "response_probe"


def paired_comparison(
    feature: Scores, probe: Scores, n_bootstrap: int, seed: int
) -> dict[str, Any]:
    """A feature method against a probe over the personas both scored: shares at AUROC >= TARGET,
    their difference (feature minus probe) with a bootstrap CI over personas, the exact McNemar
    p of the discordant personas, the mean AUROC difference with its bootstrap CI, and whether
    the feature's share is at least the probe's."""
    names = [n for n in feature if n in probe]
    first = np.array([feature[n].auroc for n in names])
    second = np.array([probe[n].auroc for n in names])
    keep = np.isfinite(first) & np.isfinite(second)
    first, second = first[keep], second[keep]
    hits_first, hits_second = first >= TARGET, second >= TARGET
    share_difference = bootstrap_ci(hits_first.astype(float) - hits_second, n_bootstrap, seed)
    auroc_difference = bootstrap_ci(first - second, n_bootstrap, seed)
    only_feature = int((hits_first & ~hits_second).sum())
    only_probe = int((hits_second & ~hits_first).sum())
    return {
        "n_personas": int(keep.sum()),
        "feature_share": float(hits_first.mean()) if len(first) else float("nan"),
        "probe_share": float(hits_second.mean()) if len(first) else float("nan"),
        "share_difference": share_difference[0],
        "share_difference_ci": list(share_difference[1:]),
        "only_feature": only_feature,
        "only_probe": only_probe,
        "mcnemar_p": mcnemar_p(only_feature, only_probe),
        "mean_auroc_difference": auroc_difference[0],
        "mean_auroc_difference_ci": list(auroc_difference[1:]),
        "at_least_equal": bool(len(first)) and bool(hits_first.mean() >= hits_second.mean()),
    }


def persona_table(methods: Mapping[str, Scores], n_bootstrap: int, seed: int) -> pd.DataFrame:
    """One row per persona: each method's held-out AUROC and, per feature method, its AUROC
    minus its probe's (`<method>_vs_probe`) with a bootstrap CI over held-out questions
    (`_low`, `_high`; both methods score the same responses)."""
    names = sorted({n for scores in methods.values() for n in scores})
    table = pd.DataFrame(index=pd.Index(names, name="persona"))
    for method, scores in methods.items():
        table[method] = [scores[n].auroc if n in scores else np.nan for n in names]
    for method, scores in methods.items():
        reference = reference_of(method)
        if reference is None:
            continue
        cells = []
        for name in names:
            a, b = scores.get(name), methods[reference].get(name)
            if a is None or b is None:
                cells.append((np.nan, np.nan, np.nan))
                continue
            cells.append(
                auroc_difference_ci(
                    (a.positive, a.negative),
                    (b.positive, b.negative),
                    a.positive_question,
                    a.negative_question,
                    n_bootstrap,
                    seed,
                )
            )
        for column, values in zip(("", "_low", "_high"), zip(*cells, strict=True), strict=True):
            table[f"{method}_vs_probe{column}"] = values
    return table


def carry_figures(
    statistics: Mapping[str, np.ndarray],
    responses: Responses,
    config: LabelConfig,
    *,
    sparse_features: int = 8,
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """The figures of one SAE: per method its share with_interval over personas, per feature
    method its paired_comparison with its probe, what was chosen on train, and the CV share of
    the mean pooling within train questions (targets.auroc_cv: a figure to choose a layer by);
    and the persona_table."""
    methods, choices = method_scores(statistics, responses, config, sparse_features)
    aurocs = {m: {n: s.auroc for n, s in scores.items()} for m, scores in methods.items()}
    comparisons = {
        method: {
            "reference": reference,
            **paired_comparison(methods[method], methods[reference], n_bootstrap, seed),
        }
        for method in methods
        if (reference := reference_of(method)) is not None
    }
    figures = {
        "shares": {method: with_interval(values, TARGET) for method, values in aurocs.items()},
        "comparisons": comparisons,
        "choices": choices,
        "train_cv_share_mean": auroc_cv(statistics["mean"], responses, config),
    }
    return figures, persona_table(methods, n_bootstrap, seed)
