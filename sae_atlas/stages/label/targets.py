"""What limits the labeling pass's two headline figures, and what a choice made on train
questions buys (the analysis behind scripts/label_targets.py).

Inputs are the per-response statistics of `response_statistics` ({name: [n_responses, d]}) and
their `Responses` (persona, question, split per response). Computed here:
- `auroc_table`: per statistic, the labeling pass's own contrast and best-feature rule
  (`contrast`, `best_features`): the share of personas whose best feature (chosen on train)
  reaches held-out AUROC >= 0.9, the same rule cross-validated inside the train questions (the
  figure a statistic is chosen by), and the best held-out AUROC of any feature (a ceiling for
  diagnosis only, never a choice).
- `linear_ceilings`: an L2 logistic probe of each persona against the default per input
  (residual mean, every SAE feature, token n-grams, the assistant header's residual), C chosen
  by a 2-fold CV over train questions, scored on held-out questions.
- `decoding_table`: persona decoders (the labeling pass's candidates, nearest centroid on
  standardised features, shrinkage LDA) chosen by a grouped CV over train questions (folds never
  share a question), then scored on held-out questions.
- `learning_curve`: the chosen decoder and the AUROC shares with the first 2, 4, 8, ... train
  questions.
Costs: sklearn fits, seconds each; a whole analysis of the quick run takes minutes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from feature_store.activations import ActivationStore
from feature_store.schema import ROLE_CODE
from sae_atlas.config import LabelConfig
from sae_atlas.stages.label import (
    DECODERS,
    HELDOUT,
    TRAIN,
    Responses,
    best_features,
    contrast,
    fit_decoder,
    paired_rows,
    question_folds,
)
from sae_atlas.stats import auroc

HEADER = "header"
"""A statistic of the assistant header, not of response tokens: reported, never chosen."""
HEADER_RESIDUAL = "header_residual"
RAW = ("residual", HEADER_RESIDUAL)
"""Raw residual means (no SAE), of the response tokens and of the assistant header."""
DECODED = ("mean", "max", "rate", "first16", "residual")
"""The statistics decoders are fitted on (each fit costs seconds)."""
DECODER_FOLDS = 4
"""Folds of the grouped cross-validations over train questions (folds never share a question)."""
LDA_MAX_DIM = 1024
"""Shrinkage LDA only up to this many dimensions (a fit on 2,304 SAE features costs ~45 s)."""
PROBE_C = (0.01, 0.1, 1.0)
"""L2 strengths of the persona-vs-default probes; one per input, chosen by CV on train questions."""
PROBES = {
    "residual": "residual mean over response tokens (no SAE)",
    "sae": "SAE response mean, every feature",
    "text": "response token n-grams (TF-IDF, 1-2)",
    HEADER_RESIDUAL: "residual mean over the assistant header (no SAE)",
}
CANDIDATES = (DECODERS[0], "centroid_std", "lda", *DECODERS[1:])
"""The decoders compared: the labeling pass's candidates, centroid on standardised features, LDA."""

Progress = Callable[[str], None]


def within_train(responses: Responses, held: np.ndarray) -> Responses:
    """`responses` with the train questions in `held` as the held-out split and the rest of the
    train questions as train; held-out questions are dropped (split -1)."""
    split = np.full(len(responses), -1, dtype=np.int64)
    train = responses.split == TRAIN
    split[train] = TRAIN
    split[train & np.isin(responses.question, held)] = HELDOUT
    return replace(responses, split=split)


def first_questions(responses: Responses, k: int) -> Responses:
    """`responses` keeping only the first k train questions (sorted ids) in the train split."""
    keep = np.unique(responses.question[responses.split == TRAIN])[:k]
    dropped = (responses.split == TRAIN) & ~np.isin(responses.question, keep)
    return replace(responses, split=np.where(dropped, -1, responses.split))


# ---------------------------------------------------------------------------- AUROC


def auroc_share(values: np.ndarray, responses: Responses, config: LabelConfig) -> dict[str, Any]:
    """The labeling pass's best feature per persona (chosen on train) and its held-out AUROC;
    the share at >= 0.9; the best held-out AUROC of any feature (a ceiling, not a choice)."""
    result = contrast(values, responses, config)
    best = best_features(result, responses)
    heldout = {responses.names[p]: float(result.heldout_auroc[p, f]) for p, f in best.items()}
    oracle = {responses.names[p]: float(np.nanmax(result.heldout_auroc[p])) for p in best}
    return {
        "share": float(np.mean([v >= 0.9 for v in heldout.values()])),
        "median": float(np.median(list(heldout.values()))),
        "oracle_share": float(np.mean([v >= 0.9 for v in oracle.values()])),
        "heldout": heldout,
        "oracle": oracle,
        "train": {responses.names[p]: float(result.train_auroc[p, f]) for p, f in best.items()},
    }


