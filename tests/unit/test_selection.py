from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from feature_store.schema import ROLE_CODE
from sae_atlas.config import CorpusConfig
from sae_atlas.model import message, sampling_model
from sae_atlas.stages.selection.decoding import crossfit_scores, decoding_aurocs
from sae_atlas.stages.selection.patching import paired_effects, selection_units
from sae_atlas.stages.selection.positions import header_length, position_index
from sae_atlas.stages.selection.relaxation import gap_curves, half_gap_length
from sae_atlas.stages.selection.runs import Patch, generate, tail_residuals
from sae_atlas.testing import tiny_handle

S, U, T, A = (ROLE_CODE[r] for r in ("system", "user", "template", "assistant"))


def test_position_classes_gather_spans_header_and_response_tokens():
    roles = np.array([T, S, S, T, U, U, U, T, T])  # 2 header tokens after the user's
    assert header_length(roles) == 2
    index = position_index(2, 3)
    assert index.names == [
        "system",
        "user",
        "header_0",
        "header_1",
        *[f"response_{t}" for t in (1, 2, 3)],
    ]
    acts = np.arange(11, dtype=np.float32)[:, None].repeat(2, 1)  # prompt 9 + 2 new tokens
    out = index.gather(acts, roles, 9, 2)
    np.testing.assert_allclose(out[:, 0], [1.5, 5.0, 7, 8, 9, 10, np.nan])


def grid(n_personas: int, n_variants: int, n_questions: int) -> pd.DataFrame:
    rows = [
        {"persona": f"p{p}", "is_default": p == 0, "variant": v, "question": q, "seed": q * 10 + v}
        for p in range(n_personas)
        for v in range(n_variants)
        for q in range(n_questions)
    ]
    return pd.DataFrame(rows)


def test_crossfit_decodes_a_persona_signal_but_not_a_prompt_signal():
    rng = np.random.default_rng(0)
    table = grid(3, 5, 8)
    labels = table["persona"].str[1:].astype(int).to_numpy()
    variant, question = table["variant"].to_numpy(), table["question"].to_numpy()
    noise = rng.normal(size=(len(table), 2, 20))
    persona_signal = np.eye(20)[labels] * 3  # position 0: the persona, whatever the prompt
    prompt_signal = np.eye(20)[labels * 5 + variant] * 3  # position 1: each prompt its own
    features = noise + np.stack([persona_signal, prompt_signal], 1)
    scores = crossfit_scores(features, labels, variant, question)
    point, boot = decoding_aurocs(scores, labels, question, 200, 0)
    assert (point[:, 0] > 0.95).all()  # generalises to held-out variants and questions
    assert (np.abs(point[:, 1] - 0.5) < 0.15).all()  # separating prompts does not
    assert boot.shape == (200, 3, 2)


def test_paired_effects_find_the_header_effect_and_not_the_control():
    table = grid(3, 2, 10)
    units = selection_units(table, seed=0)
    rng = np.random.default_rng(1)
    n = len(units.run)
    base = {"default": rng.normal(0, 0.1, n), "persona": 1 + rng.normal(0, 0.1, n)}
    scores = {
        **base,
        "default+header:persona": base["default"] + 0.5,
        "default+user:persona": base["default"] + rng.normal(0, 0.1, n),
        "default+header:other": base["default"] + rng.normal(0, 0.1, n),
        "persona+header:default": base["persona"] - 0.5,
        "persona+user:default": base["persona"],
        "persona+header:other": base["persona"],
    }
    effects = paired_effects(scores, units, "classifier", 500, 0).set_index(
        ["kind", "condition", "persona"]
    )
    for control in ("user", "other"):
        for target in ("default", "persona"):
            row = effects.loc[(f"header_minus_{control}", target, "p1")]
            assert row["mean"] == pytest.approx(0.5, abs=0.1) and row["q_value"] < 0.05
    user = effects.loc[("effect", "default+user:persona", "p1")]
    assert user["ci_low"] < 0 < user["ci_high"]


