from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from test_build import tiny_config

from feature_store.atlas import Atlas
from sae_atlas.build import build, run_paths
from sae_atlas.config import to_dict
from sae_atlas.errors import SaeAtlasError
from sae_atlas.stages.dynamics import (
    MARKERS,
    marker_hits,
    paired_rates,
    run_dynamics,
)
from sae_atlas.testing import tiny_handle

TINY = tiny_config().dynamics


def run_files(out):
    """What run_dynamics reads in the run folder `out`: transcripts, SAE folder, atlas."""
    paths = run_paths(out)
    return paths["corpus"], paths["train"], paths["dynamics"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    handle = tiny_handle()
    out = tmp_path_factory.mktemp("run")
    build(tiny_config(), out, handle=handle)
    return handle, out


def test_run_dynamics_names_the_missing_inputs_before_any_work(tmp_path):
    with pytest.raises(SaeAtlasError, match=r"transcripts\.h5, .*sae missing"):
        run_dynamics(
            tmp_path / "transcripts.h5", tmp_path / "sae", tmp_path / "atlas.h5", TINY, handle=None
        )


def test_build_writes_dynamics_and_run_dynamics_leaves_the_model_unchanged(tiny_run):
    handle, out = tiny_run
    with Atlas.open(out / "atlas.h5") as atlas:  # written by the build's dynamics stage
        names = atlas.dynamics_names()
        for name in (
            "trajectories",
            "regions",
            "transition_matrix",
            "flow",
            "transitions",
            "return_to_assistant",
            "basins",
            "resolution",
            "turn_centroids",
            "drift",
            "drift_baseline",
            "drift_by_start",
            "kick",
            "steering",
            "markers",
            "trigger_scan",
            "summary",
        ):
            assert name in names
        matrix = atlas.dynamics("transition_matrix")
        known = np.isfinite(matrix).all(1)  # a row without an observed exit is NaN, not P = 1
        np.testing.assert_allclose(matrix[known].sum(1), 1.0)
        trajectories = atlas.dynamics("trajectories")
        # persona_prompt and persona_once: 3 starts x 2 seeds; 1 scene x 2; 4 openers x 2
        assert trajectories.groupby("experiment").size().to_dict() == {
            "persona_prompt": 6 * TINY.n_turns,
            "persona_once": 6 * TINY.n_turns,
            "scene": 2 * TINY.n_turns,
            "self_talk": 8 * TINY.n_turns,
        }
        assert set(atlas.dynamics("steering")["target"]) >= {"all"}
        flow = atlas.dynamics("flow")
        assert set(flow["experiment"]) == set(trajectories["experiment"])
        assert flow["gain_q"].dropna().between(0, 1).all() and flow["attractor"].dtype == bool
        back = atlas.dynamics("return_to_assistant")
        assert set(back["lag"]) == set(range(1, TINY.n_turns))
        resolution = atlas.dynamics("resolution")
        assert set(resolution["method"]) == {"multi_turn", "single_turn"}
        assert atlas.dynamics("turn_centroids").shape[0] == TINY.n_turns
        by_start = atlas.dynamics("drift_by_start")
        default = by_start[(by_start["curve"] == "baseline") & (by_start["start"] == "assistant")]
        np.testing.assert_allclose(default["mean"], 0.0)  # the baseline minus itself
        assert len(default) == TINY.n_turns
        baseline = atlas.dynamics("drift_baseline")
        n_categories = trajectories["group"].nunique()  # default, scene and the others'
        assert len(baseline) == len(atlas.dynamics("drift")) == n_categories * TINY.n_turns
    again = run_dynamics(*run_files(out), TINY, handle=handle)
    assert again.skipped and again.summary["config"] == to_dict(TINY)
    with pytest.raises(SaeAtlasError, match="another model or config"):
        run_dynamics(*run_files(out), dataclasses.replace(TINY, seeds=1), handle=handle)
    tokens = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.inference_mode():
        before = handle.hf_model(tokens).logits
    steps: list[str] = []
    other = dataclasses.replace(TINY, seeds=1, n_scenes=0)
    result = run_dynamics(
        *run_files(out), other, handle=handle, progress=steps.append, overwrite=True
    )
    assert not result.skipped and result.summary["config"]["seeds"] == 1
    assert steps == ["rollouts", "classifier", "steering", "markers", "triggers", "write"]
    with torch.inference_mode():
        torch.testing.assert_close(handle.hf_model(tokens).logits, before)  # hooks are gone


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


def test_marker_ablation_pairs_responses_with_and_without(tiny_run):
    from sae_atlas.sae import load_sae
    from sae_atlas.stages.dynamics import marker_ablation, persona_map, question_bank

    handle, out = tiny_run
    hook = "blocks.1.hook_resid_post"
    with Atlas.open(out / "atlas.h5") as atlas:
        pmap = persona_map(atlas)
    bank = question_bank(out / "transcripts.h5", 0)
    sae = load_sae(out / "sae" / hook)
    starts = ["assistant", "pirate"]
    means = np.full(sae.cfg.d_sae, 0.5, dtype=np.float32)
    rates = marker_ablation(handle, pmap, sae, hook, [0, 1, 2], starts, bank, TINY, means=means)
    assert rates["marker"].tolist() == [*MARKERS, "any"] * 2
    assert rates["ablation"].tolist() == ["zero"] * 8 + ["mean"] * 8
    assert (rates["n"] == 2 * TINY.n_prompts).all()
    assert rates[["rate_off", "rate_on"]].apply(lambda c: c.between(0, 1)).all().all()
    zero, mean = rates.iloc[:8], rates.iloc[8:]  # both against the same unablated responses
    np.testing.assert_array_equal(zero["rate_off"], mean["rate_off"])
    for block in (zero, mean):
        any_row = block[block["marker"] == "any"].iloc[0]
        assert any_row["rate_on"] >= block["rate_on"].iloc[:-1].max()
