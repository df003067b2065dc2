"""Each persona against the default, on the corpus's splits: the best SAE feature (chosen on train)
and linear probes on the raw residual, each scored by its held-out AUROC.

With honest splits (sae_atlas.stages.splits) a held-out response has a question and a system
prompt that no train response has, so a probe that separates prompts rather than personas no
longer scores well. Per persona p (rows paired with the default's on the same questions, as the
contrasts pair them): for each response-level pooling of the SAE codes (`mean`, `max`, `rate`,
`first<k>`: response_statistics) the feature with the best train AUROC (ties: larger Cohen's d)
and its held-out AUROC; an L2 logistic probe on standardised residual means over the response
(`response_probe`) and over the assistant header (`header_probe`), its strength chosen by
cross-validation over train questions (folds never share a question), fitted on every train row,
scored on the held-out rows. Shares of personas at held-out AUROC >= 0.9 carry Wilson intervals
over personas.

Cost: per persona a few logistic fits on [~2 x train questions x variants, d_model]; ranks of
[rows, d_sae] per pooling. Returns a per-persona table and JSON-ready shares.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sae_atlas.stages.label.contrasts import paired_rows
from sae_atlas.stages.label.decoding import question_folds
from sae_atlas.stages.label.inputs import HELDOUT, TRAIN, Responses
from sae_atlas.stats import auroc, auroc_and_effect, wilson_interval

PROBE_STRENGTHS: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0)
"""Inverse regularisation strengths (sklearn's C) the probes choose from by CV over questions."""
PROBES: dict[str, str] = {"response_probe": "residual", "header_probe": "header_residual"}
"""Probe name: the response_statistics entry it reads."""
POOLINGS: tuple[str, ...] = ("mean", "max", "rate", "first8", "first16", "first32")
"""SAE poolings whose best feature is reported, when response_statistics gives them."""
AUROC_TARGET = 0.9


def _fit(x: np.ndarray, y: np.ndarray, strength: float) -> Any:
    model = make_pipeline(StandardScaler(), LogisticRegression(C=strength, max_iter=500))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    return model


def probe_auroc(
    x_train: np.ndarray,
    y_train: np.ndarray,
    groups: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
) -> tuple[float, float]:
    """(held-out AUROC, chosen C) of an L2 logistic probe: C from PROBE_STRENGTHS by mean AUROC
    over 3 folds of train questions (`groups`), then fitted on every train row."""
    folds = [f for f in question_folds(groups, 3) if len(f)]
    scores = np.full(len(PROBE_STRENGTHS), np.nan)
    for i, strength in enumerate(PROBE_STRENGTHS):
        fold_scores = []
        for fold in folds:
            test = np.isin(groups, fold)
            if len(np.unique(y_train[~test])) < 2 or len(np.unique(y_train[test])) < 2:
                continue
            model = _fit(x_train[~test], y_train[~test], strength)
            score = model.decision_function(x_train[test])
            fold_scores.append(auroc(score[y_train[test] == 1], score[y_train[test] == 0]))
        if fold_scores:
            scores[i] = np.mean(fold_scores)
    chosen = PROBE_STRENGTHS[int(np.nanargmax(scores))] if np.isfinite(scores).any() else 1.0
    model = _fit(x_train, y_train, chosen)
    score = model.decision_function(x_test)
    return auroc(score[y_test == 1], score[y_test == 0]), chosen


def best_feature(
    values: np.ndarray, train: tuple[np.ndarray, np.ndarray], heldout: tuple[np.ndarray, np.ndarray]
) -> tuple[int, float, float]:
    """(feature, train AUROC, held-out AUROC) of the feature of values [n, F] with the best train
    AUROC of the persona rows against the default rows (ties: larger train Cohen's d)."""
    train_auroc, train_effect = auroc_and_effect(values[train[0]], values[train[1]])
    feature = int(np.lexsort((-train_effect, -np.nan_to_num(train_auroc, nan=-1.0)))[0])
    heldout_auroc, _ = auroc_and_effect(
        values[heldout[0]][:, [feature]], values[heldout[1]][:, [feature]]
    )
    return feature, float(train_auroc[feature]), float(heldout_auroc[0])


def persona_table(responses: Responses, statistics: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per persona other than the default with at least two paired responses of each
    kind in each split: per pooling of POOLINGS in `statistics` its best feature, train and
    held-out AUROC (`<pooling>_feature`, `<pooling>_train`, `<pooling>_heldout`); per probe of
    PROBES in `statistics` its held-out AUROC and chosen C."""
    rows = []
    for p in range(len(responses.names)):
        if p == responses.default:
            continue
        train = paired_rows(responses, responses.persona, p, TRAIN)
        heldout = paired_rows(responses, responses.persona, p, HELDOUT)
        if min(len(r) for r in (*train, *heldout)) < 2:
            continue
        row: dict[str, Any] = {
            "persona": responses.names[p],
            "n_train": len(train[0]),
            "n_heldout": len(heldout[0]),
        }
        for pooling in (p for p in POOLINGS if p in statistics):
            feature, train_auroc, heldout_auroc = best_feature(statistics[pooling], train, heldout)
            row.update(
                {
                    f"{pooling}_feature": feature,
                    f"{pooling}_train": train_auroc,
                    f"{pooling}_heldout": heldout_auroc,
                }
            )
        train_rows, heldout_rows = np.concatenate(train), np.concatenate(heldout)
        y_train = np.r_[np.ones(len(train[0])), np.zeros(len(train[1]))]
        y_test = np.r_[np.ones(len(heldout[0])), np.zeros(len(heldout[1]))]
        for probe, source in ((k, v) for k, v in PROBES.items() if v in statistics):
            x = statistics[source]
            row[probe], row[f"{probe}_C"] = probe_auroc(
                x[train_rows], y_train, responses.question[train_rows], x[heldout_rows], y_test
            )
        rows.append(row)
    return pd.DataFrame(rows)


def target_shares(table: pd.DataFrame, target: float = AUROC_TARGET) -> dict[str, Any]:
    """Per column of held-out AUROCs (`<pooling>_heldout` and the probes): the share of personas
    at AUROC >= target with its Wilson 95% interval over personas, and the median AUROC."""
    columns = [c for c in table.columns if c.endswith("_heldout") or c in PROBES]
    out: dict[str, Any] = {"target": target, "n_personas": len(table)}
    for column in columns:
        values = table[column].to_numpy(float)
        hits = int((values >= target).sum())
        low, high = wilson_interval(hits, len(values))
        out[column] = {
            "share": hits / len(values) if len(values) else float("nan"),
            "ci": [low, high],
            "median_auroc": float(np.nanmedian(values)) if len(values) else float("nan"),
        }
    return out
