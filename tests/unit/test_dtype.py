from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

from feature_store.transcripts import TranscriptStore
from sae_atlas.cli import app
from sae_atlas.config import CorpusConfig, HarvestConfig
from sae_atlas.errors import SaeAtlasError
from sae_atlas.model import dtype as dtype_module
from sae_atlas.model.dtype import (
    PROBE_FILE,
    MatmulRates,
    cpu_probe,
    matmul_rates,
    refuse_other_dtype,
    resolve_dtype,
)
from sae_atlas.personas import load_catalogue
from sae_atlas.stages.corpus import build_corpus
from sae_atlas.stages.harvest import harvest

FAST = MatmulRates(float32=100.0, bfloat16=400.0, shape=(256, 576, 576), device="cpu")
SLOW = MatmulRates(float32=100.0, bfloat16=2.0, shape=(256, 576, 576), device="cpu")
EVEN = MatmulRates(float32=100.0, bfloat16=110.0, shape=(256, 576, 576), device="cpu")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty probe cache, no in-process memo, and a counted fake measurement."""
    monkeypatch.setenv("SAE_ATLAS_CACHE_DIR", str(tmp_path / "cache"))
    for name in dtype_module.ISA_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    dtype_module._cached_probe.cache_clear()
    calls = []

    def fake_rates(device="cpu", shape=None, seconds=None, max_calls=None, threads=None):
        calls.append(threads)
        return FAST

    monkeypatch.setattr(dtype_module, "matmul_rates", fake_rates)
    yield calls
    dtype_module._cached_probe.cache_clear()


def probe_as(monkeypatch, rates: MatmulRates) -> None:
    monkeypatch.setattr(dtype_module, "cpu_probe", lambda: rates)


def test_explicit_dtype_wins_without_probing(monkeypatch):
    monkeypatch.setattr(dtype_module, "cpu_probe", lambda: pytest.fail("probed"))
    choice = resolve_dtype("float32", "cpu")
    assert (choice.name, choice.torch_dtype, choice.device) == ("float32", torch.float32, "cpu")
    assert choice.threads == torch.get_num_threads() and "requested" in choice.reason
    assert resolve_dtype("bfloat16", "cpu").torch_dtype == torch.bfloat16
    with pytest.raises(SaeAtlasError, match=r"unknown dtype 'int8'; use one of auto, float32"):
        resolve_dtype("int8", "cpu")


def test_auto_picks_bfloat16_only_where_measured_fast(monkeypatch):
    probe_as(monkeypatch, FAST)
    fast = resolve_dtype("auto", "cpu")
    assert fast.name == "bfloat16" and "4x float32" in fast.reason
    probe_as(monkeypatch, SLOW)
    assert resolve_dtype("auto", "cpu").name == "float32"
    probe_as(monkeypatch, EVEN)  # faster, but not by enough to pay for the precision
    assert resolve_dtype("auto", "cpu").name == "float32"
    assert resolve_dtype("auto", "cpu", probe=FAST).name == "bfloat16"
    assert resolve_dtype("auto", "mps").name == "float32"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_dtype("auto", "cuda:1").name == "bfloat16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_dtype("auto", "cuda").name == "float32"


def test_probe_is_measured_once_per_machine_key_and_survives_a_corrupt_cache(cache, monkeypatch):
    assert cpu_probe() == FAST and cache == [1]  # measured on one thread
    dtype_module._cached_probe.cache_clear()  # a new process: read back from the file
    assert cpu_probe() == FAST and len(cache) == 1
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # another kernel choice: measured again
    assert cpu_probe() == FAST and len(cache) == 2
    path = dtype_module.cache_dir() / PROBE_FILE
    assert len(json.loads(path.read_text())["probes"]) == 2
    path.write_text("{not json")
    dtype_module._cached_probe.cache_clear()
    assert cpu_probe() == FAST and len(cache) == 3
    assert len(json.loads(path.read_text())["probes"]) == 1  # rewritten


def test_matmul_rates_measures_both_dtypes_quickly():
    rates = matmul_rates(shape=(32, 64, 64), seconds=0.01, max_calls=3, threads=1)
    assert rates.shape == (32, 64, 64) and rates.device == "cpu"
    assert all(math.isfinite(r) and r > 0 for r in (rates.float32, rates.bfloat16))
    assert rates.bf16_speedup == rates.bfloat16 / rates.float32


def test_refusal_names_both_dtypes_and_the_fix():
    choice = resolve_dtype("float32", "cpu")
    refuse_other_dtype("x.h5", None, choice)
    refuse_other_dtype("x.h5", "float32", choice)
    with pytest.raises(SaeAtlasError) as error:
        refuse_other_dtype("x.h5", "bfloat16", choice)
    message = str(error.value)
    assert message.startswith("x.h5: was made in bfloat16, but this run uses float32")
    assert "pass --dtype bfloat16 to reuse it" in message and "\n" not in message


CORPUS = CorpusConfig(personas=("assistant",), n_questions=1, max_new_tokens=4, dtype="auto")


def test_corpus_made_where_auto_is_bfloat16_is_refused_where_it_is_float32(
    tiny, tmp_path, monkeypatch
):
    catalogue = load_catalogue()
    out = tmp_path / "transcripts.h5"
    probe_as(monkeypatch, FAST)
    made = build_corpus(catalogue, out, CORPUS, handle=tiny)
    store = TranscriptStore(out)
    assert store.config["dtype"] == "bfloat16" and store.attrs["sampled_dtype"] == "bfloat16"
    runtime = json.loads(store.attrs["runtime"])["corpus"]
    assert runtime["dtype"] == "bfloat16" and runtime["reason"].startswith("auto: bfloat16")
    probe_as(monkeypatch, SLOW)  # the same folder on a CPU without fast bfloat16
    with pytest.raises(SaeAtlasError, match=r"was made in bfloat16, but this run uses float32"):
        build_corpus(catalogue, out, CORPUS, handle=tiny)
    again = build_corpus(catalogue, out, replace(CORPUS, dtype="bfloat16"), handle=tiny)
    assert again.skipped and again.n_transcripts == made.n_transcripts
    shown = CliRunner().invoke(app, ["info", str(out)])
    assert shown.exit_code == 0 and "corpus: bfloat16 on cpu, " in shown.output


def test_harvest_records_the_models_dtype_and_refuses_another(tiny, tmp_path, monkeypatch):
    catalogue = load_catalogue()
    transcripts = tmp_path / "transcripts.h5"
    build_corpus(catalogue, transcripts, replace(CORPUS, dtype="float32"), handle=tiny)
    store = TranscriptStore(transcripts)
    out = tmp_path / "activations.h5"
    harvest(store, out, HarvestConfig(hooks=("blocks.1.hook_resid_post",)), handle=tiny)
    monkeypatch.setattr(tiny, "dtype_choice", resolve_dtype("bfloat16", "cpu"))
    with pytest.raises(SaeAtlasError, match=r"was made in float32, but this run uses bfloat16"):
        harvest(store, out, HarvestConfig(hooks=("blocks.1.hook_resid_post",)), handle=tiny)
