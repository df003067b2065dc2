from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from test_build import tiny_config
from tiny import tiny_handle

from feature_store.atlas import Atlas
from sae_atlas.build import build
from sae_atlas.config import DynamicsConfig
from sae_atlas.dynamics import (
    MARKERS,
    bootstrap_ci,
    converse,
    marker_hits,
    paired_rates,
    run_dynamics,
)
from sae_atlas.errors import SaeAtlasError

TINY = DynamicsConfig(
    n_personas=3,
    seeds=2,
    n_turns=2,
    n_scenes=1,
    max_new_tokens=4,
    n_steer=1,
    n_prompts=2,
    wrappers=("pirate_tag", "bullets"),
    n_bootstrap=200,
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    handle = tiny_handle()
    out = tmp_path_factory.mktemp("run")
    build(tiny_config(), out, handle=handle)
    return handle, out


def test_run_dynamics_writes_dynamics_and_leaves_the_model_unchanged(tiny_run):
    handle, out = tiny_run
    tokens = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.inference_mode():
        before = handle.hf_model(tokens).logits
    steps = []
    result = run_dynamics(handle, out, TINY, progress=steps.append)
    assert not result.skipped
    assert steps == ["rollouts", "classifier", "steering", "markers", "triggers", "write"]
    with Atlas.open(out / "atlas.h5") as atlas:
        names = atlas.dynamics_names()
        for name in (
            "trajectories",
            "regions",
            "transition_matrix",
            "attractors",
            "drift",
            "kick",
            "steering",
            "markers",
            "trigger_scan",
            "summary",
        ):
            assert name in names
        matrix = atlas.dynamics("transition_matrix")
        np.testing.assert_allclose(matrix.sum(1), 1.0)
        trajectories = atlas.dynamics("trajectories")
        assert len(trajectories) == (3 * 2 + 1 * 2) * 2
        assert set(atlas.dynamics("steering")["target"]) >= {"all"}
    with torch.inference_mode():
        torch.testing.assert_close(handle.hf_model(tokens).logits, before)  # hooks are gone
    again = run_dynamics(handle, out, TINY)
    assert again.skipped and again.summary["config"] == result.summary["config"]
    with pytest.raises(SaeAtlasError, match="another model or config"):
        run_dynamics(handle, out, dataclasses.replace(TINY, seeds=1))


def test_bootstrap_ci_on_known_cases():
    mean, low, high = bootstrap_ci(np.full(10, 3.0))
    assert mean == low == high == 3.0
    values = np.random.default_rng(0).normal(1.0, 2.0, 400)
    mean, low, high = bootstrap_ci(values, n_bootstrap=4000)
    half_width = 1.96 * values.std(ddof=1) / np.sqrt(len(values))
    assert mean == pytest.approx(values.mean())
    assert high - mean == pytest.approx(half_width, rel=0.15)
    assert mean - low == pytest.approx(half_width, rel=0.15)
    assert all(np.isnan(bootstrap_ci(np.array([np.nan]))))


def test_markers_and_paired_rates():
    texts = [
        "As an AI, I'd be happy to help!",
        "Arr, the sea be rough.",
        "Sorry, here are some ideas:\n- sleep\n- walk",
    ]
    hits = marker_hits(texts)
    assert hits.loc[0, ["ai_identity", "happy_to_help"]].all()
    assert not hits.loc[1].any()
    assert hits.loc[2, ["apology", "bullet_list", "second_person_advice"]].all()
    rates = paired_rates(hits, marker_hits(["Arr."] * 3), 200, 0).set_index("marker")
    assert rates.loc["ai_identity", "rate_off"] == pytest.approx(1 / 3)
    assert rates.loc["ai_identity", "diff"] == pytest.approx(-1 / 3)
    assert rates.loc["ai_identity", "ci_low"] <= -1 / 3 <= rates.loc["ai_identity", "ci_high"]


def test_converse_steers_only_the_kicked_turn_and_pairs_seeds(tiny):
    from sae_atlas.steer import add_direction

    config = dataclasses.replace(TINY, max_new_tokens=6, temperature=0.0)
    kick = (add_direction("blocks.1.hook_resid_post", np.ones(tiny.d_model), 50.0),)
    heads = [[], []]
    turns = [["Hello there", "What is the capital of France?"]] * 2
    chats = converse(tiny, heads, turns, [1, 1], 2, config, [(), kick])
    plain = converse(tiny, heads[:1], turns[:1], [1], 2, config)
    assert chats[0] == plain[0]  # same seed, no kick: the same conversation
    assert chats[1][1]["content"] != chats[0][1]["content"]  # the kick changes turn 0
    with pytest.raises(SaeAtlasError, match="user turns"):
        converse(tiny, heads, [["Hi"]] * 2, [1, 1], 2, config)
    playing = dataclasses.replace(config, model_plays_user=True)
    written = converse(tiny, heads, [["Hi"]] * 2, [1, 1], 2, playing)
    assert [m["role"] for m in written[0]] == ["user", "assistant"] * 2


def test_steered_plain_model_matches_the_bridge_and_is_removed(tiny):
    from sae_atlas.corpus import sampling_model
    from sae_atlas.dynamics import steered
    from sae_atlas.steer import add_direction, intervene

    model = sampling_model(tiny, "float32")
    tokens = torch.tensor([[5, 6, 7, 8, 9]])
    kick = [add_direction("blocks.1.hook_resid_post", np.ones(tiny.d_model), 5.0)]
    with torch.inference_mode():
        before = model(tokens).logits
        with steered(tiny, model, kick):
            after = model(tokens).logits
        with intervene(tiny, kick):
            bridged = tiny.hf_model(tokens).logits
        torch.testing.assert_close(model(tokens).logits, before)
    assert not torch.allclose(after, before)
    torch.testing.assert_close(after, bridged, atol=1e-4, rtol=1e-4)


def test_marker_ablation_pairs_responses_with_and_without(tiny_run):
    from sae_atlas.dynamics import marker_ablation, persona_map, question_bank
    from sae_atlas.train import load_sae

    handle, out = tiny_run
    hook = "blocks.1.hook_resid_post"
    with Atlas.open(out / "atlas.h5") as atlas:
        pmap = persona_map(atlas)
    bank = question_bank(out / "transcripts.h5", 0)
    sae = load_sae(out / "sae" / hook)
    rates = marker_ablation(handle, pmap, sae, hook, [0, 1, 2], ["assistant", "pirate"], bank, TINY)
    assert rates["marker"].tolist() == list(MARKERS)
    assert (rates["n"] == 2 * TINY.n_prompts).all()
    assert rates[["rate_off", "rate_on"]].apply(lambda c: c.between(0, 1)).all().all()
