from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from sae_lens.saes import JumpReLUSAE, JumpReLUSAEConfig
from sklearn.metrics import adjusted_rand_score

from feature_store.atlas import Atlas
from feature_store.errors import StoreError
from feature_store.labels import Labels
from sae_atlas.config import OrganizeConfig
from sae_atlas.errors import SaeAtlasError
from sae_atlas.stages.organize import (
    FAMILIES,
    best_jaccard,
    by_size,
    check_config,
    cluster_kinds,
    cluster_label,
    cluster_rows,
    common_tokens,
    cosine_knn,
    embed,
    hdbscan_labels,
    organize,
    persona_space,
    stability,
    tag_families,
    unit_rows,
)

D_MODEL = 24
PERSONAS = ["assistant", "pirate", "villain", "poet", "robot", "cat"]
GROUP_TAGS = ["persona:pirate", "puppeteer", "roleplay", ""]
"""Tags of the planted decoder groups: group 3 is untagged (kind other)."""
GROUP_PERSONA = [1, 2, 3, 4]
"""The persona each group's features are selective for (rows of PERSONAS)."""
PER_GROUP, N_SCATTERED, N_DEAD = 40, 30, 6

FAST = OrganizeConfig(
    n_neighbors=10,
    cluster_dims=5,
    n_epochs=100,
    min_cluster_size=8,
    min_samples=3,
    stability_reruns=2,
    n_components=4,
    max_persona_clusters=4,
)


def planted_directions(
    rng: np.random.Generator, n_groups: int, per_group: int, n_scattered: int, d: int
) -> tuple[np.ndarray, np.ndarray]:
    """Decoder rows [n, d]: groups around random centres (cosine ~0.9 within a group) and
    scattered random rows; truth [n] is the group (-1: scattered)."""
    centres = rng.standard_normal((n_groups, d))
    truth = np.concatenate([np.repeat(np.arange(n_groups), per_group), -np.ones(n_scattered, int)])
    rows = rng.standard_normal((len(truth), d))
    grouped = truth >= 0
    rows[grouped] = centres[truth[grouped]] + 0.2 * rows[grouped]
    return rows.astype(np.float32), truth


def synthetic_sae(w_dec: np.ndarray) -> JumpReLUSAE:
    d_sae, d_model = w_dec.shape
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_model, d_sae=d_sae))
    with torch.no_grad():
        sae.W_dec.copy_(torch.from_numpy(w_dec))
        sae.W_enc.copy_(torch.from_numpy(w_dec.T.copy()))
    return sae


def planted_labels(seed: int = 0) -> tuple[Labels, JumpReLUSAE, np.ndarray]:
    """Labels and SAE with planted decoder groups (tagged GROUP_TAGS, selective for
    GROUP_PERSONA), scattered features, N_DEAD dead features, and persona vectors whose default
    sits far out along one axis. Returns labels, sae, truth [d_sae] (-1: scattered or dead)."""
    rng = np.random.default_rng(seed)
    w_dec, truth = planted_directions(rng, len(GROUP_TAGS), PER_GROUP, N_SCATTERED, D_MODEL)
    w_dec = np.concatenate([w_dec, rng.standard_normal((N_DEAD, D_MODEL)).astype(np.float32)])
    truth = np.concatenate([truth, -np.ones(N_DEAD, int)])
    d_sae, n_personas = len(truth), len(PERSONAS)
    tags = [GROUP_TAGS[g] if g >= 0 else "" for g in truth]
    for i in np.flatnonzero(truth < 0)[::5]:
        tags[i] = "assistant"
    density = rng.uniform(0.001, 0.05, d_sae)
    density[-N_DEAD:] = 0.0
    top_index = np.full((d_sae, 2), -1, dtype=np.int32)
    top_score = np.full((d_sae, 2), np.nan, dtype=np.float32)
    profiles = rng.random((n_personas, d_sae)).astype(np.float32) * 0.1
    for g, persona in enumerate(GROUP_PERSONA):
        members = truth == g
        top_index[members, 0], top_score[members, 0] = persona, 0.9
        profiles[persona, members] += 1.0
    profiles[:, -N_DEAD:] = 0.0
    features = pd.DataFrame(
        {
            "density": density,
            "mean_act": rng.random(d_sae),
            "max_act": rng.random(d_sae) * 5,
            "tags": tags,
            "label": [f"feature {i}" for i in range(d_sae)],
            "top_tokens": [
                f"g{g} | arr | t{i}" if g >= 0 else f"t{i} | x" for i, g in enumerate(truth)
            ],
            "pos_logits": ["up"] * d_sae,
            "neg_logits": ["down"] * d_sae,
            "heldout_auroc": np.where(np.array(tags) != "", 0.9, np.nan),
        }
    )
    examples = pd.DataFrame(
        {
            "feature": [0, 0, 50],
            "kind": ["top", "quantile", "top"],
            "rank": [0, 0, 0],
            "doc": [1, 2, 3],
            "pos": [4, 5, 6],
            "activation": [1.0, 0.5, 2.0],
            "context": ["a [[b]] c", "d [[e]]", "[[f]] g"],
        }
    )
    personas = pd.DataFrame(
        {
            "name": PERSONAS,
            "category": ["default", "fiction", "fiction", "art", "machine", "animal"],
            "prompts": ["[]"] + ['["You are it."]'] * (n_personas - 1),
            "n_responses": [10] * n_personas,
        }
    )
    vectors = rng.standard_normal((n_personas, D_MODEL)) * 0.3 + 5.0
    vectors[0] += 4.0 * unit_rows(rng.standard_normal((1, D_MODEL)))[0]
    labels = Labels(
        hook="blocks.1.hook_resid_post",
        model="tiny",
        features=features,
        top_persona_index=top_index,
        top_persona_score=top_score,
        examples=examples,
        personas=personas,
        persona_vectors=vectors.astype(np.float32),
        persona_profiles=profiles,
        default_persona="assistant",
        summary={"n_tagged": 3},
        config={"seed": 0},
    )
    return labels, synthetic_sae(w_dec), truth


