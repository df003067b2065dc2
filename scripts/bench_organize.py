"""Benchmark: `sae_atlas.stages.organize` on synthetic labels of the default model's size.

Plants structure where organize should find it: a decoder W_dec [features, d_model] whose rows
form groups (random centres, cosine about 0.5 within a group, sizes 10-200) among scattered
random rows, each group tagged with one tag family and selective for one persona (profiles and
top personas); persona vectors [personas, d_model] with the default persona offset along one
axis; realistic tables (tags, top tokens, examples per feature). Runs organize once on a small
set first (loads UMAP's numba kernels: the one-time cost of a fresh process, compile included on
a fresh install), then on the full set, and prints the time of each step, the total against the
target, and how well the planted structure came back (ARI with the planted groups, kinds, AMI,
stability ARI, cosine of the assistant axis with PC1). Writes JSON.

    python scripts/bench_organize.py --features 16000 --out runs/bench/bench_organize.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sae_lens.saes import JumpReLUSAE, JumpReLUSAEConfig
from sklearn.metrics import adjusted_rand_score

from feature_store.atlas import Atlas
from feature_store.labels import Labels
from feature_store.schema import LIST_SEPARATOR
from sae_atlas.config import OrganizeConfig
from sae_atlas.stages.organize import organize

GROUP_KINDS = ("persona", "roleplay", "assistant", "puppeteer", "trigger", "other")
WORDS = [
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
STEPS = (
    ("knn", "cosine kNN graph"),
    ("umap_nd", "UMAP nD (clustering)"),
    ("hdbscan", "HDBSCAN"),
    ("umap_2d", "UMAP 2-D (map)"),
    ("profile_clusters", "profile clustering"),
    ("stability", "stability reruns"),
    ("kinds", "kinds, labels"),
    ("persona_space", "persona space"),
    ("write", "write atlas"),
)


def synthetic(
    n_features: int, d_model: int, n_personas: int, examples_per_feature: int, seed: int
) -> tuple[Labels, JumpReLUSAE, np.ndarray, list[str]]:
    """Labels and SAE with planted groups; returns them, the planted group of each feature
    (-1: scattered) and each group's planted kind."""
    rng = np.random.default_rng(seed)
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
    group_kind = [GROUP_KINDS[g % len(GROUP_KINDS)] for g in range(len(sizes))]
    group_persona = rng.integers(1, n_personas, len(sizes))
    names = ["assistant"] + [f"persona_{p:03d}" for p in range(1, n_personas)]
    tags = []
    for feature, group in enumerate(truth):
        kind = group_kind[group] if group >= 0 and rng.random() < 0.8 else "other"
        if group < 0 and rng.random() < 0.1:
            kind = GROUP_KINDS[feature % 5]
        persona = (
            names[group_persona[group]] if group >= 0 else names[1 + feature % (n_personas - 1)]
        )
        tags.append(
            {"persona": f"persona:{persona}", "trigger": "trigger:xml", "other": ""}.get(kind, kind)
        )
    profiles = rng.random((n_personas, n_features)).astype(np.float32) * 0.1
    top_index = np.full((n_features, 5), -1, dtype=np.int32)
    top_score = np.full((n_features, 5), np.nan, dtype=np.float32)
    best = np.where(grouped, group_persona[np.maximum(truth, 0)], rng.integers(1, n_personas))
    profiles[best, np.arange(n_features)] += 1.0
    top_index[:, 0], top_score[:, 0] = best, 0.8
    density = rng.uniform(1e-4, 0.05, n_features)
    density[rng.random(n_features) < 0.02] = 0.0
    tokens = [
        LIST_SEPARATOR.join([f"g{g}" if g >= 0 else "x", *rng.choice(WORDS, 7)]) for g in truth
    ]
    features = pd.DataFrame(
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
    n_examples = n_features * examples_per_feature
    examples = pd.DataFrame(
        {
            "feature": np.repeat(np.arange(n_features), examples_per_feature),
            "kind": np.tile(
                ["top"] * (examples_per_feature - examples_per_feature // 3)
                + ["quantile"] * (examples_per_feature // 3),
                n_features,
            ),
            "rank": np.tile(np.arange(examples_per_feature), n_features),
            "doc": rng.integers(0, 10_000, n_examples),
            "pos": rng.integers(0, 200, n_examples),
            "activation": rng.random(n_examples).astype(np.float32),
            "context": [" ".join(rng.choice(WORDS, 12)) for _ in range(2000)] * (n_examples // 2000)
            + ["ctx"] * (n_examples % 2000),
        }
    )
    personas = pd.DataFrame(
        {
            "name": names,
            "category": ["default"] + ["role"] * (n_personas - 1),
            "prompts": ['["You are it."]'] * n_personas,
            "n_responses": [32] * n_personas,
        }
    )
    # roles spread over a few directions, the assistant axis first; the default far out on it
    directions = np.linalg.qr(rng.standard_normal((d_model, 6)))[0].T
    role_coords = rng.standard_normal((n_personas, 6)) * np.array([2.0, 1.5, 1.2, 1.0, 0.8, 0.6])
    role_coords[0] = [8.0, 0, 0, 0, 0, 0]
    vectors = 3.0 + role_coords @ directions + rng.standard_normal((n_personas, d_model)) * 0.02
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
        persona_vectors=vectors.astype(np.float32),
        persona_profiles=profiles,
        default_persona="assistant",
    )
    return labels, sae, truth, group_kind


def kind_accuracy(atlas: Atlas, truth: np.ndarray, group_kind: list[str]) -> float:
    """Share of planted groups whose majority cluster got the planted kind."""
    clusters = atlas.clusters().set_index("id")
    found = atlas.features()["cluster"].to_numpy()
    hits = []
    for group, kind in enumerate(group_kind):
        members = found[truth == group]
        members = members[members >= 0]
        if len(members):
            hits.append(clusters.loc[np.bincount(members).argmax(), "kind"] == kind)
    return float(np.mean(hits)) if hits else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=16_000)
    parser.add_argument("--d-model", type=int, default=576)
    parser.add_argument("--personas", type=int, default=100)
    parser.add_argument("--examples", type=int, default=15, help="examples per feature")
    parser.add_argument("--reruns", type=int, default=OrganizeConfig().stability_reruns)
    parser.add_argument("--target", type=float, default=120.0, help="target seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/bench_organize.json"))
    args = parser.parse_args()
    config = OrganizeConfig(stability_reruns=args.reruns, seed=args.seed)

    with tempfile.TemporaryDirectory() as folder:
        small, small_sae, _, _ = synthetic(600, 32, 8, 2, args.seed)
        started = time.perf_counter()
        organize(small, small_sae, Path(folder) / "warm.h5", config)
        warm_up = time.perf_counter() - started

        labels, sae, truth, group_kind = synthetic(
            args.features, args.d_model, args.personas, args.examples, args.seed
        )
        path = Path(folder) / "atlas.h5"
        result = organize(labels, sae, path, config)
        with Atlas.open(path) as atlas:
            found = atlas.features()["cluster"].to_numpy()
            grouped = (truth >= 0) & (labels.features["density"].to_numpy() > 0)
            stability = atlas.clusters().set_index("id")["stability"]
            planted_share = pd.Series(grouped[found >= 0]).groupby(found[found >= 0]).mean()
            mostly_planted = planted_share.index[planted_share >= 0.5]
            mostly_scattered = planted_share.index[planted_share < 0.5]
            quality: dict[str, Any] = {
                "planted_groups": int(truth.max()) + 1,
                "ari_with_planted": float(adjusted_rand_score(truth[grouped], found[grouped])),
                "kind_accuracy": kind_accuracy(atlas, truth, group_kind),
                "scattered_clustered_share": float((found[truth < 0] >= 0).mean()),
                "clusters_mostly_planted": len(mostly_planted),
                "clusters_mostly_scattered": len(mostly_scattered),
                "stability_mostly_planted": float(stability[mostly_planted].mean()),
                "stability_mostly_scattered": float(stability[mostly_scattered].mean()),
            }
            file_mb = path.stat().st_size / 2**20
    summary = result.summary
    quality |= {
        "n_clusters": summary["n_clusters"],
        "clustered_share": summary["n_clustered"] / summary["n_alive"],
        "stability_mean_ari": summary["stability"]["mean_ari"],
        "stability_mean_ari_clustered": summary["stability"]["mean_ari_clustered"],
        "mean_cluster_stability": summary["stability"]["mean_cluster_stability"],
        "profile_ami": summary["profile_clusters"]["ami_with_decoder_clusters"],
        "axis_pc1_cosine": summary["persona_space"]["axis_pc1_cosine"],
        "explained_variance_pc1": summary["persona_space"]["explained_variance_pc1"],
    }

    total = result.seconds
    print(
        f"organize: {args.features:,} features x d_model {args.d_model}, {args.personas} personas"
    )
    print(f"{'step':<26}{'seconds':>10}{'share':>8}")
    for key, name in STEPS:
        seconds = result.timings.get(key, 0.0)
        print(f"{name:<26}{seconds:>10.1f}{seconds / total:>8.0%}")
    print(f"{'total':<26}{total:>10.1f}")
    met = "met" if total <= args.target else "NOT met"
    print(f"target <= {args.target:.0f} s: {met}; numba warm-up (once per process) {warm_up:.1f} s")
    for key, value in quality.items():
        print(f"  {key}: {value:.3f}" if isinstance(value, float) else f"  {key}: {value}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "features": args.features,
        "d_model": args.d_model,
        "personas": args.personas,
        "examples_per_feature": args.examples,
        "config": config.__dict__,
        "seconds": total,
        "steps": result.timings,
        "warm_up_seconds": warm_up,
        "target_seconds": args.target,
        "target_met": total <= args.target,
        "file_mb": file_mb,
        "quality": quality,
        "summary": summary,
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
    }
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