def test_half_gap_length_and_censoring():
    curves = np.array([[1.0, 0.8, 0.5, 0.2], [1.0, 0.9, 0.8, 0.7], [-1.0, 0, 0, 0]])
    np.testing.assert_array_equal(half_gap_length(curves, window=1), [3, np.inf, np.nan])
    np.testing.assert_array_equal(half_gap_length(curves, window=2), [4, np.inf, np.nan])
    decay = np.tile(0.7 ** np.arange(12), (6, 1))
    ended = np.ones((6, 12))
    ended[:, 6:] = np.nan  # every response ended after 6 tokens: no gap there, not gap 0
    ended[0, 6:] = 0.01  # one long response alone at a small gap
    gaps = {"persona": decay, "flat": np.ones((6, 12)), "ended": ended}
    persona = np.array(["a", "a", "a", "b", "b", "b"])
    curves_table, lengths = gap_curves(gaps, persona, np.arange(6) % 3, 200, 0)
    lengths = lengths.set_index(["condition", "persona"])
    relaxed = lengths.loc[("persona", "all")]
    assert relaxed["half_gap_length"] == 6  # the 4-token mean over tokens 3-6 is under half
    assert relaxed["relaxation"] == "6 [6, 6]" and relaxed["censored"] == 0
    assert relaxed["retained"] == pytest.approx(0.7**8)
    assert relaxed["slope_high"] < 0 and relaxed["slope_q"] < 0.05
    for name in ("flat", "ended"):
        flat = lengths.loc[(name, "a")]
        assert np.isnan(flat["half_gap_length"]) and flat["length_censored"]
        assert flat["censored"] == 1 and flat["retained"] == 1 and flat["slope"] == 0
    assert lengths.loc[("flat", "a"), "relaxation"] == "> 12 [> 12, > 12]"
    assert lengths.loc[("ended", "all"), "relaxation"] == "> 6 [> 6, > 6]"
    assert len(curves_table) == 3 * 3 * 12
    assert (curves_table.loc[curves_table["condition"] == "ended", "n_running"].max()) == 6


def test_a_patch_with_the_runs_own_residuals_changes_nothing_and_another_does():
    handle = tiny_handle()
    model = sampling_model(handle, "float32")
    chats = [
        [message("system", "You are a pirate."), message("user", "How are you today?")],
        [message("system", "You are helpful."), message("user", "How are you today?")],
    ]
    ids = [
        handle.format_chat(c, add_generation_prompt=True).token_ids.astype(np.int64) for c in chats
    ]
    config = CorpusConfig(temperature=0.0, max_new_tokens=6, batch_size=2, dtype="float32")
    plain = generate(handle, model, ids, [1, 2], config)
    own = tail_residuals(model, ids, 1, 3, 0)
    same = generate(handle, model, ids, [1, 2], config, Patch(1, 3, 0, own))
    for a, b in zip(plain, same, strict=True):
        np.testing.assert_array_equal(a, b)
    swapped = generate(handle, model, ids, [1, 2], config, Patch(1, 3, 0, own[::-1] * 50))
    assert any(not np.array_equal(a, b) for a, b in zip(plain, swapped, strict=True))


def test_run_selection_on_a_tiny_run_records_an_experiment_and_its_figures(tmp_path):
    from test_build import tiny_config

    from feature_store.atlas import Atlas
    from sae_atlas.build import build
    from sae_atlas.stages.record import record_results
    from sae_atlas.stages.selection import SelectionConfig, run_selection
    from sae_atlas.stages.selection.figures import (
        patching_figure,
        position_curve_figure,
        relaxation_figure,
        return_figure,
    )
    from sae_atlas.stages.selection.tables import COLUMNS, DESCRIPTIONS, selection_summary

    handle = tiny_handle()
    build(tiny_config(), tmp_path, handle=handle)
    config = SelectionConfig(n_personas=2, n_variants=3, n_questions=4, max_new_tokens=5,
                             n_bootstrap=50, dtype="bfloat16")  # fmt: skip
    result = run_selection(handle, tmp_path, config)
    assert result.personas == ["pirate", "villain"]
    n_runs = 3 * 3 * 4  # (2 personas + the default) x 3 variants x 4 questions
    responses = result.tables["responses"]
    assert (responses["condition"] == "none").sum() == n_runs
    assert len(responses) == n_runs + 6 * 2 * 3 * 4  # six patched conditions per persona unit
    summary = selection_summary(result, {})
    record_results(tmp_path / "atlas.h5", "selection", result.tables, summary,
                   descriptions=DESCRIPTIONS, columns=COLUMNS, script="test", config={},
                   seconds=1.0)  # fmt: skip
    with Atlas.open(tmp_path / "atlas.h5") as atlas:
        assert "selection" in atlas.experiments()
        selection = atlas.experiment("selection")
        assert list(selection.tables) == list(result.tables)
        assert selection.summary["personas"] == ["pirate", "villain"]
        tables = selection.tables
        for figure in (
            position_curve_figure(tables["decoding"]),
            patching_figure(tables["patching"]),
            relaxation_figure(tables["axis_gap"]),
            return_figure(atlas.dynamics("return_to_assistant")),
        ):
            assert figure.startswith(b"\x89PNG")
    unpatched = run_selection(handle, tmp_path, dataclasses.replace(config, patching=False))
    assert (unpatched.tables["responses"]["condition"] == "none").all()
    assert unpatched.tables["patching"].empty
    assert set(unpatched.tables["relaxation"]["condition"]) == {"persona"}
    assert selection_summary(unpatched, {})["effects"] == []