def auroc_cv(values: np.ndarray, responses: Responses, config: LabelConfig) -> float:
    """The share of personas at AUROC >= 0.9 when the feature is chosen on half of the train
    questions and scored on the other half, averaged over both halves (train data only)."""
    folds = question_folds(responses.question[responses.split == TRAIN], 2)
    shares = [auroc_share(values, within_train(responses, held), config)["share"] for held in folds]
    return float(np.mean(shares))


def auroc_table(
    stats: Mapping[str, np.ndarray], responses: Responses, config: LabelConfig
) -> tuple[dict[str, dict[str, Any]], str]:
    """Per SAE statistic (not the RAW residual means): its CV share (`cv_share`) and
    `auroc_share`; and the statistic with the best CV share among the response statistics
    (HEADER is reported, never chosen)."""
    table: dict[str, dict[str, Any]] = {}
    for name, values in stats.items():
        if name in RAW:
            continue
        table[name] = {"cv_share": auroc_cv(values, responses, config)}
        table[name].update(auroc_share(values, responses, config))
    chosen = max((name for name in table if name != HEADER), key=lambda n: table[n]["cv_share"])
    return table, chosen


# ---------------------------------------------------------------------------- ceilings


def response_texts(store: ActivationStore, responses: Responses) -> np.ndarray:
    """Each response's assistant token ids as one string of words ("t123 t45 ..."), for a text
    probe that needs no tokenizer."""
    table = store.token_table()
    provenance = store.provenance()
    start = provenance["token_start"].to_numpy()
    count = provenance["token_count"].to_numpy()
    texts = []
    for doc in responses.doc:
        rows = slice(start[doc], start[doc] + count[doc])
        ids = table["token_id"][rows][table["role"][rows] == ROLE_CODE["assistant"]]
        texts.append(" ".join(f"t{token}" for token in ids))
    return np.array(texts, dtype=object)


def probe_scores(
    values: np.ndarray, fit: np.ndarray, labels: np.ndarray, score: np.ndarray, c: float
) -> np.ndarray:
    """Decision values on rows `score` of an L2 logistic probe fitted on rows `fit` with binary
    `labels`: standardised features, or TF-IDF n-grams when `values` holds texts."""
    if values.dtype == object:
        model = make_pipeline(
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"\S+"),
            LogisticRegression(C=c, max_iter=2000),
        )
    else:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
    return model.fit(values[fit], labels).decision_function(values[score])


def probe_split_scores(
    values: np.ndarray, responses: Responses, p: int, fit_split: int, score_split: int, c: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Decision values of a probe of persona p against the default (same questions) fitted on
    `fit_split`, on the rows of `score_split`: (persona's [n1], default's [n0], their rows [n1]
    and [n0]); None when a split has fewer than two paired responses of either."""
    fit, fit_default = paired_rows(responses, responses.persona, p, fit_split)
    score, score_default = paired_rows(responses, responses.persona, p, score_split)
    if min(len(fit), len(fit_default), len(score), len(score_default)) < 2:
        return None
    labels = np.r_[np.ones(len(fit)), np.zeros(len(fit_default))]
    decision = probe_scores(values, np.r_[fit, fit_default], labels, np.r_[score, score_default], c)
    return decision[: len(score)], decision[len(score) :], score, score_default


def probe_auroc(
    values: np.ndarray, responses: Responses, p: int, fit_split: int, score_split: int, c: float
) -> float:
    """Held-out AUROC of persona p against the default (same questions) of a probe fitted on
    `fit_split` and scored on `score_split`."""
    scores = probe_split_scores(values, responses, p, fit_split, score_split, c)
    return float("nan") if scores is None else auroc(scores[0], scores[1])


def probe_strength(values: np.ndarray, responses: Responses) -> float:
    """The L2 strength of PROBE_C whose persona-vs-default probes have the best mean AUROC in a
    2-fold CV over train questions (train data only)."""
    personas = [p for p in range(len(responses.names)) if p != responses.default]
    folds = question_folds(responses.question[responses.split == TRAIN], 2)

    def cv(c: float) -> float:
        scores = []
        for held in folds:
            inner = within_train(responses, held)
            scores += [probe_auroc(values, inner, p, TRAIN, HELDOUT, c) for p in personas]
        return float(np.nanmean(scores))

    return max(PROBE_C, key=cv)


def linear_ceiling(values: np.ndarray, responses: Responses) -> dict[str, Any]:
    """What any linear read of `values` can do, persona by persona: an L2 logistic probe of each
    persona against the default, fitted on train questions (C chosen by the mean AUROC of a
    2-fold CV over train questions) and scored on held-out ones; the share at AUROC >= 0.9.
    On the residual mean it shows what the response tokens carry linearly: a guide to what one
    feature can reach, not a strict bound (a feature is nonlinear per token before its mean)."""
    personas = [p for p in range(len(responses.names)) if p != responses.default]
    c = probe_strength(values, responses)
    heldout = {
        responses.names[p]: probe_auroc(values, responses, p, TRAIN, HELDOUT, c) for p in personas
    }
    scored = np.array([v for v in heldout.values() if not np.isnan(v)])
    return {
        "c": c,
        "share": float(np.mean(scored >= 0.9)),
        "median": float(np.median(scored)),
        "heldout": heldout,
    }


def linear_ceilings(
    stats: Mapping[str, np.ndarray], texts: np.ndarray, responses: Responses
) -> dict[str, dict[str, Any]]:
    """`linear_ceiling` of each of PROBES' inputs: the residual mean, the SAE mean (every
    feature), the response texts (`response_texts`) and the assistant header's residual."""
    inputs = {
        "residual": stats["residual"],
        "sae": stats["mean"],
        "text": texts,
        HEADER_RESIDUAL: stats[HEADER_RESIDUAL],
    }
    return {name: linear_ceiling(inputs[name], responses) for name in PROBES}


