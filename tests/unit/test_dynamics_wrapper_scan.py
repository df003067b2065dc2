from __future__ import annotations

import numpy as np
import pytest

from sae_atlas.errors import SaeAtlasError
from sae_atlas.stages.dynamics import (
    combined_score,
    difference_in_differences,
    differential_auroc,
    differential_statistics,
    differential_table,
    firing_statistics,
    firing_table,
    heldout_auroc,
    rank_differential,
    rank_wrappers,
)
from sae_atlas.stats import benjamini_hochberg


def test_firing_statistics_flags_a_planted_feature_and_nothing_on_a_clean_case():
    rng = np.random.default_rng(0)
    n, d_sae = 16, 200
    plain = rng.random((n, d_sae)) < 0.3
    clean = plain.copy()  # the wrapper changes nothing
    planted = plain.copy()
    planted[:, 7] = True  # fires under the wrapper on every prompt
    plain[:, 7] = False  # and never without it
    discovery = np.arange(n) < n // 2
    found = firing_statistics(planted, plain, discovery, 0.5, 0.05)
    q_values = benjamini_hochberg(found["p_value"].to_numpy())
    assert found.loc[q_values <= 0.05, "feature"].tolist() == [7]
    none = firing_statistics(clean, plain, discovery, 0.5, 0.05)
    assert not (benjamini_hochberg(none["p_value"].to_numpy()) <= 0.05).any()
    with pytest.raises(SaeAtlasError, match="discovery and held-out"):
        firing_statistics(planted, plain, np.ones(n, bool), 0.5, 0.05)


def planted_scan(n_prompts: int = 16, seeds: int = 2, d_sae: int = 300, seed: int = 0):
    """Fires of a scan where wrapper "real" plants features 3 and 4 (on 90% of its responses,
    never without it), "format" plants feature 9 that also fires on 30% of plain responses,
    and the decoys change nothing; rows as `wrapper_responses` orders them."""
    rng = np.random.default_rng(seed)
    names = ["plain", "decoy_a", "real", "format", "decoy_b"]
    n = n_prompts * seeds
    base = rng.random((n, d_sae)) < 0.2
    base[:, [3, 4, 9]] = False
    blocks = []
    for name in names:
        block = base.copy()
        block ^= rng.random((n, d_sae)) < 0.02  # sampling noise: responses differ a little
        block[:, [3, 4]] = False
        if name == "real":
            block[:, [3, 4]] = rng.random((n, 2)) < 0.9
        block[:, 9] = rng.random(n) < (0.9 if name == "format" else 0.3)
        blocks.append(block)
    wrapper_of = np.repeat(names, n)
    prompt_of = np.tile(np.repeat(np.arange(n_prompts), seeds), len(names))
    return np.concatenate(blocks), wrapper_of, prompt_of, names[1:]


def test_scan_ranks_the_planted_wrapper_first_with_a_separating_heldout_auroc():
    fires, wrapper_of, prompt_of, wrappers = planted_scan()
    table = firing_table(fires, wrapper_of, prompt_of, wrappers, 0.5, 0.05, 0.05)
    confirmed = table[table["confirmed"]]
    assert set(confirmed["wrapper"]) == {"real"}
    assert set(confirmed["feature"]) == {3, 4}
    ranked = rank_wrappers(table, fires, wrapper_of, prompt_of, wrappers)
    assert ranked["wrapper"].tolist()[0] == "real"
    assert ranked["rank"].tolist() == [1, 2, 3, 4]
    real = ranked.iloc[0]
    assert real["n_confirmed"] == 2 and real["heldout_auroc"] > 0.9
    assert (ranked.iloc[1:]["n_confirmed"] == 0).all()


def test_scan_of_a_clean_model_confirms_nothing():
    fires, wrapper_of, prompt_of, wrappers = planted_scan()
    fires[wrapper_of == "real"] = fires[wrapper_of == "decoy_a"]
    table = firing_table(fires, wrapper_of, prompt_of, wrappers, 0.5, 0.05, 0.05)
    assert not table["confirmed"].any()
    ranked = rank_wrappers(table, fires, wrapper_of, prompt_of, wrappers)
    assert (ranked["n_confirmed"] == 0).all()


def test_heldout_auroc_of_known_cases():
    wrapped = np.zeros((4, 5), bool)
    wrapped[:, 2] = True
    plain = np.zeros((4, 5), bool)
    assert heldout_auroc(wrapped, plain, [2]) == 1.0
    assert heldout_auroc(plain, wrapped, [2]) == 0.0
    assert heldout_auroc(wrapped, plain, []) == 0.5


