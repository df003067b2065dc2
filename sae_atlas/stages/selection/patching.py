"""The causal test of selection at the header: residual patches between persona and default runs,
against matched non-header patches and patches from another persona, scored and compared.

For every persona run r (persona p, variant v, question q) its default run d(r) shares v, q and
the sampling seed, and its other run o(r) is a run of another chosen persona p' on the same v, q
(p' drawn at random per unit: a real residual from the distribution of persona headers, not
isotropic noise). `patch_plans` lists the conditions, each a set of target prompts with
residuals (after block `layer`) put in at the last H prompt positions (the header) or at the H
positions before them (the end of the user's message: the same tokens in both runs, a matched
non-header control):

- default+header:persona, default+user:persona, default+header:other (into d(r), scored for p:
  does p's header make the default speak as p?);
- persona+header:default, persona+user:default, persona+header:other (into r, scored for p:
  does the default's header take p away?).

`paired_effects` turns per-run scores into per-persona effects: each condition minus its
unpatched baseline (default or persona run, same unit), and the contrasts header - user and
header - other, paired by unit, with bootstrap 95% intervals over questions, one-sided p-values
and BH over personas per contrast. Cost: numpy bookkeeping; the sampling is `runs.generate`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sae_atlas.stages.selection.decoding import question_resamples
from sae_atlas.stats import benjamini_hochberg


@dataclass(frozen=True)
class Units:
    """The persona runs as units: run [u] (grid row), default [u] (grid row of d(r)), other [u]
    (grid row of o(r)), persona [u] (name), question [u]."""

    run: np.ndarray
    default: np.ndarray
    other: np.ndarray
    persona: np.ndarray
    question: np.ndarray


def selection_units(grid: pd.DataFrame, seed: int) -> Units:
    """Every persona run of `grid` (`selection_grid`) with its default and other runs."""
    key = list(zip(grid["persona"], grid["variant"], grid["question"], strict=True))
    row_of = {k: i for i, k in enumerate(key)}
    personas = sorted(set(grid.loc[~grid["is_default"], "persona"]))
    default = str(grid.loc[grid["is_default"], "persona"].iloc[0])
    rng = np.random.default_rng(seed)
    runs = np.flatnonzero(~grid["is_default"].to_numpy())
    others = []
    for r in runs:
        p, v, q = key[r]
        choices = [x for x in personas if x != p] or [p]
        others.append(row_of[(choices[rng.integers(len(choices))], v, q)])
    return Units(
        run=runs,
        default=np.array([row_of[(default, key[r][1], key[r][2])] for r in runs]),
        other=np.array(others),
        persona=grid["persona"].to_numpy()[runs],
        question=grid["question"].to_numpy()[runs],
    )


@dataclass(frozen=True)
class PatchPlan:
    """One patched condition: per unit the grid row whose prompt is run (target [u]) and the
    grid row whose residual is put in (source [u]), at the header or the user positions, and
    the unpatched baseline it is compared with (default or persona)."""

    name: str
    target: np.ndarray
    source: np.ndarray
    where: str
    baseline: str


def patch_plans(units: Units) -> list[PatchPlan]:
    """The six patched conditions (see the module docstring)."""
    return [
        PatchPlan("default+header:persona", units.default, units.run, "header", "default"),
        PatchPlan("default+user:persona", units.default, units.run, "user", "default"),
        PatchPlan("default+header:other", units.default, units.other, "header", "default"),
        PatchPlan("persona+header:default", units.run, units.default, "header", "persona"),
        PatchPlan("persona+user:default", units.run, units.default, "user", "persona"),
        PatchPlan("persona+header:other", units.run, units.other, "header", "persona"),
    ]


CONTRASTS: dict[tuple[str, str], tuple[str, str]] = {
    ("default", "user"): ("default+header:persona", "default+user:persona"),
    ("default", "other"): ("default+header:persona", "default+header:other"),
    ("persona", "user"): ("persona+header:default", "persona+user:default"),
    ("persona", "other"): ("persona+header:default", "persona+header:other"),
}
"""(target, control) -> (header condition, control condition) whose effects are compared."""


def _effect_rows(
    differences: np.ndarray,
    units: Units,
    resamples: np.ndarray,
    label: dict[str, str],
) -> list[dict[str, object]]:
    """Per persona: mean of differences [u] with its bootstrap interval over questions
    (resamples [B, u] counts) and one-sided p-value of a mean <= 0."""
    rows: list[dict[str, object]] = []
    for name in sorted(set(units.persona)):
        mine = units.persona == name
        values = differences[mine]
        weights = resamples[:, mine]
        sums = (weights * np.nan_to_num(values)).sum(1)
        counts = (weights * np.isfinite(values)).sum(1)
        boot = sums / np.maximum(counts, 1)
        low, high = np.percentile(boot, [2.5, 97.5])
        rows.append(
            {
                **label,
                "persona": name,
                "mean": float(np.nanmean(values)),
                "ci_low": float(low),
                "ci_high": float(high),
                "p_value": float((1 + (boot <= 0).sum()) / (1 + len(boot))),
                "n": int(np.isfinite(values).sum()),
            }
        )
    return rows


def paired_effects(
    scores: dict[str, np.ndarray],
    units: Units,
    score: str,
    n_bootstrap: int,
    seed: int,
    sign: Callable[[str], float] = lambda baseline: 1.0 if baseline == "default" else -1.0,
) -> pd.DataFrame:
    """Effects of every patched condition and the contrasts, per persona, for one score.

    scores: condition -> [u] (the unpatched "persona" and "default" too: the unit's persona
    and default runs, scored for the unit's persona). Effect = sign x (condition - baseline):
    into the default, the rise of the score; into the persona run, its fall (so both are
    positive when the header carries the persona). Contrasts: header minus user and header
    minus other, per target. q-values: BH over personas within each row kind.
    """
    resamples = question_resamples(units.question, n_bootstrap, seed)
    rows: list[dict[str, object]] = []
    effects = {}
    for plan in patch_plans(units):
        effect = sign(plan.baseline) * (scores[plan.name] - scores[plan.baseline])
        effects[plan.name] = effect
        rows += _effect_rows(effect, units, resamples, {"kind": "effect", "condition": plan.name})
    for (target, control), (header, other) in CONTRASTS.items():
        rows += _effect_rows(
            effects[header] - effects[other],
            units,
            resamples,
            {"kind": f"header_minus_{control}", "condition": target},
        )
    table = pd.DataFrame(rows).assign(score=score)
    table["q_value"] = table.groupby(["kind", "condition"])["p_value"].transform(
        lambda p: benjamini_hochberg(p.to_numpy())
    )
    return table
