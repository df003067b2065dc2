from __future__ import annotations

import dataclasses
import json

import pytest

from feature_store.activations import ActivationStore
from feature_store.atlas import Atlas
from feature_store.labels import load_labels
from feature_store.transcripts import TranscriptStore
from sae_atlas.build import STAGES, build
from sae_atlas.config import (
    BuildConfig,
    CorpusConfig,
    DynamicsConfig,
    HarvestConfig,
    TrainConfig,
)
from sae_atlas.errors import SaeAtlasError
from sae_atlas.testing import tiny_handle


def tiny_config() -> BuildConfig:
    return BuildConfig(
        corpus=CorpusConfig(
            personas=("assistant", "pirate", "villain", "pirate_tag"),
            n_questions=3,
            variants=1,
            max_new_tokens=8,
            dtype="float32",
        ),
        harvest=HarvestConfig(hooks=("blocks.1.hook_resid_post",)),
        train=TrainConfig(
            width=64,
            k=4,
            training_tokens=4096,
            batch_size=256,
            eval_transcripts=2,
            eval_tokens=512,
            dtype="float32",
        ),
        dynamics=DynamicsConfig(
            n_personas=3,
            seeds=2,
            n_turns=2,
            n_scenes=1,
            max_new_tokens=4,
            n_steer=1,
            n_prompts=2,
            wrappers=("pirate_tag", "bullets"),
            n_bootstrap=200,
            dtype="bfloat16",  # float32 samples a NUL on this tiny model, which HDF5 text refuses
        ),
    )


def assert_runtime_recorded(run, summary):
    """build.json and every output say which dtype, device and threads each stage ran with."""
    dtypes = {stage: run["dtype"] for stage, run in summary["runtime"].items()}
    assert dtypes == {
        "corpus": "float32",
        "harvest": "float32",
        "train": "float32",
        "dynamics": "bfloat16",
    }
    assert all(run["device"] == "cpu" for run in summary["runtime"].values())
    assert summary["runtime"]["corpus"]["reason"] == "float32 requested"
    stores = {
        "corpus": TranscriptStore(run / "transcripts.h5").attrs,
        "harvest": ActivationStore(run / "activations.h5").attrs,
    }
    for stage, attrs in stores.items():
        assert json.loads(attrs["runtime"])[stage] == summary["runtime"][stage]
    card = json.loads(next((run / "sae").glob("*/training_card.json")).read_text())
    assert card["runtime"]["train"] == summary["runtime"]["train"]
    assert load_labels(run / "labels.h5").runtime["label"]["dtype"] == "float32"
    with Atlas.open(run / "atlas.h5") as atlas:
        runtime = json.loads(atlas.attrs["runtime"])
    assert list(runtime) == ["label", "organize", "dynamics"]
    assert runtime["dynamics"] == summary["runtime"]["dynamics"]


def test_build_runs_every_stage_then_skips_them(tmp_path):
    handle = tiny_handle()
    config = tiny_config()
    records = build(config, tmp_path, handle=handle)
    assert [r.stage for r in records] == list(STAGES)
    assert not any(r.skipped for r in records)
    assert all(r.bytes > 0 for r in records)
    summary = json.loads((tmp_path / "build.json").read_text())
    assert [s["stage"] for s in summary["stages"]] == list(STAGES)
    assert_runtime_recorded(tmp_path, summary)
    with Atlas.open(tmp_path / "atlas.h5") as atlas:  # dynamics/ written before the report
        assert "summary" in atlas.dynamics_names()
    report = (tmp_path / "report" / "report.md").read_text()
    assert "drift_baseline" in report and "Dynamics: not computed" not in report
    again = build(config, tmp_path, handle=handle)
    assert all(r.skipped for r in again if r.stage != "report")  # the report is re-rendered
    changed = dataclasses.replace(config, train=dataclasses.replace(config.train, k=8))
    with pytest.raises(SaeAtlasError):  # a finished stage is never overwritten by another config
        build(changed, tmp_path, handle=handle)
