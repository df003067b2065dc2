"""How fast a response relaxes toward the assistant: the assistant-axis projection by response
token, and the relaxation length with its interval.

For a condition (the unpatched persona run, or a default run with a patch) the gap at response
token t is the paired default run's projection minus the condition's (same unit: question,
variant, seed), > 0 where the condition sits below the assistant; NaN once either response has
ended (the curve's `n` says how many units are left at each token). `gap_curves` gives its mean
per persona (and every persona pooled, "all") and token with a bootstrap 95% interval over
questions, and per condition and persona group the relaxation:
- the half-gap length: the first token t (the end of a WINDOW-token running mean) at which the
  mean gap is at most half its first window's value, computed in every resample. A gap that
  never halves within the tokens read is censored: its length is "> n_tokens", never a number
  made up for it, and an interval end that falls on censored resamples is "> n_tokens" too; a
  first gap <= 0 leaves the length undefined. Reported with the shares of resamples censored
  and undefined, and a text form such as "14 [9, > 64]";
- the share of the gap retained (last window's mean over the first's) and the slope of the gap
  per token (least squares; < 0: relaxing), each with its interval; the slope's two-sided
  bootstrap p-value with BH q over every condition and persona group.
Cost: numpy on [n_units, n_tokens] x n_bootstrap resamples: well under a second.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from sae_atlas.stages.selection.decoding import question_resamples
from sae_atlas.stats import benjamini_hochberg, bootstrap_p


def _weighted_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[B, T] means of values [u, T] (NaN ignored) under weights [B, u]."""
    finite = np.isfinite(values)
    sums = weights @ np.where(finite, values, 0.0)
    counts = weights @ finite.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.where(counts > 0, counts, 1), np.nan)


WINDOW = 4
"""Tokens each gap is averaged over (a running mean): single tokens' projections are noisy."""
MIN_SHARE = 0.5
"""The relaxation reads response tokens up to the last at which at least this share of the
units is still answering (the tokens read: n_tokens)."""


def smoothed(curves: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """[B, T - window + 1]: the running mean over `window` tokens of gap curves [B, T] (the
    value at k: tokens k + 1 .. k + window), NaN tokens (responses that ended) left out and
    NaN where a window has none."""
    kernel = np.ones(window)
    finite = np.isfinite(curves)
    sums = np.stack([np.convolve(c, kernel, mode="valid") for c in np.where(finite, curves, 0)])
    counts = np.stack([np.convolve(f, kernel, mode="valid") for f in finite.astype(float)])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.where(counts > 0, counts, 1), np.nan)


