"""Benchmark: write, open and query a synthetic atlas of the default model's size.

Builds random but realistically shaped data (`sae_atlas.testing.synthetic_atlas`: d_model 576,
100,000 features, ~200 personas, ~10 examples per feature, labels / tokens / contexts of typical
length), writes it with `AtlasWriter` (`write_atlas`), then times `Atlas.open`, the first (cold) and
repeated random calls of `feature(i)` and `persona(name)` (p50 / p95), plus `features()`, `search()`
and `nearest_features()`. The file is read back right after it was written, so the OS page cache is
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

from feature_store.atlas import Atlas
from sae_atlas.testing import synthetic_atlas, write_atlas


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


def query_times(
    path: Path, names: list[str], args: argparse.Namespace, rng: np.random.Generator
) -> tuple[float, dict[str, Any]]:
    """Milliseconds of `Atlas.open` and of every query of the atlas at `path`."""
    start = time.perf_counter()
    atlas = Atlas.open(path)
    open_ms = (time.perf_counter() - start) * 1000
    with atlas:
        results: dict[str, Any] = {
            "feature_first_ms": timed_ms(lambda: atlas.feature(int(rng.integers(args.features)))),
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
    return open_ms, results


def print_table(report: dict[str, Any], args: argparse.Namespace) -> None:
    rows = [
        ("write", f"{report['write_s']:.2f} s", f"{report['file_mb']:.0f} MiB"),
        ("open", f"{report['open_ms']:.2f} ms", ""),
        ("feature(i) first call", f"{report['feature_first_ms']:.1f} ms", ""),
        (
            "feature(i)",
            f"p50 {report['feature']['p50_ms']:.2f} ms",
            f"p95 {report['feature']['p95_ms']:.2f} ms",
        ),
        ("persona(name) first call", f"{report['persona_first_ms']:.1f} ms", ""),
        (
            "persona(name)",
            f"p50 {report['persona']['p50_ms']:.2f} ms",
            f"p95 {report['persona']['p95_ms']:.2f} ms",
        ),
        ("features() first call", f"{report['features_first_ms']:.0f} ms", ""),
        ("features(tag=...)", f"p50 {report['features_filtered']['p50_ms']:.0f} ms", ""),
        ("search(text)", f"p50 {report['search']['p50_ms']:.0f} ms", ""),
        ("nearest_features(i, 10)", f"p50 {report['nearest_features']['p50_ms']:.0f} ms", ""),
        ("info()", f"{report['info_ms']:.0f} ms", ""),
    ]
    print(
        f"atlas bench: {args.features:,} features, d_model {args.d_model}, "
        f"{args.personas} personas, {args.examples} examples/feature"
    )
    for name, a, b in rows:
        print(f"  {name:<26} {a:>16} {b:>16}")


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
    data = synthetic_atlas(args.features, args.d_model, args.personas, args.examples, args.seed)
    build_s = time.perf_counter() - start
    rng = np.random.default_rng(args.seed + 1)
    with tempfile.TemporaryDirectory(prefix="bench_atlas_") as folder:
        path = Path(folder) / "atlas.h5"
        start = time.perf_counter()
        write_atlas(path, data, config={"bench": True})
        write_s = time.perf_counter() - start
        names = data["personas"]["name"].tolist()
        del data
        file_mb = path.stat().st_size / 2**20
        open_ms, results = query_times(path, names, args, rng)
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
    print_table(report, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
