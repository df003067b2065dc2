"""How well each persona is decoded at each position class, cross-fitted over prompt variants and
questions, with intervals over questions.

`crossfit_scores`: a nearest-centroid probe (features standardised on the training rows; class
c's score is the standardised point's projection on c's mean minus the mean of the other
classes' means) trained on the runs whose prompt variant and question half both differ from the
test runs' (each run is scored once, by a probe that saw neither its system prompt nor its
question). `decoding_curves`: per persona and position the one-vs-rest AUROC of its score with a
bootstrap 95% interval over questions (questions resampled with all their runs).
`header_gain`: per persona, the AUROC at a header position minus at the user's turn, with its
interval and one-sided bootstrap p-value, BH over personas. Cost: numpy, [n_runs, n_positions,
d] x folds; the bootstrap ranks n_bootstrap x n_classes blocks: seconds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from sae_atlas.stats import benjamini_hochberg, column_auroc


def _fold_scores(train: np.ndarray, labels: np.ndarray, test: np.ndarray, n: int) -> np.ndarray:
    """[n_test, n] scores of test [m, d] under a probe fit on train [k, d] with labels [k]."""
    keep = np.isfinite(train).all(1)
    train, labels = train[keep], labels[keep]
    mean, std = train.mean(0), train.std(0) + 1e-6
    z = (train - mean) / std
    means = np.stack(
        [z[labels == c].mean(0) if (labels == c).any() else np.zeros(z.shape[1]) for c in range(n)]
    )
    rest = (means.sum(0, keepdims=True) - means) / max(n - 1, 1)
    directions = means - rest
    return ((np.nan_to_num(test) - mean) / std) @ directions.T


def crossfit_scores(
    features: np.ndarray, labels: np.ndarray, variant: np.ndarray, question: np.ndarray
) -> np.ndarray:
    """Out-of-fold scores [n_runs, n_positions, n_classes] of features [n_runs, n_positions,
    d] (labels [n_runs] in 0..n_classes-1): folds are (variant, question parity) pairs; a
    run's probe is trained on the runs of other variants and the other question parity; NaN
    for a run without the position."""
    n_classes = int(labels.max()) + 1
    half = question % 2
    scores = np.full((*features.shape[:2], n_classes), np.nan)
    for v in np.unique(variant):
        for h in (0, 1):
            test = (variant == v) & (half == h)
            train = (variant != v) & (half != h)
            if not test.any() or not train.any():
                continue
            for p in range(features.shape[1]):
                scores[test, p] = _fold_scores(
                    features[train, p], labels[train], features[test, p], n_classes
                )
    scores[~np.isfinite(features).all(-1)] = np.nan
    return scores


def _aurocs(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[n_classes, n_positions] one-vs-rest AUROC with runs repeated `weights` [n] times."""
    rows = np.repeat(np.arange(len(labels)), weights.astype(int))
    scores, labels = np.nan_to_num(scores[rows], nan=-1e9), labels[rows]
    return np.stack(
        [
            column_auroc(scores[labels == c, :, c], scores[labels != c, :, c])
            for c in range(scores.shape[-1])
        ]
    )


def question_resamples(question: np.ndarray, n_bootstrap: int, seed: int) -> np.ndarray:
    """[n_bootstrap, n_runs] counts: each resample draws questions with replacement and
    repeats every run of a drawn question as often as it was drawn."""
    ids = np.unique(question)
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, len(ids), (n_bootstrap, len(ids)))
    counts = np.stack([np.bincount(d, minlength=len(ids)) for d in drawn])
    return counts[:, np.searchsorted(ids, question)]


def decoding_aurocs(
    scores: np.ndarray, labels: np.ndarray, question: np.ndarray, n_bootstrap: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """AUROC [n_classes, n_positions] and its bootstrap resamples [B, n_classes, n_positions]
    over questions."""
    point = _aurocs(scores, labels, np.ones(len(labels)))
    boot = np.stack(
        [_aurocs(scores, labels, w) for w in question_resamples(question, n_bootstrap, seed)]
    )
    return point, boot


def decoding_curves(
    point: np.ndarray,
    boot: np.ndarray,
    classes: Sequence[str],
    positions: Sequence[str],
    source: str,
) -> pd.DataFrame:
    """One row per class and position: auroc with its 95% interval over questions."""
    low, high = np.percentile(boot, [2.5, 97.5], axis=0)
    c, p = np.meshgrid(np.arange(len(classes)), np.arange(len(positions)), indexing="ij")
    return pd.DataFrame(
        {
            "source": source,
            "persona": np.asarray(classes, dtype=object)[c.ravel()],
            "position": np.asarray(positions, dtype=object)[p.ravel()],
            "position_index": p.ravel(),
            "auroc": point.ravel(),
            "ci_low": low.ravel(),
            "ci_high": high.ravel(),
        }
    )


def header_gain(
    point: np.ndarray,
    boot: np.ndarray,
    classes: Sequence[str],
    positions: Sequence[str],
    at: str,
    source: str,
) -> pd.DataFrame:
    """Per class: AUROC at position `at` minus at "user", its 95% interval, the one-sided
    bootstrap p-value of a gain <= 0, and BH q-values over the classes."""
    a, u = positions.index(at), positions.index("user")
    gain, samples = point[:, a] - point[:, u], boot[:, :, a] - boot[:, :, u]
    low, high = np.percentile(samples, [2.5, 97.5], axis=0)
    p = (1 + (samples <= 0).sum(0)) / (1 + len(samples))
    return pd.DataFrame(
        {
            "source": source,
            "persona": list(classes),
            "position": at,
            "auroc_user": point[:, u],
            "auroc_at": point[:, a],
            "gain": gain,
            "ci_low": low,
            "ci_high": high,
            "p_value": p,
            "q_value": benjamini_hochberg(p),
        }
    )