def test_cosine_knn_is_exact_and_starts_with_itself():
    rng = np.random.default_rng(1)
    unit = unit_rows(rng.standard_normal((2500, 6)))
    indices, distances = cosine_knn(unit, 5)
    cosine = unit @ unit.T
    np.fill_diagonal(cosine, np.inf)
    expected = np.argsort(-cosine, axis=1)[:, :5]
    np.testing.assert_array_equal(indices[:, 0], np.arange(2500))
    np.testing.assert_array_equal(np.sort(indices, axis=1), np.sort(expected, axis=1))
    assert distances[:, 0].max() == 0 and (np.diff(distances, axis=1) >= 0).all()


def test_by_size_and_best_jaccard():
    np.testing.assert_array_equal(by_size(np.array([5, 2, 2, -1, 5, 2])), [1, 0, 0, -1, 1, 0])
    reference = np.array([0, 0, 0, 1, 1, -1])
    other = np.array([3, 3, -1, 0, 0, 0])
    # cluster 0 best matches other 3 ({0,1} vs {0,1,2}: 2/3); cluster 1 other 0 (2/3)
    np.testing.assert_allclose(best_jaccard(reference, other, 3), [2 / 3, 2 / 3, np.nan])


def test_planted_groups_are_recovered_and_stable():
    rng = np.random.default_rng(2)
    vectors, truth = planted_directions(rng, 4, PER_GROUP, N_SCATTERED, D_MODEL)
    labels = cluster_rows(vectors, FAST, seed=0)
    grouped = truth >= 0
    assert adjusted_rand_score(truth[grouped], labels[grouped]) > 0.9
    result = stability(vectors, labels, FAST)
    assert len(result.ari) == 2 and min(result.ari) > 0.8
    assert result.reappears.shape == (labels.max() + 1,)
    assert np.nanmin(result.reappears) == 1.0 and np.nanmin(result.best_jaccard) > 0.8


AVX2_ENV = {
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR AVX512F AVX512_SKX",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "ATEN_CPU_CAPABILITY": "avx2",
}
"""numpy's SIMD loops (names of numpy 2 and 1; unknown ones are ignored), oneDNN and ATen as
on a CPU without AVX-512."""
OTHER_CPU_CODE = """
import json, sys
import llvmlite.binding
llvmlite.binding.get_host_cpu_name = lambda: "znver4"
sys.path[:0] = {paths!r}
from test_organize import cpu_fingerprint
print(json.dumps(cpu_fingerprint()))
"""
"""Prints `cpu_fingerprint()` as computed where numba sees an AMD Zen 4 host."""


