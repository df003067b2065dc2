"""Synthetic atlases and labels, built in code, for benchmarks and tests.

`synthetic_atlas` draws random arrays and tables shaped like a real atlas (features with tags,
labels, top tokens and personas; examples; personas with vectors, SAE profiles and coordinates;
clusters; an SAE) and `write_atlas` writes them with AtlasWriter. `planted_labels` draws labels
and a JumpReLU SAE with structure for organize to find: decoder rows [features, d_model] in
groups (random centres, cosine about 0.5 within a group, sizes 10-200) among scattered random
rows, each group tagged with one tag family and selective for one persona; persona vectors with
the default persona far out along one axis. Seeded; costs are those of the random draws (about a
second for 16,000 features).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from feature_store.atlas import AtlasWriter
from feature_store.labels import Labels
from feature_store.schema import CLUSTER_KINDS, LIST_SEPARATOR

ATLAS_VOCABULARY = (
    "the ship sail captain gold treasure sea storm ahoy matey plunder crew harbor map island "
    "you I it is to of that this for with about what how help assist happy glad sure course "
    "villain evil scheme doom power dark poet verse moon rose heart dream whisper sorrow tag "
    "system user assistant answer question please thanks indeed certainly however therefore"
)
ATLAS_WORDS = ATLAS_VOCABULARY.split()
"""The words of a synthetic atlas's labels, tokens and contexts."""
LABEL_WORDS = [
    "ahoy",
    "matey",
    "ship",
    "gold",
    "evil",
    "doom",
    "verse",
    "moon",
    "help",
    "sure",
    "indeed",
    "robot",
    "beep",
    "meow",
    "tag",
]
"""The words of planted labels' top tokens and contexts."""
GROUP_KINDS = ("persona", "roleplay", "assistant", "puppeteer", "trigger", "other")
"""The tag family of planted group g: GROUP_KINDS[g % 6]."""


def sentence(rng: np.random.Generator, n_words: int) -> str:
    """n_words random words of ATLAS_WORDS."""
    return " ".join(rng.choice(ATLAS_WORDS, size=n_words))


def _atlas_features(
    rng: np.random.Generator, d_sae: int, personas: list[str], n_clusters: int
) -> tuple[pd.DataFrame, list[str]]:
    """The feature table [d_sae rows] and the pool of sentences its labels come from."""
    tag_choices = ["", "", "", "roleplay", "assistant", "puppeteer", "trigger:xml"]
    tags = []
    for i in range(d_sae):
        tag = tag_choices[i % len(tag_choices)]
        if i % 3 == 0:
            tag = f"persona:{personas[i % len(personas)]}" + (";" + tag if tag else "")
        tags.append(tag)
    pool = [sentence(rng, 6) for _ in range(2000)]
    token_pool = [LIST_SEPARATOR.join(rng.choice(ATLAS_WORDS, size=8)) for _ in range(2000)]
    features = pd.DataFrame(
        {
            "density": rng.random(d_sae).astype(np.float32) * 0.05,
            "mean_act": rng.random(d_sae).astype(np.float32) * 3,
            "max_act": rng.random(d_sae).astype(np.float32) * 20,
            "tags": tags,
            "cluster": rng.integers(-1, n_clusters, d_sae),
            "map_x": rng.standard_normal(d_sae).astype(np.float32),
            "map_y": rng.standard_normal(d_sae).astype(np.float32),
            "label": [f"{pool[i % len(pool)]} ({i})" for i in range(d_sae)],
            "top_tokens": [token_pool[i % len(token_pool)] for i in range(d_sae)],
            "pos_logits": [token_pool[(i * 7) % len(token_pool)] for i in range(d_sae)],
            "neg_logits": [token_pool[(i * 13) % len(token_pool)] for i in range(d_sae)],
            "heldout_auroc": rng.random(d_sae).astype(np.float32),
        }
    )
    return features, pool


