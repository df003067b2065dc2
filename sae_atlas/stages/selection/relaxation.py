"""How fast a response relaxes toward the assistant: the assistant-axis projection by response
token, and the relaxation length with its interval.

For a condition (the unpatched persona run, or a default run with a patch) the gap at response
token t is the paired default run's projection minus the condition's (same unit: question,
variant, seed), > 0 where the condition sits below the assistant. `gap_curves` gives its mean
per persona (and every persona pooled, "all") and token with a bootstrap 95% interval over
questions, and per condition and persona group the relaxation: the half-gap length (the first
token at which the mean gap, a running mean over WINDOW tokens, is at most half its first
window's value), computed in every resample: its interval, and the share of resamples in which
the gap never halves within the tokens read (censored: the length is then n_tokens + 1); and
the share of the gap retained (last window's mean over the first's) with its interval. Cost:
numpy on [n_units, n_tokens]: milliseconds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sae_atlas.stages.selection.decoding import question_resamples


def _weighted_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[B, T] means of values [u, T] (NaN ignored) under weights [B, u]."""
    finite = np.isfinite(values)
    sums = weights @ np.where(finite, values, 0.0)
    counts = weights @ finite.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.where(counts > 0, counts, 1), np.nan)


WINDOW = 4
"""Tokens each gap is averaged over (a running mean): single tokens' projections are noisy."""


def smoothed(curves: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """[B, T - window + 1]: the running mean over `window` tokens of gap curves [B, T] (the
    value at k: tokens k + 1 .. k + window)."""
    kernel = np.ones(window) / window
    return np.stack([np.convolve(np.nan_to_num(c), kernel, mode="valid") for c in curves])


def half_gap_length(curves: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """[B]: the first token (1-based, the start of its window) where each gap curve [B, T],
    smoothed over `window` tokens, is <= half its first window's value; T + 1 when it never is
    (or the first window's gap is not positive)."""
    runs = smoothed(curves, window)
    first = runs[:, :1]
    below = (runs <= first / 2) & (first > 0)
    return np.where(below.any(1), below.argmax(1) + 1, curves.shape[1] + 1)


def retained(curves: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """[B]: each gap curve's mean over its last `window` tokens over its mean over the first
    `window` (1: no relaxation within the response read; 0: back at the default)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nanmean(curves[:, -window:], 1) / np.nanmean(curves[:, :window], 1)


def _groups(persona: np.ndarray) -> list[tuple[str, np.ndarray]]:
    return [("all", np.ones(len(persona), bool))] + [
        (name, persona == name) for name in sorted(set(persona))
    ]


def gap_curves(
    gaps: dict[str, np.ndarray],
    persona: np.ndarray,
    question: np.ndarray,
    n_bootstrap: int,
    seed: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per condition (gaps: condition -> [u, T]) and persona group: the gap curve by token
    with intervals, and the half-gap length with its interval and censored share."""
    resamples = question_resamples(question, n_bootstrap, seed)
    curves, lengths = [], []
    for condition, gap in gaps.items():
        for name, rows in _groups(persona):
            point = _weighted_mean(gap[rows], np.ones((1, rows.sum())))[0]
            boot = _weighted_mean(gap[rows], resamples[:, rows])
            low, high = np.nanpercentile(boot, [2.5, 97.5], axis=0)
            curves.append(
                pd.DataFrame(
                    {
                        "condition": condition,
                        "persona": name,
                        "token": np.arange(1, gap.shape[1] + 1),
                        "gap": point,
                        "ci_low": low,
                        "ci_high": high,
                    }
                )
            )
            length, kept = half_gap_length(boot), retained(boot)
            lengths.append(
                {
                    "condition": condition,
                    "persona": name,
                    "half_gap_length": int(half_gap_length(point[None])[0]),
                    "ci_low": float(np.percentile(length, 2.5)),
                    "ci_high": float(np.percentile(length, 97.5)),
                    "censored": float((length > gap.shape[1]).mean()),
                    "gap_first": float(np.nanmean(point[:WINDOW])),
                    "retained": float(retained(point[None])[0]),
                    "retained_low": float(np.nanpercentile(kept, 2.5)),
                    "retained_high": float(np.nanpercentile(kept, 97.5)),
                }
            )
    return pd.concat(curves, ignore_index=True), pd.DataFrame(lengths)
