from __future__ import annotations

import dataclasses
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from sae_lens import SAE
from sae_lens.registry import get_sae_training_class

from feature_store import transcripts as transcripts_module
from feature_store.activations import ActivationStore, ActivationWriter
from feature_store.schema import ROLE_CODE
from feature_store.transcripts import Transcript
from sae_atlas.config import HarvestConfig, TrainConfig
from sae_atlas.errors import SaeAtlasError
from sae_atlas.sae import ARCHITECTURES, load_sae
from sae_atlas.stages.evaluate import evaluate_sae, heldout_transcripts
from sae_atlas.stages.harvest import harvest
from sae_atlas.stages.train import train_saes
from sae_atlas.testing import random_transcripts, tiny_handle

HOOK = "blocks.0.hook_resid_post"


def planted_activations(
    n_rows: int, d_model: int, n_features: int, firing: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """acts [n_rows, d_model]: sums of sparse planted unit directions [n_features, d_model]."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(n_features, d_model))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    fires = rng.random((n_rows, n_features)) < firing
    magnitudes = rng.uniform(1, 2, size=(n_rows, n_features))
    return (fires * magnitudes) @ directions, directions


def write_store(path, acts: np.ndarray, doc_len: int = 50) -> None:
    """A store with one transcript per doc_len rows; every 10th transcript is held out."""
    writer = ActivationWriter.open(
        path, model="synthetic", hooks=[HOOK], d_model=acts.shape[1], config={"rows": len(acts)}
    )
    transcripts = []
    for index, start in enumerate(range(0, len(acts), doc_len)):
        n = min(doc_len, len(acts) - start)
        roles = np.full(n, ROLE_CODE["assistant"], dtype=np.uint8)
        roles[: n // 4] = ROLE_CODE["user"]
        split = "heldout" if index % 10 == 0 else "train"
        transcripts.append(Transcript(np.zeros(n, np.int32), roles, split=split))
    writer.append(transcripts, {HOOK: acts})
    writer.finish()
    writer.close()


def test_held_out_transcripts_do_not_depend_on_the_read_block(tmp_path, monkeypatch):
    transcripts = [
        dataclasses.replace(t, seed=i, split="heldout" if i % 3 else "train")
        for i, t in enumerate(random_transcripts(30))
    ]
    n = sum(len(t) for t in transcripts)
    writer = ActivationWriter.open(tmp_path / "a.h5", model="m", hooks=[HOOK], d_model=4, config={})
    writer.append(transcripts, {HOOK: np.zeros((n, 4), dtype=np.float16)})
    writer.finish()
    store = ActivationStore(tmp_path / "a.h5")
    heldout = store.token_mask(splits=["heldout"])
    chosen = heldout_transcripts(store, heldout, 5, seed=1)
    seeds = [t.seed for t in chosen]
    assert len(seeds) == 5 and seeds == sorted(seeds) and all(s % 3 for s in seeds)
    for t in chosen:
        np.testing.assert_array_equal(t.token_ids, transcripts[t.seed].token_ids)
    monkeypatch.setattr(transcripts_module, "READ_ROWS", 5)
    assert [t.seed for t in heldout_transcripts(store, heldout, 5, seed=1)] == seeds


def small(**overrides) -> TrainConfig:
    base = TrainConfig(
        width=128,
        k=4,
        batch_size=256,
        training_tokens=400_000,
        lr=3e-3,
        checkpoint_every=10**9,
        skip_positions=0,  # synthetic rows have no attention sink at position 0
        dtype="float32",  # the same result on every CPU (auto: bfloat16 autocast where fast)
    )
    return replace(base, **overrides)


def test_planted_directions_are_recovered(tmp_path):
    acts, directions = planted_activations(40_000, 32, 64, firing=0.05)
    write_store(tmp_path / "a.h5", acts)
    [result] = train_saes(tmp_path / "a.h5", tmp_path / "sae", small())
    sae = SAE.load_from_disk(result.path)
    decoder = sae.W_dec.detach().numpy()
    decoder /= np.linalg.norm(decoder, axis=1, keepdims=True)
    best_cosine = (directions @ decoder.T).max(axis=1)
    assert (best_cosine >= 0.9).mean() >= 0.8
    assert result.n_steps == 400_000 // 256 and result.n_tokens == result.n_steps * 256
    card = json.loads((result.path / "training_card.json").read_text())
    assert card["data"]["mask"]["splits"] == ["train"]
    assert card["data"]["candidate_tokens"] == 36_000  # the held-out tenth is not trained on
    assert card["metrics"]["explained_variance"] > 0.8
    assert {"sae-lens", "torch", "sae_atlas"} <= set(card["versions"])
    assert not (result.path / "checkpoints").exists()
    evaluation = evaluate_sae(None, sae, ActivationStore(tmp_path / "a.h5"), HOOK)
    assert 0.8 < evaluation["activations"]["explained_variance"] <= 1
    assert evaluation["activations"]["n_tokens"] == 4_000


def test_interrupted_training_resumes_to_the_same_step(tmp_path):
    acts, _ = planted_activations(20_000, 32, 64, firing=0.05)
    write_store(tmp_path / "a.h5", acts)
    config = small(training_tokens=256 * 600, checkpoint_every=200)

    done: list[int] = []

    def interrupt(n_steps: int) -> None:
        done.append(n_steps)
        if sum(done) == 350:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_saes(tmp_path / "a.h5", tmp_path / "resumed", config, progress=interrupt)
    checkpoints = sorted(p.name for p in (tmp_path / "resumed" / HOOK / "checkpoints").iterdir())
    assert checkpoints == ["step_000000350"]  # the Ctrl-C one replaced the one at step 200
    assert not (tmp_path / "resumed" / HOOK / "training_card.json").exists()
    steps: list[int] = []
    [resumed] = train_saes(tmp_path / "a.h5", tmp_path / "resumed", config, progress=steps.append)
    [straight] = train_saes(tmp_path / "a.h5", tmp_path / "straight", config)
    assert steps[:2] == [350, 1]  # the steps done before, once, then one call per step
    assert sum(steps) == resumed.n_steps == straight.n_steps == 600
    assert resumed.card["metrics"]["resumed_from_step"] == 350
    resumed_loss = resumed.card["metrics"]["final_loss"]
    straight_loss = straight.card["metrics"]["final_loss"]
    assert 0.67 < resumed_loss / straight_loss < 1.5

    again = train_saes(tmp_path / "a.h5", tmp_path / "resumed", config)
    assert again[0].skipped and again[0].n_steps == 600
    with pytest.raises(SaeAtlasError, match="other inputs or another config"):
        train_saes(tmp_path / "a.h5", tmp_path / "resumed", replace(config, k=5))


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_each_architecture_trains_and_loads(tmp_path, architecture):
    acts, _ = planted_activations(2_000, 16, 32, firing=0.1)
    write_store(tmp_path / "a.h5", acts)
    config = small(architecture=architecture, width=32, batch_size=64, training_tokens=64 * 5)
    [result] = train_saes(tmp_path / "a.h5", tmp_path / "sae", config)
    assert result.n_steps == 5
    assert {"sae_weights.safetensors", "cfg.json", "training_card.json"} <= {
        p.name for p in result.path.iterdir()
    }
    sae = load_sae(result.path)
    assert sae.cfg.d_sae == 32 and sae.cfg.metadata.hook_name == HOOK
    reconstruction = sae.decode(sae.encode(torch.from_numpy(acts[:8]).float()))
    assert reconstruction.shape == (8, 16) and torch.isfinite(reconstruction).all()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_dtype_reaches_the_training_step(tmp_path, monkeypatch, dtype):
    acts, _ = planted_activations(2_000, 16, 32, firing=0.1)
    write_store(tmp_path / "a.h5", acts)
    sae_class = get_sae_training_class("batchtopk")[0]
    forward = sae_class.training_forward_pass
    seen = []

    def spy(self, step_input):
        sae_in = step_input.sae_in
        autocast = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu")
        seen.append((autocast, sae_in.dtype, sae_in.device.type, self.W_enc.dtype))
        return forward(self, step_input)

    monkeypatch.setattr(sae_class, "training_forward_pass", spy)
    config = small(width=32, batch_size=64, training_tokens=64 * 5, dtype=dtype)
    [result] = train_saes(tmp_path / "a.h5", tmp_path / "sae", config)
    autocast = torch.bfloat16 if dtype == "bfloat16" else False
    assert seen == [(autocast, torch.float32, "cpu", torch.float32)] * 5
    assert result.card["config"]["dtype"] == dtype
    with pytest.raises(SaeAtlasError, match="unknown train dtype"):
        train_saes(tmp_path / "a.h5", tmp_path / "x", replace(config, dtype="float16"))


def test_bad_settings_are_one_line_errors(tmp_path):
    acts, _ = planted_activations(2_000, 16, 32, firing=0.1)
    write_store(tmp_path / "a.h5", acts)
    with pytest.raises(SaeAtlasError, match="batchtopk, topk, jumprelu, matryoshka_batchtopk"):
        train_saes(tmp_path / "a.h5", tmp_path / "sae", small(architecture="gated"))
    with pytest.raises(SaeAtlasError, match=r"no activations at 'blocks\.9\.hook_resid_post'"):
        train_saes(tmp_path / "a.h5", tmp_path / "sae", small(hooks=("blocks.9.hook_resid_post",)))
    with pytest.raises(SaeAtlasError, match="only 0 tokens match"):
        train_saes(tmp_path / "a.h5", tmp_path / "sae", small(roles=("system",)))
    with pytest.raises(SaeAtlasError, match="no such activation store"):
        train_saes(tmp_path / "missing.h5", tmp_path / "sae", small())
    assert not (tmp_path / "sae").exists()


def copying_model():
    """A tiny model whose logits read the current token back from the residual stream, so that
    ablating the residual stream costs loss on transcripts that repeat one token."""
    handle = tiny_handle(seed=1)
    model = handle.hf_model
    with torch.no_grad():
        model.lm_head.weight.copy_(model.model.embed_tokens.weight * 30)
    return handle


def repeated_token_transcripts(n: int, seed: int = 0) -> list[Transcript]:
    rng = np.random.default_rng(seed)
    transcripts = []
    for i in range(n):
        length = int(rng.integers(16, 48))
        roles = np.full(length, ROLE_CODE["assistant"], dtype=np.uint8)
        roles[: length // 3] = ROLE_CODE["user"]
        token = np.full(length, rng.integers(5, 17), dtype=np.int32)
        transcripts.append(Transcript(token, roles, split="train" if i % 4 else "heldout"))
    return transcripts


def test_evaluation_on_the_tiny_model(tmp_path):
    hook = "blocks.1.hook_resid_post"
    model = copying_model()
    store = tmp_path / "a.h5"
    harvest(repeated_token_transcripts(80), store, HarvestConfig(hooks=(hook,)), handle=model)
    config = small(width=64, batch_size=64, training_tokens=64 * 200, eval_transcripts=8)
    tokens = torch.from_numpy(random_transcripts(1, seed=5)[0].token_ids).long()[None]
    with torch.inference_mode():
        before = model.bridge(tokens)
    [result] = train_saes(store, tmp_path / "sae", config, handle=model)
    with torch.inference_mode():
        after = model.bridge(tokens)
    torch.testing.assert_close(before, after, rtol=0, atol=0)  # the splice hook is gone

    evaluation = json.loads((result.path / "eval.json").read_text())
    assert evaluation == result.card["evaluation"]
    activations = evaluation["activations"]
    assert activations["explained_variance"] <= 1 and activations["l0"] > 0
    assert 0 <= activations["dead_fraction"] <= 1 and 0 <= activations["dense_fraction"] <= 1
    assert set(activations["by_role"]) == {"system", "user", "assistant", "template"}
    assert activations["by_role"]["system"]["n_tokens"] == 0
    spliced = evaluation["spliced"]
    assert spliced["n_transcripts"] == 8
    assert spliced["ce_zero"] > spliced["ce_clean"] + 1 and spliced["kl_zero"] > 1
    assert 0.8 < spliced["ce_recovered_zero"] <= 1.1 and np.isfinite(spliced["ce_recovered_mean"])
    assert set(spliced["by_role"]) == {"system", "user", "assistant", "template"}
    for role in ("user", "assistant"):
        assert spliced["by_role"][role]["n_predictions"] > 0
        assert np.isfinite(spliced["by_role"][role]["ce_recovered_zero"])
    assert spliced["by_role"]["template"]["ce_recovered_zero"] is None

    again = train_saes(store, tmp_path / "sae", replace(config, eval_transcripts=4))
    assert again[0].skipped and again[0].card["evaluation"]["spliced"]["n_transcripts"] == 8
    [reevaluated] = train_saes(
        store, tmp_path / "sae", replace(config, eval_transcripts=4), handle=model
    )
    assert reevaluated.skipped and reevaluated.card["evaluation"]["spliced"]["n_transcripts"] == 4
