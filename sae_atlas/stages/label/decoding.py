"""Decode personas from response-level SAE profiles: which persona wrote a held-out response.

Candidates (DECODERS: nearest centroid by cosine; L2 logistic regression on standardised
profiles) are fitted on train questions; each half of the held-out questions is scored by the
candidate best on the other half (`cross_fitted`). Cost: a few logistic fits on [n_train, F].
Returns JSON-ready figures (`persona_decoder`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, cast

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sae_atlas.stages.label.inputs import HELDOUT, TRAIN, Responses

DECODERS: tuple[str, ...] = ("centroid", "logistic(C=0.01)", "logistic(C=0.1)")
"""Persona decoder candidates (fit_decoder names), fitted on train questions; the one that scores
a held-out response is chosen on the other half of the held-out questions (persona_decoder)."""


def unit_directions(x: np.ndarray) -> np.ndarray:
    """x [n, d] with each row divided by its norm (floored at 1e-12), in x's own dtype: what the
    centroid decoder's cosine compares."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def fit_decoder(
    name: str, profiles: np.ndarray, labels: np.ndarray
) -> Callable[[np.ndarray], np.ndarray]:
    """predict(profiles [m, F]) -> labels [m] of a decoder fitted on profiles [n, F] with labels
    [n]. name: `centroid` (cosine to the per-label mean profile) or `logistic(C=c)` (L2 logistic
    regression on standardised profiles, sklearn's C)."""
    if name == "centroid":
        names = np.unique(labels)
        centroids = unit_directions(np.stack([profiles[labels == n].mean(0) for n in names]))
        return lambda x: names[(unit_directions(x) @ centroids.T).argmax(1)]
    strength = float(name.removeprefix("logistic(C=").removesuffix(")"))
    model = make_pipeline(StandardScaler(), LogisticRegression(C=strength, max_iter=300, tol=1e-3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(profiles, labels)
    return cast(Callable[[np.ndarray], np.ndarray], model.predict)


def question_folds(questions: np.ndarray, n_folds: int) -> list[np.ndarray]:
    """The distinct question ids (sorted) dealt round robin into n_folds groups."""
    distinct = np.unique(questions)
    return [distinct[i::n_folds] for i in range(n_folds)]


def cross_fitted(
    correct: dict[str, np.ndarray], groups: np.ndarray
) -> tuple[np.ndarray, list[str]]:
    """Which candidate scores each row: rows [n] are dealt by their group (question) into two
    halves, and each half is scored by the candidate with the best accuracy on the other half
    (ties: the first in `correct`), so no row takes part in choosing what scores it.

    correct: {candidate: [n] bool}. Returns each row's correctness under its half's choice and
    the choice per half (one choice, the first candidate, with fewer than two groups).
    """
    names = list(correct)
    halves = question_folds(groups, 2)
    if len(halves[1]) == 0:
        return correct[names[0]], [names[0]]
    result = np.zeros(len(groups), bool)
    chosen = []
    for scored, choosing in ((0, 1), (1, 0)):
        on = np.isin(groups, halves[choosing])
        best = max(names, key=lambda name: correct[name][on].mean())
        rows = np.isin(groups, halves[scored])
        result[rows] = correct[best][rows]
        chosen.append(best)
    return result, chosen


def persona_decoder(response_mean: np.ndarray, responses: Responses) -> dict[str, Any]:
    """A persona decoder on response-level mean SAE activations, fitted on train questions and
    scored on held-out ones.

    Every candidate (DECODERS: nearest centroid, cosine; L2 logistic regression on standardised
    profiles) is fitted on every train response. Which one scores a held-out response is chosen
    on the other half of the held-out questions (cross_fitted), so held-out labels never choose
    the decoder that scores them. The choice is not made by cross-validation over the train
    questions: the SAE was trained on their tokens, and such a cross-validation picked the
    decoder that was weakest on unseen questions (quick atlas, 2026-11-27: nearest centroid
    0.116 in the CV and 0.095 held out, the logistic candidates 0.067-0.078 and 0.144-0.155).
    Returns the held-out accuracy, chance (the most frequent train persona's share of the
    held-out responses), the decoder (per half, joined by " / " when the halves differ), each
    candidate's held-out accuracy on its own (a diagnostic, never a choice) and the accuracy per
    persona.
    """
    train = responses.split == TRAIN
    heldout = responses.split == HELDOUT
    labels = np.unique(responses.persona[train])
    if not heldout.any() or len(labels) < 2:
        return {"accuracy": None, "chance": None, "n_heldout": int(heldout.sum())}
    persona = responses.persona
    truth = persona[heldout]
    predicted = {
        name: fit_decoder(name, response_mean[train], persona[train])(response_mean[heldout])
        for name in DECODERS
    }
    hits = {name: predicted[name] == truth for name in DECODERS}
    correct, chosen = cross_fitted(hits, responses.question[heldout])
    majority = labels[np.bincount(persona[train])[labels].argmax()]
    return {
        "accuracy": float(correct.mean()),
        "chance": float((truth == majority).mean()),
        "uniform_chance": 1 / len(labels),
        "decoder": " / ".join(dict.fromkeys(chosen)),
        "chosen_by_half": chosen,
        "candidates": {name: float(hit.mean()) for name, hit in hits.items()},
        "n_personas": len(labels),
        "n_heldout": int(heldout.sum()),
        "per_persona": {
            responses.names[p]: float(correct[truth == p].mean())
            for p in labels
            if (truth == p).any()
        },
    }
