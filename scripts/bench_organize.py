"""Benchmark: `sae_atlas.stages.organize` on synthetic labels of the default model's size.

Plants structure where organize should find it (`sae_atlas.testing.planted_labels`): a decoder
W_dec [features, d_model] whose rows form groups (random centres, cosine about 0.5 within a
group, sizes 10-200) among scattered random rows, each group tagged with one tag family and
selective for one persona (profiles and top personas); persona vectors [personas, d_model] with
the default persona offset along one axis; realistic tables (tags, top tokens, examples per
feature). Runs organize once on a small
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
from sklearn.metrics import adjusted_rand_score

from feature_store.atlas import Atlas
from sae_atlas.config import OrganizeConfig
from sae_atlas.stages.organize import organize
from sae_atlas.testing import planted_labels

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


def recovery(
    atlas: Atlas, truth: np.ndarray, density: np.ndarray, group_kind: list[str]
) -> dict[str, Any]:
    """How well the planted groups came back: ARI, kinds, clustered shares, stability."""
    found = atlas.features()["cluster"].to_numpy()
    grouped = (truth >= 0) & (density > 0)
    stability = atlas.clusters().set_index("id")["stability"]
    planted_share = pd.Series(grouped[found >= 0]).groupby(found[found >= 0]).mean()
    mostly_planted = planted_share.index[planted_share >= 0.5]
    mostly_scattered = planted_share.index[planted_share < 0.5]
    return {
        "planted_groups": int(truth.max()) + 1,
        "ari_with_planted": float(adjusted_rand_score(truth[grouped], found[grouped])),
        "kind_accuracy": kind_accuracy(atlas, truth, group_kind),
        "scattered_clustered_share": float((found[truth < 0] >= 0).mean()),
        "clusters_mostly_planted": len(mostly_planted),
        "clusters_mostly_scattered": len(mostly_scattered),
        "stability_mostly_planted": float(stability[mostly_planted].mean()),
        "stability_mostly_scattered": float(stability[mostly_scattered].mean()),
    }


def summary_quality(summary: dict[str, Any]) -> dict[str, Any]:
    """The quality figures organize's own summary reports."""
    return {
        "n_clusters": summary["n_clusters"],
        "clustered_share": summary["n_clustered"] / summary["n_alive"],
        "stability_mean_ari": summary["stability"]["mean_ari"],
        "stability_mean_ari_clustered": summary["stability"]["mean_ari_clustered"],
        "mean_cluster_stability": summary["stability"]["mean_cluster_stability"],
        "profile_ami": summary["profile_clusters"]["ami_with_decoder_clusters"],
        "axis_pc1_cosine": summary["persona_space"]["axis_pc1_cosine"],
        "explained_variance_pc1": summary["persona_space"]["explained_variance_pc1"],
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=16_000)
    parser.add_argument("--d-model", type=int, default=576)
    parser.add_argument("--personas", type=int, default=100)
    parser.add_argument("--examples", type=int, default=15, help="examples per feature")
    parser.add_argument("--reruns", type=int, default=OrganizeConfig().stability_reruns)
    parser.add_argument("--target", type=float, default=120.0, help="target seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/bench_organize.json"))
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    config = OrganizeConfig(stability_reruns=args.reruns, seed=args.seed)

    with tempfile.TemporaryDirectory() as folder:
        small, small_sae, _, _ = planted_labels(600, 32, 8, 2, args.seed)
        started = time.perf_counter()
        organize(small, small_sae, Path(folder) / "warm.h5", config)
        warm_up = time.perf_counter() - started

        labels, sae, truth, group_kind = planted_labels(
            args.features, args.d_model, args.personas, args.examples, args.seed
        )
        path = Path(folder) / "atlas.h5"
        result = organize(labels, sae, path, config)
        with Atlas.open(path) as atlas:
            quality = recovery(atlas, truth, labels.features["density"].to_numpy(), group_kind)
        file_mb = path.stat().st_size / 2**20
    summary = result.summary
    quality |= summary_quality(summary)
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
