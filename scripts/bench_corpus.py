"""Benchmark the corpus sampler against plain Hugging Face `generate` on the same prompts.

Measures new tokens/s of (1) `generate` in float32 at batch 32 (the baseline, run first), then the
corpus sampler (`sae_atlas.model.sample`) in float32 at batch 32 and in bfloat16 at the larger
batch sizes, all in one process on the same jobs of the default profile. Also reports the limits
of decoding: memory bandwidth (a large array copy) / bytes of weights per step, and measured
matmul throughput / FLOPs per step, each as max new tokens/s at the batch size; and the wall time
of the default profile's corpus (CorpusConfig defaults, the whole catalogue) at the measured rate.
Prints a table and writes JSON (--out); each row records the 1-minute load average, since another
process on the same cores slows a 2-thread run several-fold. Takes about 2 minutes on an idle
2-core CPU with the defaults.

    .venv/bin/python scripts/bench_corpus.py --jobs 64 --out runs/bench/bench_corpus.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sae_atlas.config import CorpusConfig
from sae_atlas.model import load_model, sample, sampling_model, stop_token_ids
from sae_atlas.model.dtype import matmul_rates
from sae_atlas.personas import load_catalogue
from sae_atlas.stages.corpus import corpus_jobs


def hf_generate(handle: Any, model: Any, jobs: list, config: CorpusConfig, batch: int) -> int:
    """New tokens (stop included) that `model.generate` samples for `jobs`, batch by batch."""
    tokenizer = handle.tokenizer
    tokenizer.padding_side = "left"
    stops = stop_token_ids(handle)
    total = 0
    for start in range(0, len(jobs), batch):
        texts = [handle.render(j.messages(), True) for j in jobs[start : start + batch]]
        inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            output = model.generate(
                **inputs,
                do_sample=True,
                temperature=config.temperature,
                top_p=config.top_p,
                max_new_tokens=config.max_new_tokens,
                eos_token_id=stops,
                pad_token_id=tokenizer.pad_token_id,
            )
        new = output[:, inputs["input_ids"].shape[1] :].numpy()
        for row in new:
            hits = np.flatnonzero(np.isin(row, stops))
            total += int(hits[0]) + 1 if len(hits) else len(row)
    return total


def copy_bandwidth(n_bytes: int = 1 << 30, repeats: int = 3) -> float:
    """Bytes/s of a large array copy (read + write counted)."""
    source = np.ones(n_bytes // 8)
    target = np.empty_like(source)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - start)
    return 2 * source.nbytes / best


def measure(
    handle: Any, jobs: list, config: CorpusConfig, batches: list[int]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """New tokens/s of `generate` (float32, batch 32), then of the corpus sampler in float32 at
    batch 32 and in bfloat16 at `batches`; the rows and the sampling models."""
    rows: list[dict[str, Any]] = []

    def record(method: str, dtype: str, batch: int, tokens: int, seconds: float) -> None:
        rows.append(
            {
                "method": method,
                "dtype": dtype,
                "batch": batch,
                "jobs": len(jobs),
                "new_tokens": tokens,
                "seconds": round(seconds, 2),
                "new_tokens_per_s": round(tokens / seconds, 1),
                "load_average_1min": round(os.getloadavg()[0], 2),
            }
        )
        print(f"  {method:<16} {dtype:<9} batch {batch:>3}: {tokens / seconds:7.1f} new tokens/s")

    models = {dtype: sampling_model(handle, dtype) for dtype in ("float32", "bfloat16")}
    start = time.perf_counter()
    tokens = hf_generate(handle, models["float32"], jobs, config, 32)
    record("hf_generate", "float32", 32, tokens, time.perf_counter() - start)
    for dtype, batch in [("float32", 32), *(("bfloat16", b) for b in batches)]:
        run_config = replace(config, batch_size=batch, dtype=dtype)
        start = time.perf_counter()
        responses = [r for b in sample(handle, jobs, run_config, model=models[dtype]) for r in b]
        tokens = sum(r.n_sampled for r in responses)
        record("corpus.sample", dtype, batch, tokens, time.perf_counter() - start)
    return rows, models


def decode_limits(handle: Any, model: Any, best: dict[str, Any]) -> dict[str, Any]:
    """The bandwidth and compute limits of decoding with bfloat16 `model` at the best row's
    batch size."""
    bandwidth = copy_bandwidth()
    n_params = sum(p.numel() for p in model.parameters())
    step_bytes = n_params * 2
    cfg = handle.hf_model.config
    shape = (best["batch"], cfg.hidden_size, cfg.intermediate_size)  # a decode step's matmul
    flops = matmul_rates(shape=shape, seconds=0.5).bfloat16 * 1e9
    return {
        "copy_bandwidth_GB_s": round(bandwidth / 1e9, 2),
        "weight_bytes_per_step_MB": round(step_bytes / 1e6, 1),
        "bandwidth_max_steps_per_s": round(bandwidth / step_bytes, 1),
        "bandwidth_max_new_tokens_per_s": round(bandwidth / step_bytes * best["batch"], 1),
        "matmul_GFLOP_s_bf16": round(flops / 1e9, 1),
        "compute_max_new_tokens_per_s": round(flops / (2 * n_params), 1),
        "measured_steps_per_s": round(best["new_tokens_per_s"] / best["batch"], 1),
    }


def print_table(rows: list[dict[str, Any]], limits: dict[str, Any]) -> None:
    baseline = rows[0]["new_tokens_per_s"]
    print()
    print(f"| {'method':<14} | {'dtype':<8} | batch | new tok/s | speedup |")
    print("|----------------|----------|-------|-----------|---------|")
    for row in rows:
        speedup = row["new_tokens_per_s"] / baseline
        print(
            f"| {row['method']:<14} | {row['dtype']:<8} | {row['batch']:>5} | "
            f"{row['new_tokens_per_s']:>9.1f} | {speedup:>6.2f}x |"
        )
    print()
    for key, value in limits.items():
        print(f"{key:>32}: {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=64, help="jobs sampled by every method")
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--out", type=Path, default=Path("runs/bench/bench_corpus.json"))
    args = parser.parse_args()

    handle = load_model()
    config = CorpusConfig()
    profile_jobs = corpus_jobs(load_catalogue(), config)
    jobs = profile_jobs[:: max(1, len(profile_jobs) // args.jobs)][: args.jobs]
    rows, models = measure(handle, jobs, config, args.batches)
    best = max(rows[1:], key=lambda row: row["new_tokens_per_s"])
    limits = decode_limits(handle, models["bfloat16"], best)
    mean_tokens = best["new_tokens"] / best["jobs"]
    estimate_s = len(profile_jobs) * mean_tokens / best["new_tokens_per_s"]
    summary = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "load_average": os.getloadavg(),
        },
        "rows": rows,
        "speedup_best_vs_baseline": round(
            best["new_tokens_per_s"] / rows[0]["new_tokens_per_s"], 2
        ),
        "limits_at_best_batch": limits,
        "default_profile": {
            "jobs": len(profile_jobs),
            "mean_new_tokens_per_job": round(mean_tokens, 1),
            "estimated_minutes": round(estimate_s / 60, 1),
        },
    }
    print_table(rows, limits)
    print(
        f"default profile: {len(profile_jobs)} jobs x {mean_tokens:.1f} new tokens -> "
        f"~{estimate_s / 60:.1f} min at {best['new_tokens_per_s']:.0f} new tokens/s"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
