"""The layer sweep on the tiny random model and a synthetic corpus: one harvest for every layer,
one SAE per layer and a wider one, each beside the residual probe (sae_atlas.stages.label.sweep)."""

from __future__ import annotations

import json

from feature_store.activations import ActivationStore
from feature_store.atlas import Atlas
from sae_atlas.config import HarvestConfig, LabelConfig, TrainConfig
from sae_atlas.model import resid_hook
from sae_atlas.stages.label.sweep import SweepConfig, SweepInputs, run_sweep, target_verdict
from sae_atlas.stages.label.sweep_records import (
    SWEEP_COLUMNS,
    SWEEP_DESCRIPTIONS,
    sweep_summary,
    sweep_tables,
)
from sae_atlas.stages.record import record_results
from sae_atlas.testing import synthetic_atlas, synthetic_corpus, write_atlas

TRAIN = TrainConfig(
    architecture="topk",
    width=48,
    k=4,
    training_tokens=1024,
    batch_size=256,
    eval_tokens=256,
    eval_transcripts=0,
    dtype="float32",
)


def test_sweep_trains_one_sae_per_layer_from_one_harvest(tmp_path, tiny):
    corpus = tmp_path / "transcripts.h5"
    synthetic_corpus(
        corpus, tiny.model_id, n_tokens=3000, vocab=300, personas=4, response_tokens=(12, 30)
    )
    inputs = SweepInputs(
        transcripts=corpus,
        harvest=HarvestConfig(),
        train=TRAIN,
        label=LabelConfig(block_tokens=1024),
        catalogue=None,
        heldout_personas=("persona3",),
    )
    config = SweepConfig(
        layers=(1, 3), width_factor=2, width_layer=3, sparse_features=2, n_bootstrap=50
    )
    steps: list[str] = []
    result = run_sweep(inputs, tmp_path / "sweep", config, handle=tiny, progress=steps.append)
    store = ActivationStore(tmp_path / "sweep" / "activations.h5")
    assert set(store.hooks) == {resid_hook(1), resid_hook(3)}
    assert steps[0] == "harvest" and steps.count("harvest") == 1
    assert [(r["layer"], r["width"]) for r in result["rows"]] == [(1, 48), (3, 48), (3, 96)]
    assert (tmp_path / "sweep" / "sae_1024_x2" / resid_hook(3) / "cfg.json").is_file()
    for row in result["rows"]:
        assert row["train_tokens"] >= TRAIN.training_tokens
        assert 0 <= row["dead_fraction"] <= 1 and row["l0"] <= TRAIN.k
        assert row["shares"]["response_probe"]["n_personas"] == 3
        assert {"mean_sparse2", "max_sparse2"} <= set(row["comparisons"])
        assert all("mcnemar_q" in c for c in row["comparisons"].values())
    table = result["per_persona"]["layer 1 width 48"]
    assert table["persona3"]["heldout_persona"] and not table["persona1"]["heldout_persona"]
    assert isinstance(result["target"]["met"], bool)
    assert set(result["seconds"]["cpu_steps"]) == set(result["seconds"]["steps"])
    json.dumps(result)  # JSON-ready as it is
    atlas = write_atlas(tmp_path / "atlas.h5", synthetic_atlas(64, 16, 4, 2, 0))
    record_results(atlas, "layer_sweep", sweep_tables(result), sweep_summary(result),
                   descriptions=SWEEP_DESCRIPTIONS, columns=SWEEP_COLUMNS, script="test",
                   config=result["config"], seconds=0.0)  # fmt: skip
    with Atlas.open(atlas) as reader:  # every table and column is described, or it is refused
        recorded = reader.experiment("layer_sweep")
        assert recorded.tables["saes"]["width"].tolist() == [48, 48, 96]
        assert len(recorded.tables["comparisons"]) == sum(
            len(row["comparisons"]) for row in result["rows"]
        )


def test_a_rerun_skips_what_is_done_and_scores_a_runs_own_saes(tmp_path, tiny):
    corpus = tmp_path / "transcripts.h5"
    synthetic_corpus(
        corpus, tiny.model_id, n_tokens=3000, vocab=300, personas=4, response_tokens=(12, 30)
    )
    inputs = SweepInputs(corpus, HarvestConfig(), TRAIN, LabelConfig(block_tokens=1024), None, ())
    config = SweepConfig(layers=(1, 2), train_layers=(2,), sparse_features=0, n_bootstrap=50)
    first = run_sweep(inputs, tmp_path / "sweep", config, handle=tiny)
    run = tmp_path / "run"  # a built run's layout: its store and sae/<hook>/
    run.mkdir()
    (run / "activations.h5").symlink_to(tmp_path / "sweep" / "activations.h5")
    (run / "sae").symlink_to(tmp_path / "sweep" / "sae_1024")
    again = run_sweep(inputs, tmp_path / "sweep", config, handle=tiny, reference=run)
    assert [r["variant"] for r in again["rows"]] == [
        "layer 2 width 48",
        "run SAE layer 2 width 48",
    ]
    assert again["rows"][0]["shares"] == first["rows"][0]["shares"]  # same SAE, same figures
    assert again["rows"][1]["shares"] == first["rows"][0]["shares"]
    assert again["seconds"]["steps"]["harvest"] < first["seconds"]["steps"]["harvest"]
    assert not any("sparse" in m for m in first["rows"][0]["comparisons"])


def comparison(feature: float, probe: float) -> dict[str, object]:
    return {
        "reference": "response_probe",
        "feature_share": feature,
        "probe_share": probe,
        "share_difference": feature - probe,
        "at_least_equal": feature >= probe,
    }


def test_the_target_needs_a_feature_share_at_least_the_probe_share_at_one_layer():
    header = {**comparison(1.0, 0.5), "reference": "header_probe"}
    rows = [
        {"variant": "a", "comparisons": {"mean_best_feature": comparison(0.3, 0.7)}},
        {"variant": "b", "comparisons": {"max_best_feature": comparison(0.6, 0.7), "h": header}},
    ]
    verdict = target_verdict(rows)
    assert not verdict["met"]  # the header's comparison does not count
    assert verdict["closest"]["variant"] == "b"
    rows[0]["comparisons"]["mean_best_feature"] = comparison(0.7, 0.7)
    assert target_verdict(rows)["met_by"] == [["a", "mean_best_feature"]]