# ---------------------------------------------------------------------------- decoding


def fitted(name: str, values: np.ndarray, labels: np.ndarray) -> Any:
    """predict(x) of a decoder fitted on values [n, d] with labels [n]: the labeling pass's
    candidates (sae_atlas.stages.label.fit_decoder), nearest centroid on standardised features, or
    shrinkage LDA on standardised features."""
    if name == "centroid_std":
        scaler = StandardScaler().fit(values)
        predict = fit_decoder("centroid", scaler.transform(values), labels)
        return lambda x: predict(scaler.transform(x))
    if name == "lda":
        model = make_pipeline(
            StandardScaler(), LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")
        )
        return model.fit(values, labels).predict
    return fit_decoder(name, values, labels)


def decoder_scores(values: np.ndarray, responses: Responses) -> dict[str, dict[str, float]]:
    """Per decoder: grouped CV accuracy on train questions and held-out accuracy (fit on all
    train responses)."""
    labels = responses.persona
    train = responses.split == TRAIN
    heldout = responses.split == HELDOUT
    out = {}
    for name in CANDIDATES:
        if name == "lda" and values.shape[1] > LDA_MAX_DIM:
            continue
        correct = []
        for held in question_folds(responses.question[train], DECODER_FOLDS):
            test = train & np.isin(responses.question, held)
            fit = train & ~test
            predict = fitted(name, values[fit], labels[fit])
            correct.append(predict(values[test]) == labels[test])
        predict = fitted(name, values[train], labels[train])
        out[name] = {
            "cv": float(np.concatenate(correct).mean()),
            "heldout": float((predict(values[heldout]) == labels[heldout]).mean()),
        }
    return out


def decoding_table(
    stats: Mapping[str, np.ndarray], responses: Responses, progress: Progress
) -> tuple[dict[str, dict[str, dict[str, float]]], tuple[str, str]]:
    """`decoder_scores` of each DECODED statistic (`progress` told after each), and the
    (statistic, decoder) with the best CV accuracy among the SAE statistics."""
    started = time.monotonic()
    table = {}
    for name in DECODED:
        table[name] = decoder_scores(stats[name], responses)
        progress(f"decoders on {name}: {time.monotonic() - started:.0f} s")
    best = max(
        ((s, d) for s in table for d in table[s] if s != "residual"),
        key=lambda key: table[key[0]][key[1]]["cv"],
    )
    return table, best


# ---------------------------------------------------------------------------- learning curve


def accuracy(predict: Any, values: np.ndarray, labels: np.ndarray) -> float:
    """Share of rows of values [n, d] that `predict` assigns their labels [n]."""
    return float((predict(values) == labels).mean())


def learning_curve(
    stats: Mapping[str, np.ndarray],
    responses: Responses,
    config: LabelConfig,
    decoder: tuple[str, str],
    statistic: str,
) -> list[dict[str, Any]]:
    """Held-out figures with the first 2, 4, 8, ... train questions and with all of them
    (held-out questions fixed): the chosen `decoder` ((statistic, decoder name), refitted), the
    centroid on the mean, the AUROC shares of the mean and of `statistic`: what more questions
    per persona would buy."""
    values, mean = stats[decoder[0]], stats["mean"]

    def point(subset: Responses) -> dict[str, Any]:
        train, heldout = subset.split == TRAIN, subset.split == HELDOUT
        labels = subset.persona
        return {
            "decoder_heldout": accuracy(
                fitted(decoder[1], values[train], labels[train]), values[heldout], labels[heldout]
            ),
            "centroid_mean_heldout": accuracy(
                fitted("centroid", mean[train], labels[train]), mean[heldout], labels[heldout]
            ),
            "auroc_share_mean": auroc_share(mean, subset, config)["share"],
            f"auroc_share_{statistic}": auroc_share(stats[statistic], subset, config)["share"],
        }

    n_train = len(np.unique(responses.question[responses.split == TRAIN]))
    sizes = sorted({*(2**i for i in range(1, n_train.bit_length())), n_train})
    return [{"train_questions": k, **point(first_questions(responses, k))} for k in sizes]
