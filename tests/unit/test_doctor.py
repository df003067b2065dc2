from __future__ import annotations

from dataclasses import replace

import pytest
from typer.testing import CliRunner

from sae_atlas.cli import app
from sae_atlas.config import load_config
from sae_atlas.doctor import (
    BF16_SPEEDUP,
    CALIBRATION_RATES,
    CALIBRATION_SECONDS,
    CPU_FEATURES,
    EFFICIENCY,
    LAYER_PARAMS,
    MODEL_PARAMS,
    RESPONSE_FILL,
    STAGES,
    checkup,
    estimate_stages,
    stage_gflop,
)
from sae_atlas.model.dtype import MatmulRates

AMX = MatmulRates(float32=170.0, bfloat16=1000.0, shape=(512, 576, 576), device="cpu")
AVX2 = MatmulRates(float32=100.0, bfloat16=1.5, shape=(512, 576, 576), device="cpu")


def test_checkup_predicts_each_stage_in_the_dtype_auto_picks(tmp_path):
    fast = checkup(tmp_path / "runs" / "quick", per_thread=AMX)
    assert fast.auto.name == "bfloat16" and fast.disk_path == str(tmp_path.resolve())
    assert [s.stage for s in fast.stages] == list(STAGES)
    assert set(fast.features) == set(CPU_FEATURES) and fast.devices[0] == "cpu"
    dtypes = {s.stage: s.dtype for s in fast.stages}
    assert dtypes["corpus"] == dtypes["train"] == dtypes["dynamics"] == "bfloat16"
    assert dtypes["label"] == dtypes["organize"] == "float32"
    slow = checkup(tmp_path, per_thread=AVX2)
    assert slow.auto.name == "float32" and {s.dtype for s in slow.stages} == {"float32"}
    seconds = {s.stage: s.seconds for s in slow.stages}
    for stage in fast.stages:  # float32 is 1.7x slower on AVX2's fake rates, bfloat16 is avoided
        ratio = seconds[stage.stage] / stage.seconds
        assert ratio == pytest.approx(1.7) if stage.dtype == "float32" else ratio > 1.7
    assert fast.total_seconds == pytest.approx(sum(s.seconds for s in fast.stages))


def test_stage_work_grows_with_the_sizes_that_drive_it():
    quick = load_config("quick")
    base = stage_gflop(quick)
    assert all(base[stage] > 0 for stage in STAGES)
    more_tokens = replace(quick, train=replace(quick.train, training_tokens=6_000_000))
    longer = replace(quick, corpus=replace(quick.corpus, max_new_tokens=128))
    deeper = replace(quick, harvest=replace(quick.harvest, hooks=("blocks.29.hook_resid_post",)))
    extra = 3 * 3_000_000 * 2 * (2 * 576 * 2304) / 1e9  # forward + backward, encoder + decoder
    assert stage_gflop(more_tokens)["train"] - base["train"] == pytest.approx(extra)
    more_sampled = 1376 * 64 * RESPONSE_FILL  # the quick corpus's 1,376 jobs, 64 more tokens
    assert stage_gflop(longer)["corpus"] - base["corpus"] == pytest.approx(
        2 * MODEL_PARAMS * more_sampled / 1e9
    )
    assert stage_gflop(longer)["harvest"] - base["harvest"] == pytest.approx(
        2 * 3 * more_sampled * 16 * LAYER_PARAMS / 1e9  # response, user and plain controls
    )
    assert stage_gflop(deeper)["harvest"] == pytest.approx(base["harvest"] * 30 / 16)
    assert stage_gflop(load_config("full"))["dynamics"] > base["dynamics"]


def test_efficiencies_reproduce_the_measurements_they_were_calibrated_on():
    gflop = stage_gflop(load_config("quick"))
    dtypes = {stage: dtype for stage, dtype in CALIBRATION_SECONDS}
    for estimate in estimate_stages(gflop, dtypes, CALIBRATION_RATES, 2):
        measured = CALIBRATION_SECONDS[estimate.stage, estimate.dtype]
        assert estimate.seconds == pytest.approx(measured, rel=0.01)
    rate_ratio = CALIBRATION_RATES.float32 / CALIBRATION_RATES.bfloat16
    for stage, speedup in BF16_SPEEDUP.items():
        ratio = EFFICIENCY[stage]["bfloat16"] / EFFICIENCY[stage]["float32"]
        assert ratio == pytest.approx(speedup * rate_ratio, rel=0.01)


def test_doctor_prints_one_screen(tmp_path):
    result = CliRunner().invoke(app, ["doctor", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for line in ("avx512_bf16", "GFLOP/s per thread", "dtype auto", "harvest", "total"):
        assert line in result.output
