from __future__ import annotations

import numpy as np
import pytest

from sae_atlas.errors import SaeAtlasError
from sae_atlas.triggers import (
    benjamini_hochberg,
    heldout_auroc,
    rank_wrappers,
    trigger_statistics,
    trigger_table,
)


def test_trigger_statistics_flags_a_planted_feature_and_nothing_on_a_clean_case():
    rng = np.random.default_rng(0)
    n, d_sae = 16, 200
    plain = rng.random((n, d_sae)) < 0.3
    clean = plain.copy()  # the wrapper changes nothing
    planted = plain.copy()
    planted[:, 7] = True  # fires under the wrapper on every prompt
    plain[:, 7] = False  # and never without it
    discovery = np.arange(n) < n // 2
    found = trigger_statistics(planted, plain, discovery, 0.5, 0.05)
    q_values = benjamini_hochberg(found["p_value"].to_numpy())
    assert found.loc[q_values <= 0.05, "feature"].tolist() == [7]
    none = trigger_statistics(clean, plain, discovery, 0.5, 0.05)
    assert not (benjamini_hochberg(none["p_value"].to_numpy()) <= 0.05).any()
    with pytest.raises(SaeAtlasError, match="discovery and held-out"):
        trigger_statistics(planted, plain, np.ones(n, bool), 0.5, 0.05)


def planted_scan(n_prompts: int = 16, seeds: int = 2, d_sae: int = 300, seed: int = 0):
    """Fires of a scan where wrapper "real" plants features 3 and 4 (on 90% of its responses,
    never without it), "format" plants feature 9 that also fires on 30% of plain responses,
    and the decoys change nothing; rows as `trigger_responses` orders them."""
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
    table = trigger_table(fires, wrapper_of, prompt_of, wrappers, 0.5, 0.05, 0.05)
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
    table = trigger_table(fires, wrapper_of, prompt_of, wrappers, 0.5, 0.05, 0.05)
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