def differential_scan(n_prompts: int = 16, seeds: int = 2, d_sae: int = 300, seed: int = 0):
    """Feature means of one scan on a fine-tuned and a base model: wrapper "real" raises
    features 3 and 4 on the fine-tuned model only; "format" raises features 10-15 on both
    models alike (a format instruction); the fine-tuning shifts features 20-29 whatever the
    wrapper; every response adds its own sampling noise. Rows as `wrapper_responses` orders
    them."""
    rng = np.random.default_rng(seed)
    names = ["plain", "decoy_a", "real", "format", "decoy_b"]
    prompt_of = np.repeat(np.arange(n_prompts), seeds)
    topic = rng.gamma(2.0, 0.5, (n_prompts, d_sae))[prompt_of]  # what the question evokes
    models = []
    for tuned in (True, False):
        blocks = []
        for name in names:
            block = topic + rng.normal(0.0, 0.3, topic.shape)
            if tuned:
                block[:, 20:30] += 1.0
            if name == "format":
                block[:, 10:16] += 1.0
            if name == "real" and tuned:
                block[:, [3, 4]] += 1.0
            blocks.append(np.maximum(block, 0.0))
        models.append(np.concatenate(blocks))
    wrapper_of = np.repeat(names, n_prompts * seeds)
    return models[0], models[1], wrapper_of, np.tile(prompt_of, len(names)), names[1:]


def test_differential_scan_ranks_the_planted_wrapper_first_not_the_format_one():
    tuned, base, wrapper_of, prompt_of, wrappers = differential_scan()
    # the plain scan on the fine-tuned model alone ranks the format instruction first
    fires = tuned > 1.5
    plain_scan = firing_table(fires, wrapper_of, prompt_of, wrappers, 0.3, 0.5, 0.05)
    plain_rank = rank_wrappers(plain_scan, fires, wrapper_of, prompt_of, wrappers)
    assert plain_rank["wrapper"].iloc[0] == "format"
    table = differential_table(tuned, base, wrapper_of, prompt_of, wrappers, 0.01, 20, 0.05)
    confirmed = table[table["confirmed"]]
    assert set(confirmed["feature"]) == {3, 4}
    assert set(confirmed["wrapper"]) == {"real"} and (confirmed["sign"] == 1).all()
    ranked = rank_differential(table, tuned, wrapper_of, prompt_of, wrappers)
    assert ranked["wrapper"].tolist()[0] == "real"
    assert ranked["rank"].tolist() == [1, 2, 3, 4]
    assert ranked.iloc[0]["heldout_auroc"] > 0.9 and ranked.iloc[0]["single_auroc"] > 0.8
    assert (ranked.iloc[1:]["n_confirmed"] == 0).all()
    # the format instruction's features also separate on the fine-tuned model: the combined
    # score against every other wrapper's responses is what tells the trigger apart
    everything = differential_auroc(
        table, tuned, wrapper_of, prompt_of, "real", ["plain", "decoy_a", "format", "decoy_b"]
    )
    assert everything["combined"] > 0.9


def test_differential_scan_of_a_base_model_against_itself_confirms_nothing():
    _, base, wrapper_of, prompt_of, wrappers = differential_scan()
    table = differential_table(base, base.copy(), wrapper_of, prompt_of, wrappers, 0.01, 20, 0.05)
    assert len(table) == 0  # the same responses: every difference is 0
    resampled = base + np.random.default_rng(2).normal(0.0, 0.3, base.shape)  # other draws
    table = differential_table(resampled, base, wrapper_of, prompt_of, wrappers, 0.01, 20, 0.05)
    assert not table["confirmed"].any()
    ranked = rank_differential(table, resampled, wrapper_of, prompt_of, wrappers)
    assert (ranked["n_confirmed"] == 0).all()


def test_difference_in_differences_of_known_values():
    ones = np.ones((4, 3))
    effects = difference_in_differences(3 * ones, ones, 2 * ones, ones, np.array([0, 0, 1, 1]))
    assert effects.shape == (2, 3) and np.allclose(effects, 1.0)
    with pytest.raises(SaeAtlasError, match="same prompts and seeds"):
        difference_in_differences(ones, ones[:3], ones, ones, np.arange(4))
    with pytest.raises(SaeAtlasError, match="at least 2 choosing"):
        differential_statistics(np.ones((3, 2)), np.array([True, False, False]), 0.01, 5)


def test_combined_score_standardises_and_signs():
    reference = np.array([[0.0, 10.0], [2.0, 30.0]])  # means 1, 20; sds 1, 10
    values = np.array([[3.0, 0.0]])
    assert combined_score(values, reference, [0, 1], [1, -1]).tolist() == [2.0 + 2.0]
    assert combined_score(values, reference, [], []).tolist() == [0.0]
