"""Benchmark: write, open and query a synthetic atlas of the default model's size.

Builds random but realistically shaped data (d_model 576, 100,000 features, ~200 personas,
~10 examples per feature, labels / tokens / contexts of typical length), writes it with
`AtlasWriter`, then times `Atlas.open`, the first (cold) and repeated random calls of
`feature(i)` and `persona(name)` (p50 / p95), plus `features()`, `search()` and
`nearest_features()`. The file is read back right after it was written, so the OS page cache is
warm. Prints a table and writes JSON.

    python scripts/bench_atlas.py --features 100000 --out runs/bench/bench_atlas.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from feature_store.atlas import Atlas, AtlasWriter
from feature_store.schema import CLUSTER_KINDS, LIST_SEPARATOR

VOCABULARY = (
    "the ship sail captain gold treasure sea storm ahoy matey plunder crew harbor map island "
    "you I it is to of that this for with about what how help assist happy glad sure course "
    "villain evil scheme doom power dark poet verse moon rose heart dream whisper sorrow tag "
    "system user assistant answer question please thanks indeed certainly however therefore"
)
WORDS = VOCABULARY.split()


def sentence(rng: np.random.Generator, n_words: int) -> str:
    return " ".join(rng.choice(WORDS, size=n_words))


def synthetic(
    d_sae: int, d_model: int, n_personas: int, examples_per_feature: int, seed: int
) -> dict[str, Any]:
    """Arrays and tables shaped like a real atlas (values random)."""
    rng = np.random.default_rng(seed)
    personas = [f"persona_{p:03d}" for p in range(n_personas)]
    n_clusters = max(1, d_sae // 200)
    top_k = 5
    tag_choices = ["", "", "", "roleplay", "assistant", "puppeteer", "trigger:xml"]
    tags = []
    for i in range(d_sae):
        tag = tag_choices[i % len(tag_choices)]
        if i % 3 == 0:
            tag = f"persona:{personas[i % n_personas]}" + (";" + tag if tag else "")
        tags.append(tag)
    pool = [sentence(rng, 6) for _ in range(2000)]
    token_pool = [LIST_SEPARATOR.join(rng.choice(WORDS, size=8)) for _ in range(2000)]
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
    top_index = rng.integers(0, n_personas, (d_sae, top_k)).astype(np.int32)
    top_index[rng.random((d_sae, top_k)) < 0.5] = -1
    top_score = np.where(top_index >= 0, rng.random((d_sae, top_k)), np.nan).astype(np.float32)
    n_examples = d_sae * examples_per_feature
    n_quantile = examples_per_feature // 2
    n_top = examples_per_feature - n_quantile
    contexts = [sentence(rng, 25) for _ in range(5000)]
    examples = pd.DataFrame(
        {
            "feature": np.repeat(np.arange(d_sae), examples_per_feature),
            "kind": np.tile(np.array(["top"] * n_top + ["quantile"] * n_quantile), d_sae),
            "rank": np.tile(np.concatenate([np.arange(n_top), np.arange(n_quantile)]), d_sae),
            "doc": rng.integers(0, 50_000, n_examples),
            "pos": rng.integers(0, 512, n_examples),
            "activation": rng.random(n_examples).astype(np.float32) * 10,
            "context": [contexts[i % len(contexts)] for i in range(n_examples)],
        }
    )
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
    clusters = pd.DataFrame(
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
    return {
        "sae": {
            "W_enc": rng.standard_normal((d_model, d_sae), dtype=np.float32),
            "b_enc": np.zeros(d_sae, np.float32),
            "W_dec": rng.standard_normal((d_sae, d_model), dtype=np.float32),
            "b_dec": np.zeros(d_model, np.float32),
        },
        "features": features,
        "top_index": top_index,
        "top_score": top_score,
        "examples": examples,
        "personas": persona_table,
        "vectors": rng.standard_normal((n_personas, d_model), dtype=np.float32),
        "profiles": profiles,
        "coords": rng.standard_normal((n_personas, 8), dtype=np.float32),
        "components": np.linalg.qr(rng.standard_normal((d_model, 8)))[0].T.astype(np.float32),
        "clusters": clusters,
    }


def write(path: Path, data: dict[str, Any], d_model: int, d_sae: int) -> None:
    with AtlasWriter(
        path, model="synthetic", config={"bench": True}, d_model=d_model, d_sae=d_sae
    ) as writer:
        writer.write_sae(data["sae"], {"architecture": "topk", "d_sae": d_sae})
        writer.write_features(data["features"], data["top_index"], data["top_score"])
        writer.write_examples(data["examples"])
        writer.write_personas(
            data["personas"],
            vectors=data["vectors"],
            profiles=data["profiles"],
            coords=data["coords"],
        )
        writer.write_persona_space(
            assistant_axis=data["vectors"][0],
            center=data["vectors"].mean(axis=0),
            components=data["components"],
            explained_variance=np.linspace(0.3, 0.02, 8),
        )
        writer.write_clusters(data["clusters"])


def latencies(call: Callable[[Any], Any], args: list[Any]) -> dict[str, float]:
    """p50 / p95 / max in milliseconds of call(arg) over `args`."""
    times = []
    for arg in args:
        start = time.perf_counter()
        call(arg)
        times.append((time.perf_counter() - start) * 1000)
    return {
        "calls": len(times),
        "p50_ms": float(np.percentile(times, 50)),
        "p95_ms": float(np.percentile(times, 95)),
        "max_ms": float(np.max(times)),
    }


def timed_ms(call: Callable[[], Any]) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", type=int, default=100_000)
    parser.add_argument("--d-model", type=int, default=576)
    parser.add_argument("--personas", type=int, default=200)
    parser.add_argument("--examples", type=int, default=10, help="examples per feature")
    parser.add_argument("--calls", type=int, default=1000, help="random calls per query")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/bench_atlas.json"))
    args = parser.parse_args()

    start = time.perf_counter()
    data = synthetic(args.features, args.d_model, args.personas, args.examples, args.seed)
    build_s = time.perf_counter() - start
    rng = np.random.default_rng(args.seed + 1)
    with tempfile.TemporaryDirectory(prefix="bench_atlas_") as folder:
        path = Path(folder) / "atlas.h5"
        start = time.perf_counter()
        write(path, data, args.d_model, args.features)
        write_s = time.perf_counter() - start
        names = data["personas"]["name"].tolist()
        del data
        file_mb = path.stat().st_size / 2**20

        start = time.perf_counter()
        atlas = Atlas.open(path)
        open_ms = (time.perf_counter() - start) * 1000
        with atlas:
            results: dict[str, Any] = {
                "feature_first_ms": timed_ms(
                    lambda: atlas.feature(int(rng.integers(args.features)))
                ),
                "feature": latencies(
                    atlas.feature, rng.integers(0, args.features, args.calls).tolist()
                ),
                "persona_first_ms": timed_ms(lambda: atlas.persona(names[0])),
                "persona": latencies(
                    atlas.persona, [names[i] for i in rng.integers(0, len(names), args.calls)]
                ),
                "features_first_ms": timed_ms(atlas.features),
                "features_filtered": latencies(
                    lambda tag: atlas.features(tag=tag), ["puppeteer", "persona", "roleplay"]
                ),
                "search": latencies(atlas.search, ["captain", "xyz-no-match", "whisper"]),
                "nearest_features": latencies(
                    lambda i: atlas.nearest_features(i, 10),
                    rng.integers(0, args.features, 3).tolist(),
                ),
                "info_ms": timed_ms(atlas.info),
            }
    report = {
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "d_sae": args.features,
        "d_model": args.d_model,
        "personas": args.personas,
        "examples_per_feature": args.examples,
        "build_data_s": build_s,
        "write_s": write_s,
        "file_mb": file_mb,
        "open_ms": open_ms,
        **results,
    }
    rows = [
        ("write", f"{write_s:.2f} s", f"{file_mb:.0f} MiB"),
        ("open", f"{open_ms:.2f} ms", ""),
        ("feature(i) first call", f"{results['feature_first_ms']:.1f} ms", ""),
        (
            "feature(i)",
            f"p50 {results['feature']['p50_ms']:.2f} ms",
            f"p95 {results['feature']['p95_ms']:.2f} ms",
        ),
        ("persona(name) first call", f"{results['persona_first_ms']:.1f} ms", ""),
        (
            "persona(name)",
            f"p50 {results['persona']['p50_ms']:.2f} ms",
            f"p95 {results['persona']['p95_ms']:.2f} ms",
        ),
        ("features() first call", f"{results['features_first_ms']:.0f} ms", ""),
        ("features(tag=...)", f"p50 {results['features_filtered']['p50_ms']:.0f} ms", ""),
        ("search(text)", f"p50 {results['search']['p50_ms']:.0f} ms", ""),
        ("nearest_features(i, 10)", f"p50 {results['nearest_features']['p50_ms']:.0f} ms", ""),
        ("info()", f"{results['info_ms']:.0f} ms", ""),
    ]
    print(
        f"atlas bench: {args.features:,} features, d_model {args.d_model}, "
        f"{args.personas} personas, {args.examples} examples/feature"
    )
    for name, a, b in rows:
        print(f"  {name:<26} {a:>16} {b:>16}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