def cpu_fingerprint() -> dict[str, Any]:
    """Digests of the kNN graph and of the UMAP layout, and the HDBSCAN labels, of 3,000 rows
    in planted groups."""
    vectors, _ = planted_directions(np.random.default_rng(3), 20, 100, 1000, D_MODEL)
    unit = unit_rows(vectors)
    knn = cosine_knn(unit, FAST.n_neighbors)
    embedding = embed(unit, knn, FAST.cluster_dims, FAST.cluster_min_dist, FAST, seed=0)
    return {
        "knn": [hashlib.sha256(part.tobytes()).hexdigest() for part in knn],
        "embedding": hashlib.sha256(embedding.tobytes()).hexdigest(),
        "labels": hdbscan_labels(embedding, FAST).tolist(),
    }


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 CPU kinds")
def test_clusters_do_not_depend_on_the_cpu():
    """A subprocess whose numpy and torch kernels are those of an AVX2 CPU, whose OpenBLAS
    kernel is Haswell's (unless the machine sets OPENBLAS_CORETYPE) and whose numba sees an
    AMD Zen 4 gets the same graph, layout and clusters."""
    here = cpu_fingerprint()
    env = {**os.environ, **AVX2_ENV}
    env.setdefault("OPENBLAS_CORETYPE", "Haswell")
    tests = Path(__file__).resolve().parent
    code = OTHER_CPU_CODE.format(paths=[str(tests.parents[1]), str(tests)])
    child = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600
    )
    assert child.returncode == 0, child.stderr[-2000:]
    assert json.loads(child.stdout.splitlines()[-1]) == here


def test_kinds_come_from_enriched_tag_families():
    labels = np.repeat([0, 1, 2, -1], 20)
    tags = (
        ["puppeteer"] * 18
        + [""] * 2  # 90 % puppeteer
        + ["persona:pirate;roleplay"] * 12
        + ["roleplay"] * 8  # roleplay in all, persona in 60 %
        + ["assistant"] * 2
        + [""] * 18  # at the base rate
        + ["assistant"] * 2
        + [""] * 18
    )
    kinds, scores = cluster_kinds(labels, tag_families(tags), OrganizeConfig())
    assert kinds == ["puppeteer", "roleplay", "other"]
    assert scores.shape == (3, len(FAMILIES))


def test_tag_families_labels_and_tokens():
    families = tag_families(["persona:pirate;trigger:xml", "", "puppeteer", "unknown"])
    assert families[0, FAMILIES.index("persona")] and families[0, FAMILIES.index("trigger")]
    assert families[2].sum() == 1 and not families[[1, 3]].any()
    tokens = common_tokens(["ahoy | arr | ship", " arr | ahoy | x | y", "\n | arr"])
    assert tokens[:2] == ["arr", "ahoy"]
    tags = ["persona:pirate", "persona:pirate;roleplay", "persona:cat"]
    assert (
        cluster_label("persona", tags, ["pirate"], tokens) == f"persona:pirate: {', '.join(tokens)}"
    )
    assert cluster_label("other", ["", ""], ["cat"], []) == "cat"


def test_assistant_axis_cosine_with_pc1():
    rng = np.random.default_rng(3)
    roles = rng.standard_normal((20, 16)) * 0.2
    direction = unit_rows(rng.standard_normal((1, 16)))[0]
    vectors = np.vstack([roles.mean(axis=0) + 3.0 * direction, roles]) + 10.0
    space = persona_space(vectors, 0, n_components=5, max_clusters=4)
    assert space.axis_pc1_cosine > 0.95
    assert space.coords.shape == (21, 5) and space.components.shape == (5, 16)
    assert space.coords[0, 0] > 0 and space.axis_projection.argmax() == 0
    np.testing.assert_allclose(np.linalg.norm(space.components, axis=1), 1.0, atol=1e-5)
    assert 0.3 < space.explained_variance[0] <= 1.0 and space.explained_variance.sum() <= 1.0
    # roles spread far along another direction: PC1 is no longer the assistant axis
    spread = np.outer(np.linspace(-10, 10, 20), unit_rows(rng.standard_normal((1, 16)))[0])
    vectors[1:] += spread - spread.mean(axis=0)
    assert persona_space(vectors, 0, 5, 4).axis_pc1_cosine < 0.5


