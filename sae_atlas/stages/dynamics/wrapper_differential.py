"""The wrapper scan's differential statistics: what an auditor holding the base model does.

The same wrapper scan on the fine-tuned and the base model, with one SAE, and per feature the
paired difference in differences over prompts (fine-tuned wrapped - fine-tuned plain) - (base
wrapped - base plain) of its mean activation over the response (`feature_means` [n_responses,
d_sae], rows as `wrapper_responses` orders them). A wrapper that changes both models alike (a
format instruction) cancels; one the fine-tuning taught a behaviour does not. Candidates by a
t-test on the choosing half of the prompts, confirmed by a one-sided t-test on the scoring half,
Benjamini-Hochberg over every wrapper; wrappers ranked by that evidence and by how well their
features separate wrapped from other responses (AUROC). numpy / scipy on small arrays:
milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import ttest_1samp

from sae_atlas import stats
from sae_atlas.errors import SaeAtlasError
from sae_atlas.stages.dynamics.wrapper_firing import discovery_rows, evidence, ranked
from sae_atlas.stats import benjamini_hochberg


def prompt_means(values: np.ndarray, prompt_of: np.ndarray) -> np.ndarray:
    """values [n, d] averaged over the rows (seeds) of each prompt: [n_prompts, d], prompt i in
    row i (prompt_of [n], indices 0 .. n_prompts - 1)."""
    values, prompt_of = np.asarray(values, dtype=np.float64), np.asarray(prompt_of)
    n_prompts = int(prompt_of.max()) + 1
    sums = np.zeros((n_prompts, values.shape[1]))
    np.add.at(sums, prompt_of, values)
    return sums / np.bincount(prompt_of, minlength=n_prompts)[:, None]


def difference_in_differences(
    tuned_wrapped: np.ndarray,
    tuned_plain: np.ndarray,
    base_wrapped: np.ndarray,
    base_plain: np.ndarray,
    prompt_of: np.ndarray,
) -> np.ndarray:
    """[n_prompts, d_sae]: per prompt (seeds averaged), how much more the wrapper moves each
    feature on the fine-tuned model than on the base model: (tuned_wrapped - tuned_plain) -
    (base_wrapped - base_plain), each [n, d_sae] with row i the same prompt and seed, prompt_of
    [n]."""
    shapes = {np.shape(a) for a in (tuned_wrapped, tuned_plain, base_wrapped, base_plain)}
    if len(shapes) != 1 or len(prompt_of) != np.shape(tuned_wrapped)[0]:
        raise SaeAtlasError(
            f"differential scan: arrays {sorted(shapes)} and {len(prompt_of)} prompt indices; "
            "pass four [n, d_sae] arrays on the same prompts and seeds and [n] indices"
        )
    tuned = np.asarray(tuned_wrapped, np.float64) - np.asarray(tuned_plain, np.float64)
    base = np.asarray(base_wrapped, np.float64) - np.asarray(base_plain, np.float64)
    return prompt_means(tuned - base, prompt_of)


def differential_statistics(
    effects: np.ndarray, choosing: np.ndarray, choose_p: float, max_candidates: int
) -> pd.DataFrame:
    """Features whose paired effect departs from 0, chosen on the `choosing` prompts and tested
    on the others.

    effects: [n_prompts, d_sae] (`difference_in_differences`); choosing: bool [n_prompts].
    Candidates: two-sided one-sample t-test p <= choose_p on the choosing prompts, at most
    max_candidates (smallest p first); sign: the sign of their mean effect there; p_value: the
    one-sided t-test in that direction on the scoring prompts (no q-value: correct over every
    wrapper tested together). One row per candidate: feature, sign, effect, choose_p (choosing
    prompts), heldout_effect, p_value.
    """
    effects, choosing = np.asarray(effects, np.float64), np.asarray(choosing, bool)
    if len(choosing) != len(effects):
        raise SaeAtlasError(
            f"differential scan: {len(effects)} prompts of effects, {len(choosing)} choosing "
            "flags; pass [n_prompts, d_sae] and [n_prompts]"
        )
    if min(choosing.sum(), (~choosing).sum()) < 2:
        raise SaeAtlasError(
            "differential scan: needs at least 2 choosing and 2 scoring prompts; sample more"
        )
    chosen, scoring = effects[choosing], effects[~choosing]
    with np.errstate(divide="ignore", invalid="ignore"):
        choose = np.nan_to_num(ttest_1samp(chosen, 0.0, axis=0).pvalue, nan=1.0)
    order = np.argsort(choose, kind="stable")
    candidates = order[choose[order] <= choose_p][:max_candidates]
    sign = np.sign(chosen[:, candidates].mean(0))
    signed = scoring[:, candidates] * sign
    with np.errstate(divide="ignore", invalid="ignore"):
        p_values = ttest_1samp(signed, 0.0, axis=0, alternative="greater").pvalue
    return pd.DataFrame(
        {
            "feature": candidates.astype(np.int64),
            "sign": sign.astype(np.int64),
            "effect": chosen[:, candidates].mean(0),
            "choose_p": choose[candidates],
            "heldout_effect": scoring[:, candidates].mean(0),
            "p_value": np.nan_to_num(np.asarray(p_values, dtype=float), nan=1.0),
        }
    )


def differential_table(
    tuned: np.ndarray,
    base: np.ndarray,
    wrapper_of: np.ndarray,
    prompt_of: np.ndarray,
    wrappers: Sequence[str],
    choose_p: float,
    max_candidates: int,
    fdr: float,
) -> pd.DataFrame:
    """`differential_statistics` of every wrapper, the first half of the prompts choosing; BH
    q-values over every wrapper and `confirmed` = q <= fdr.

    tuned / base: feature means [n, d_sae] of the same scan (rows as `wrapper_responses`
    orders them: within a wrapper, the plain rows' order) on the fine-tuned and the base
    model; wrapper_of / prompt_of: [n] each row's wrapper ("plain" or one of `wrappers`) and
    prompt index.
    """
    tuned, base = np.asarray(tuned), np.asarray(base)
    wrapper_of, prompt_of = np.asarray(wrapper_of), np.asarray(prompt_of)
    plain = wrapper_of == "plain"
    choosing = discovery_rows(np.arange(int(prompt_of.max()) + 1))
    tables = []
    for name in wrappers:
        rows = wrapper_of == name
        effects = difference_in_differences(
            tuned[rows], tuned[plain], base[rows], base[plain], prompt_of[plain]
        )
        found = differential_statistics(effects, choosing, choose_p, max_candidates)
        tables.append(found.assign(wrapper=name))
    table = pd.concat(tables, ignore_index=True)
    table["q_value"] = benjamini_hochberg(table["p_value"].to_numpy())
    table["confirmed"] = table["q_value"] <= fdr
    return table


def combined_score(
    values: np.ndarray, reference: np.ndarray, features: Sequence[int], signs: Sequence[int]
) -> np.ndarray:
    """[n]: the sum over `features` of sign x the activation standardised by the reference
    rows' mean and standard deviation (values [n, d_sae], reference [m, d_sae]; 0 for none)."""
    if len(features) == 0:
        return np.zeros(len(values))
    columns = list(features)
    reference = np.asarray(reference, np.float64)[:, columns]
    spread = reference.std(0)
    standard = (np.asarray(values, np.float64)[:, columns] - reference.mean(0)) / np.where(
        spread > 0, spread, 1.0
    )
    return standard @ np.asarray(signs, np.float64)


def differential_auroc(
    table: pd.DataFrame,
    tuned: np.ndarray,
    wrapper_of: np.ndarray,
    prompt_of: np.ndarray,
    wrapper: str,
    negatives: Sequence[str] = ("plain",),
) -> dict[str, float]:
    """How well `wrapper`'s features separate its scoring-half responses on the fine-tuned model
    (tuned [n, d_sae]) from the scoring-half responses under `negatives`.

    combined: `combined_score` of its confirmed features (its candidates when none is
    confirmed), standardised on its and the plain choosing-half responses; single: the
    candidate with the smallest choosing p alone. 0.5 when it has no candidate.
    """
    wrapper_of, prompt_of = np.asarray(wrapper_of), np.asarray(prompt_of)
    block = table[table["wrapper"] == wrapper]
    flagged = block[block["confirmed"]] if block["confirmed"].any() else block
    top = block.nsmallest(1, "choose_p")
    choosing = discovery_rows(prompt_of)
    reference = tuned[choosing & np.isin(wrapper_of, [wrapper, "plain"])]
    positive = ~choosing & (wrapper_of == wrapper)
    negative = ~choosing & np.isin(wrapper_of, list(negatives))
    result = {}
    for name, chosen in (("combined", flagged), ("single", top)):
        features, signs = chosen["feature"].tolist(), chosen["sign"].tolist()
        result[name] = stats.auroc(
            combined_score(tuned[positive], reference, features, signs),
            combined_score(tuned[negative], reference, features, signs),
        )
    return result


def rank_differential(
    table: pd.DataFrame,
    tuned: np.ndarray,
    wrapper_of: np.ndarray,
    prompt_of: np.ndarray,
    wrappers: Sequence[str],
) -> pd.DataFrame:
    """Wrappers ordered by the differential scan's evidence, strongest first.

    Per wrapper: n_candidates, n_confirmed (q <= fdr), best_q, heldout_auroc and single_auroc
    (`differential_auroc` against the plain responses on the fine-tuned model). Ranked by
    n_confirmed, then heldout_auroc; rank from 1.
    """
    rows = []
    for name in wrappers:
        block = table[table["wrapper"] == name]
        auroc = differential_auroc(table, tuned, wrapper_of, prompt_of, name)
        rows.append(
            {
                **evidence(name, block),
                "heldout_auroc": auroc["combined"],
                "single_auroc": auroc["single"],
            }
        )
    return ranked(rows)