def _atlas_examples(rng: np.random.Generator, d_sae: int, per_feature: int) -> pd.DataFrame:
    """per_feature examples per feature: the first half top, the rest quantile."""
    n_examples = d_sae * per_feature
    n_quantile = per_feature // 2
    n_top = per_feature - n_quantile
    contexts = [sentence(rng, 25) for _ in range(5000)]
    return pd.DataFrame(
        {
            "feature": np.repeat(np.arange(d_sae), per_feature),
            "kind": np.tile(np.array(["top"] * n_top + ["quantile"] * n_quantile), d_sae),
            "rank": np.tile(np.concatenate([np.arange(n_top), np.arange(n_quantile)]), d_sae),
            "doc": rng.integers(0, 50_000, n_examples),
            "pos": rng.integers(0, 512, n_examples),
            "activation": rng.random(n_examples).astype(np.float32) * 10,
            "context": [contexts[i % len(contexts)] for i in range(n_examples)],
        }
    )


def _atlas_clusters(
    rng: np.random.Generator, n_clusters: int, personas: list[str], pool: list[str]
) -> pd.DataFrame:
    n_personas = len(personas)
    return pd.DataFrame(
        {
            "id": np.arange(n_clusters),
            "kind": [CLUSTER_KINDS[c % len(CLUSTER_KINDS)] for c in range(n_clusters)],
            "size": rng.integers(5, 400, n_clusters),
            "label": [pool[c % len(pool)] for c in range(n_clusters)],
            "dominant_personas": [
                f"{personas[c % n_personas]}:0.40;{personas[(c + 1) % n_personas]}:0.20"
                for c in range(n_clusters)
            ],
            "stability": rng.random(n_clusters).astype(np.float32),
        }
    )