def half_gap_length(curves: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """[B] float: for each gap curve [B, T], smoothed over `window` tokens, the first token t
    (1-based, the end of its window: t >= window) whose window mean is <= half the first
    window's; inf when it never is within the T tokens (censored: the length is > T, not a
    number), NaN when the first window's gap is not positive (nothing to relax)."""
    runs = smoothed(curves, window)
    first = runs[:, :1]
    below = np.nan_to_num(runs, nan=np.inf) <= first / 2
    length = np.where(below.any(1), below.argmax(1) + window, np.inf).astype(float)
    return np.where(first[:, 0] > 0, length, np.nan)


def censored_interval(lengths: np.ndarray) -> tuple[float, float]:
    """The 95% percentile interval of bootstrap lengths [B] (inf: censored, NaN: undefined,
    dropped) without interpolation, so a censored end stays inf; NaN for no defined length."""
    defined = lengths[~np.isnan(lengths)]
    if not len(defined):
        return np.nan, np.nan
    low, high = np.percentile(defined, [2.5, 97.5], method="inverted_cdf")
    return float(low), float(high)


def length_text(length: float, n_tokens: int) -> str:
    """A length for a reader: the token count, "> n_tokens" when censored, "-" when undefined."""
    if np.isnan(length):
        return "-"
    return f"> {n_tokens}" if np.isinf(length) else f"{length:.0f}"


def slopes(curves: np.ndarray) -> np.ndarray:
    """[B] least-squares slope per token of each gap curve [B, T] (NaN tokens ignored): < 0
    where the gap shrinks along the response."""
    tokens = np.arange(curves.shape[1], dtype=float)
    finite = np.isfinite(curves)
    count = finite.sum(1)
    mean_t = (finite * tokens).sum(1) / np.maximum(count, 1)
    mean_y = np.where(finite, curves, 0).sum(1) / np.maximum(count, 1)
    centred = np.where(finite, tokens - mean_t[:, None], 0)
    residual = np.where(finite, curves - mean_y[:, None], 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (centred * residual).sum(1) / (centred**2).sum(1)


def retained(curves: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """[B]: each gap curve's last window mean (the last window with tokens left) over its first
    (1: no relaxation within the response read; 0: back at the default)."""
    runs = smoothed(curves, window)
    finite = np.isfinite(runs)
    last = np.where(finite.any(1), runs.shape[1] - 1 - finite[:, ::-1].argmax(1), 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return runs[np.arange(len(runs)), last] / runs[:, 0]


def _groups(persona: np.ndarray) -> list[tuple[str, np.ndarray]]:
    return [("all", np.ones(len(persona), bool))] + [
        (name, persona == name) for name in sorted(set(persona))
    ]


def _tokens_read(gap: np.ndarray, share: float = MIN_SHARE) -> int:
    """Tokens of gap [u, T] up to the last one at which at least `share` of the units have a
    value (later tokens stand for the few longest responses only)."""
    enough = np.isfinite(gap).sum(0) >= share * len(gap)
    return int(np.flatnonzero(enough).max(initial=-1)) + 1


def _relaxation_row(point: np.ndarray, boot: np.ndarray) -> dict[str, object]:
    """The relaxation figures of one mean gap curve point [T] and its resamples boot [B, T]."""
    n_tokens = int(np.flatnonzero(np.isfinite(point)).max(initial=-1)) + 1
    length = float(half_gap_length(point[None])[0])
    lengths = half_gap_length(boot)
    low, high = censored_interval(lengths)
    defined = lengths[~np.isnan(lengths)]
    slope_draws = slopes(boot)
    kept = retained(boot)
    windows = smoothed(point[None])[0]
    windows = windows[np.isfinite(windows)]
    return {
        "half_gap_length": length if np.isfinite(length) else np.nan,
        "length_censored": bool(np.isinf(length)),
        "ci_low": low if np.isfinite(low) else np.nan,
        "ci_high": high if np.isfinite(high) else np.nan,
        "relaxation": f"{length_text(length, n_tokens)} [{length_text(low, n_tokens)}, "
        f"{length_text(high, n_tokens)}]",
        "censored": float(np.isinf(defined).mean()) if len(defined) else np.nan,
        "undefined": float(np.isnan(lengths).mean()),
        "n_tokens": n_tokens,
        "gap_first": float(windows[0]) if len(windows) else np.nan,
        "gap_last": float(windows[-1]) if len(windows) else np.nan,
        "retained": float(retained(point[None])[0]),
        "retained_low": float(np.nanpercentile(kept, 2.5)),
        "retained_high": float(np.nanpercentile(kept, 97.5)),
        "slope": float(slopes(point[None])[0]),
        "slope_low": float(np.nanpercentile(slope_draws, 2.5)),
        "slope_high": float(np.nanpercentile(slope_draws, 97.5)),
        "slope_p": bootstrap_p(slope_draws),
    }


def gap_curves(
    gaps: dict[str, np.ndarray],
    persona: np.ndarray,
    question: np.ndarray,
    n_bootstrap: int,
    seed: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per condition (gaps: condition -> [u, T]) and persona group: the gap curve by token
    with intervals, and the relaxation (`_relaxation_row`) with BH q-values of the slope over
    every condition and group."""
    resamples = question_resamples(question, n_bootstrap, seed)
    curves, lengths = [], []
    for condition, gap in gaps.items():
        for name, rows in _groups(persona):
            point = _weighted_mean(gap[rows], np.ones((1, rows.sum())))[0]
            boot = _weighted_mean(gap[rows], resamples[:, rows])
            with warnings.catch_warnings():  # tokens no unit reached: NaN, as documented
                warnings.simplefilter("ignore", RuntimeWarning)
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
                        "n_running": np.isfinite(gap[rows]).sum(0),
                    }
                )
            )
            read = _tokens_read(gap[rows])
            row = _relaxation_row(point[:read], boot[:, :read])
            lengths.append({"condition": condition, "persona": name, **row})
    table = pd.DataFrame(lengths)
    table["slope_q"] = benjamini_hochberg(table["slope_p"].to_numpy())
    return pd.concat(curves, ignore_index=True), table