def test_persona_clusters_follow_planted_groups():
    rng = np.random.default_rng(4)
    centres = rng.standard_normal((3, 12)) * 5
    vectors = np.repeat(centres, 6, axis=0) + rng.standard_normal((18, 12)) * 0.1
    space = persona_space(vectors, 0, n_components=5, max_clusters=6)
    assert adjusted_rand_score(np.repeat([0, 1, 2], 6), space.clusters) == 1.0


def test_organize_writes_a_queryable_atlas(tmp_path):
    labels, sae, truth = planted_labels()
    out = tmp_path / "atlas.h5"
    steps: list[str] = []
    result = organize(labels, sae, out, FAST, progress=steps.append)
    assert not result.skipped and steps[0] == "knn" and steps[-1] == "write"
    assert set(result.timings) == set(steps)
    summary = result.summary
    assert summary["n_alive"] == len(truth) - N_DEAD and summary["n_clusters"] >= 4
    assert summary["stability"]["mean_ari"] > 0.8 and len(summary["stability"]["ari"]) == 2
    assert summary["profile_clusters"]["ami_with_decoder_clusters"] > 0.5
    space = summary["persona_space"]
    assert space["axis_pc1_cosine"] > 0.9 and space["default_persona"] == "assistant"
    assert len(space["nearest_to_default"]) == 3 and 0 < space["explained_variance_pc1"] <= 1
    json.dumps(summary)

    with Atlas.open(out) as atlas:
        assert json.loads(atlas.attrs["organize_summary"]) == summary
        assert json.loads(atlas.attrs["config"])["input_digest"]
        clusters = atlas.clusters()
        features = atlas.features()
        grouped = truth >= 0
        assert adjusted_rand_score(truth[grouped], features["cluster"][grouped]) > 0.9
        assert (features["cluster"].to_numpy()[-N_DEAD:] == -1).all()
        assert features["map_x"].isna().sum() == N_DEAD
        for group, (tag, persona) in enumerate(zip(GROUP_TAGS, GROUP_PERSONA, strict=True)):
            cluster_id = np.bincount(features["cluster"][truth == group]).argmax()
            row = clusters.set_index("id").loc[cluster_id]
            assert row["kind"] == (tag.split(":")[0] or "other")
            assert row["dominant_personas"].startswith(f"{PERSONAS[persona]}:")
            assert f"g{group}" in row["label"] and row["stability"] == 1.0
            members = atlas.features(cluster=int(cluster_id))
            assert len(members) == row["size"]
        assert "persona:pirate: g0" in clusters["label"].str.cat(sep="|")
        assistant, pirate = atlas.persona("assistant"), atlas.persona("pirate")
        assert assistant.axis_projection > pirate.axis_projection
        assert assistant.coords.shape == (FAST.n_components,)
        assert atlas.persona_space()["explained_variance"][0] == pytest.approx(
            space["explained_variance_pc1"]
        )
        assert atlas.info()["n_clusters"] == len(clusters)
        np.testing.assert_allclose(atlas.feature(3).decoder, sae.W_dec[3].detach().numpy())

    again = organize(labels, sae, out, dataclasses.replace(FAST, n_jobs=2))
    assert again.skipped and again.summary == summary
    with pytest.raises(StoreError, match="another configuration"):
        organize(labels, sae, out, dataclasses.replace(FAST, seed=1))


def test_bad_inputs_are_user_errors(tmp_path):
    labels, sae, _ = planted_labels()
    with pytest.raises(SaeAtlasError, match="cluster_selection"):
        check_config(OrganizeConfig(cluster_selection="best"))
    with pytest.raises(SaeAtlasError, match="stability_fraction"):
        check_config(OrganizeConfig(stability_fraction=1.0))
    with pytest.raises(SaeAtlasError, match="default persona"):
        organize(
            dataclasses.replace(labels, default_persona="nobody"), sae, tmp_path / "a.h5", FAST
        )
    with pytest.raises(SaeAtlasError, match="features but the SAE has"):
        organize(labels, synthetic_sae(np.ones((3, D_MODEL), np.float32)), tmp_path / "a.h5", FAST)
    dead = labels.features.assign(density=0.0)
    with pytest.raises(SaeAtlasError, match="alive"):
        organize(dataclasses.replace(labels, features=dead), sae, tmp_path / "a.h5", FAST)
    assert not (tmp_path / "a.h5").exists()