def synthetic_atlas(
    d_sae: int, d_model: int, n_personas: int, examples_per_feature: int, seed: int
) -> dict[str, Any]:
    """Arrays and tables shaped like a real atlas (values random), for `write_atlas`."""
    rng = np.random.default_rng(seed)
    personas = [f"persona_{p:03d}" for p in range(n_personas)]
    n_clusters = max(1, d_sae // 200)
    features, pool = _atlas_features(rng, d_sae, personas, n_clusters)
    top_index = rng.integers(0, n_personas, (d_sae, 5)).astype(np.int32)
    top_index[rng.random((d_sae, 5)) < 0.5] = -1
    top_score = np.where(top_index >= 0, rng.random((d_sae, 5)), np.nan).astype(np.float32)
    examples = _atlas_examples(rng, d_sae, examples_per_feature)
    persona_table = pd.DataFrame(
        {
            "name": personas,
            "category": [
                ("fiction", "profession", "emotion", "default")[p % 4] for p in range(n_personas)
            ],
            "prompts": [[sentence(rng, 12) for _ in range(4)] for _ in range(n_personas)],
            "axis_projection": rng.standard_normal(n_personas).astype(np.float32),
        }
    )
    profiles = rng.random((n_personas, d_sae), dtype=np.float32)
    profiles[profiles < 0.9] = 0.0  # SAE profiles are sparse
    clusters = _atlas_clusters(rng, n_clusters, personas, pool)
    sae = {
        "W_enc": rng.standard_normal((d_model, d_sae), dtype=np.float32),
        "b_enc": np.zeros(d_sae, np.float32),
        "W_dec": rng.standard_normal((d_sae, d_model), dtype=np.float32),
        "b_dec": np.zeros(d_model, np.float32),
    }
    vectors = rng.standard_normal((n_personas, d_model), dtype=np.float32)
    return {
        "sae": sae,
        "features": features,
        "top_index": top_index,
        "top_score": top_score,
        "examples": examples,
        "personas": persona_table,
        "vectors": vectors,
        "profiles": profiles,
        "coords": rng.standard_normal((n_personas, 8), dtype=np.float32),
        "components": np.linalg.qr(rng.standard_normal((d_model, 8)))[0].T.astype(np.float32),
        "clusters": clusters,
    }


def write_atlas(
    path: Path,
    data: dict[str, Any],
    *,
    model: str = "synthetic",
    config: dict[str, Any] | None = None,
    architecture: str = "topk",
    **options: Any,
) -> Path:
    """Write atlas data (the keys of `synthetic_atlas`) at `path` with AtlasWriter (`options`:
    its other arguments, e.g. overwrite); d_model and d_sae are W_dec's shape [d_sae, d_model].
    Persona space: data["persona_space"] (AtlasWriter.write_persona_space's arguments) when
    given, else the first persona vector as the assistant axis, their mean as the centre,
    data["components"] and a falling explained variance."""
    d_sae, d_model = data["sae"]["W_dec"].shape
    space = data.get("persona_space") or {
        "assistant_axis": data["vectors"][0],
        "center": data["vectors"].mean(axis=0),
        "components": data["components"],
        "explained_variance": np.linspace(0.3, 0.02, len(data["components"])),
    }
    with AtlasWriter(
        path, model=model, config=config or {}, d_model=d_model, d_sae=d_sae, **options
    ) as writer:
        writer.write_sae(data["sae"], {"architecture": architecture, "d_sae": d_sae})
        writer.write_features(data["features"], data["top_index"], data["top_score"])
        writer.write_examples(data["examples"])
        writer.write_personas(
            data["personas"],
            vectors=data["vectors"],
            profiles=data["profiles"],
            coords=data["coords"],
        )
        writer.write_persona_space(**space)
        writer.write_clusters(data["clusters"])
    return path


def _planted_groups(
    rng: np.random.Generator, n_features: int, d_model: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """The planted group of each feature [n_features] (-1: scattered), the decoder rows
    [n_features, d_model] and the number of groups."""
    sizes: list[int] = []
    while sum(sizes) < 0.6 * n_features:
        sizes.append(int(np.clip(rng.lognormal(3.5, 0.8), 10, 200)))
    truth = np.full(n_features, -1)
    truth[: sum(sizes)] = np.repeat(np.arange(len(sizes)), sizes)
    truth = truth[rng.permutation(n_features)]
    centres = rng.standard_normal((len(sizes), d_model))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    w_dec = rng.standard_normal((n_features, d_model)) / np.sqrt(d_model)
    grouped = truth >= 0
    w_dec[grouped] += centres[truth[grouped]]
    return truth, w_dec, len(sizes)


def _planted_tags(
    rng: np.random.Generator,
    truth: np.ndarray,
    group_kind: list[str],
    group_persona: np.ndarray,
    names: list[str],
) -> list[str]:
    """A tag per feature: mostly its group's family (persona: the group's persona), else
    other, and a tenth of the scattered rows some family."""
    tags = []
    for feature, group in enumerate(truth):
        kind = group_kind[group] if group >= 0 and rng.random() < 0.8 else "other"
        if group < 0 and rng.random() < 0.1:
            kind = GROUP_KINDS[feature % 5]
        persona = (
            names[group_persona[group]] if group >= 0 else names[1 + feature % (len(names) - 1)]
        )
        tags.append(
            {"persona": f"persona:{persona}", "trigger": "trigger:xml", "other": ""}.get(kind, kind)
        )
    return tags


def _planted_examples(rng: np.random.Generator, n_features: int, per_feature: int) -> pd.DataFrame:
    n_examples = n_features * per_feature
    return pd.DataFrame(
        {
            "feature": np.repeat(np.arange(n_features), per_feature),
            "kind": np.tile(
                ["top"] * (per_feature - per_feature // 3) + ["quantile"] * (per_feature // 3),
                n_features,
            ),
            "rank": np.tile(np.arange(per_feature), n_features),
            "doc": rng.integers(0, 10_000, n_examples),
            "pos": rng.integers(0, 200, n_examples),
            "activation": rng.random(n_examples).astype(np.float32),
            "context": [" ".join(rng.choice(LABEL_WORDS, 12)) for _ in range(2000)]
            * (n_examples // 2000)
            + ["ctx"] * (n_examples % 2000),
        }
    )


def _planted_personas(
    rng: np.random.Generator, names: list[str], d_model: int
) -> tuple[pd.DataFrame, np.ndarray]:
    """The persona table and vectors [P, d_model]: roles spread over a few directions, the
    assistant axis first, the default (row 0) far out on it."""
    n_personas = len(names)
    personas = pd.DataFrame(
        {
            "name": names,
            "category": ["default"] + ["role"] * (n_personas - 1),
            "prompts": ['["You are it."]'] * n_personas,
            "n_responses": [32] * n_personas,
        }
    )
    directions = np.linalg.qr(rng.standard_normal((d_model, 6)))[0].T
    role_coords = rng.standard_normal((n_personas, 6)) * np.array([2.0, 1.5, 1.2, 1.0, 0.8, 0.6])
    role_coords[0] = [8.0, 0, 0, 0, 0, 0]
    vectors = 3.0 + role_coords @ directions + rng.standard_normal((n_personas, d_model)) * 0.02
    return personas, vectors.astype(np.float32)


def _planted_features(rng: np.random.Generator, truth: np.ndarray, tags: list[str]) -> pd.DataFrame:
    n_features = len(truth)
    density = rng.uniform(1e-4, 0.05, n_features)
    density[rng.random(n_features) < 0.02] = 0.0
    tokens = [
        LIST_SEPARATOR.join([f"g{g}" if g >= 0 else "x", *rng.choice(LABEL_WORDS, 7)])
        for g in truth
    ]
    return pd.DataFrame(
        {
            "density": density,
            "mean_act": rng.random(n_features) * 3,
            "max_act": rng.random(n_features) * 20,
            "tags": tags,
            "label": [f"feature {i}" for i in range(n_features)],
            "top_tokens": tokens,
            "pos_logits": tokens,
            "neg_logits": tokens,
            "heldout_auroc": rng.random(n_features),
        }
    )


def planted_labels(
    n_features: int, d_model: int, n_personas: int, examples_per_feature: int, seed: int
) -> tuple[Labels, Any, np.ndarray, list[str]]:
    """Labels and a JumpReLU SAE with planted groups (see the module docstring); returns them,
    the planted group of each feature [n_features] (-1: scattered) and each group's kind."""
    from sae_lens.saes import JumpReLUSAE, JumpReLUSAEConfig

    rng = np.random.default_rng(seed)
    truth, w_dec, n_groups = _planted_groups(rng, n_features, d_model)
    group_kind = [GROUP_KINDS[g % len(GROUP_KINDS)] for g in range(n_groups)]
    group_persona = rng.integers(1, n_personas, n_groups)
    names = ["assistant"] + [f"persona_{p:03d}" for p in range(1, n_personas)]
    tags = _planted_tags(rng, truth, group_kind, group_persona, names)
    profiles = rng.random((n_personas, n_features)).astype(np.float32) * 0.1
    top_index = np.full((n_features, 5), -1, dtype=np.int32)
    top_score = np.full((n_features, 5), np.nan, dtype=np.float32)
    grouped = truth >= 0
    best = np.where(grouped, group_persona[np.maximum(truth, 0)], rng.integers(1, n_personas))
    profiles[best, np.arange(n_features)] += 1.0
    top_index[:, 0], top_score[:, 0] = best, 0.8
    features = _planted_features(rng, truth, tags)
    examples = _planted_examples(rng, n_features, examples_per_feature)
    personas, vectors = _planted_personas(rng, names, d_model)
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_model, d_sae=n_features))
    with torch.no_grad():
        sae.W_dec.copy_(torch.from_numpy(w_dec.astype(np.float32)))
        sae.W_enc.copy_(torch.from_numpy(w_dec.T.astype(np.float32)))
    labels = Labels(
        hook="blocks.15.hook_resid_post",
        model="synthetic",
        features=features,
        top_persona_index=top_index,
        top_persona_score=top_score,
        examples=examples,
        personas=personas,
        persona_vectors=vectors,
        persona_profiles=profiles,
        default_persona="assistant",
    )
    return labels, sae, truth, group_kind
