"""Benchmark: peak resident memory of harvest, train and label for two corpus sizes (N, 4N tokens).

Every stage runs in a fresh child process (spawned) on a random Llama built in code and a synthetic
chat corpus, as the CLI runs it: harvest reads transcripts.h5 and writes activations.h5, train
trains one SAE from it (a fixed token budget, evaluation included), label labels that SAE on the
whole store. The child reports its peak resident set size (ru_maxrss). The baseline, in the same
way, is a child that imports every stage and builds the model but runs none. Children run the
stages as the `sae-atlas` command does (glibc's dynamic mmap threshold; harvest and label hand the
heap's free pages back after each batch, `sae_atlas.heap`); to compare, `--heap dynamic` runs them
without that hand-back and `--heap fixed` with glibc's threshold fixed at 1 MiB (what the command
did before; see scripts/heap_mode.py). A stage that streams from disk has the same peak at N and 4N
tokens; the table gives the growth per extra token next to the bytes per token of dense float32
activations ([n_tokens, d_model] in memory), and each stage's user and system CPU seconds. Prints a
table and writes JSON.

    PYTHONPATH=. python scripts/bench_memory.py --tokens 50000 --out runs/bench/bench_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from sae_atlas.heap import MODES

STAGES = ("baseline", "harvest", "train", "label")


def run_stage(stage: str, folder: str, model: dict[str, Any], heap: str) -> dict[str, float]:
    """Run `stage` on the run folder in this (child) process, in heap mode `heap`; its seconds,
    CPU seconds and peak RSS."""
    from sae_atlas.heap import set_heap_mode

    set_heap_mode(heap)

    from feature_store.transcripts import TranscriptStore
    from sae_atlas.config import HarvestConfig, LabelConfig, TrainConfig
    from sae_atlas.model import resid_hook
    from sae_atlas.stages.harvest import harvest
    from sae_atlas.stages.label import label_stage
    from sae_atlas.stages.train import train_saes
    from sae_atlas.testing import random_chat_model

    run = Path(folder)
    hook = resid_hook(model["layers"] - 1)
    handle = random_chat_model(**model)
    started = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_SELF)
    if stage == "harvest":
        config = HarvestConfig(hooks=(hook,), batch_tokens=8192)
        harvest(
            TranscriptStore(run / "transcripts.h5"), run / "activations.h5", config, handle=handle
        )
    elif stage == "train":
        config = TrainConfig(
            architecture="topk",
            width=1024,
            k=16,
            batch_size=1024,
            training_tokens=1024 * 30,
            eval_tokens=8192,
            eval_transcripts=8,
        )
        train_saes(run / "activations.h5", run / "sae", config, handle=handle)
    elif stage == "label":
        label_stage(run / "activations.h5", run / "sae" / hook, run / "labels.h5", LabelConfig())
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "seconds": time.perf_counter() - started,
        "user_s": after.ru_utime - before.ru_utime,
        "sys_s": after.ru_stime - before.ru_stime,
        "peak_rss_mb": after.ru_maxrss / 1024,
    }


def in_child(stage: str, folder: Path, model: dict[str, Any], args: Any) -> dict[str, float]:
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(run_stage, stage, str(folder), model, args.heap).result()


def measure(args: argparse.Namespace, model: dict[str, Any]) -> list[dict[str, Any]]:
    """Every stage in a child process, on a synthetic corpus of N and of 4N tokens."""
    from feature_store.activations import ActivationStore
    from sae_atlas.testing import synthetic_corpus

    model_id = f"random-llama-{args.hidden}x{args.layers}-v{args.vocab}"
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as scratch:
        for factor in (1, 4):
            folder = Path(scratch) / f"x{factor}"
            folder.mkdir()
            n_transcripts = synthetic_corpus(
                folder / "transcripts.h5", model_id, n_tokens=factor * args.tokens, vocab=args.vocab
            )
            for stage in STAGES:
                result = in_child(stage, folder, model, args)
                if stage == "harvest":
                    n_tokens = ActivationStore(folder / "activations.h5").n_tokens
                rows.append({"stage": stage, "factor": factor, **result})
                print(f"x{factor} {stage}: {result}", flush=True)
            for row in rows[-len(STAGES) :]:
                row["n_tokens"], row["n_transcripts"] = n_tokens, n_transcripts
    return rows


def summarize(rows: list[dict[str, Any]], dense: int) -> list[dict[str, Any]]:
    """Prints the table of peak RSS at N and 4N; the growth per stage."""
    print(f"\npeak RSS (MB), N = {rows[0]['n_tokens']:,} and 4N = {rows[-1]['n_tokens']:,} tokens")
    print(
        f"{'stage':<10}{'N':>10}{'4N':>10}{'growth':>10}{'B/token':>10}{'dense B/token':>15}"
        f"{'user s N/4N':>14}{'sys s N/4N':>13}"
    )
    summary = []
    for stage in STAGES:
        small, large = (r for r in rows if r["stage"] == stage)
        growth = large["peak_rss_mb"] - small["peak_rss_mb"]
        per_token = growth * 2**20 / (large["n_tokens"] - small["n_tokens"])
        summary.append({"stage": stage, "growth_mb": growth, "growth_bytes_per_token": per_token})
        print(
            f"{stage:<10}{small['peak_rss_mb']:>10.0f}{large['peak_rss_mb']:>10.0f}"
            f"{growth:>10.1f}{per_token:>10.1f}{dense:>15}"
            f"{small['user_s']:>7.1f}/{large['user_s']:<6.1f}{small['sys_s']:>6.1f}/{large['sys_s']:<6.1f}"
        )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=50_000, help="N: the smaller corpus")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--heap", choices=MODES, default="release", help="see heap_mode.py")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/bench_memory.json"))
    args = parser.parse_args()
    model = {
        "hidden": args.hidden,
        "layers": args.layers,
        "heads": max(1, args.hidden // 64),
        "kv_heads": max(1, args.hidden // 128),
        "intermediate": 4 * args.hidden,
        "vocab": args.vocab,
    }
    rows = measure(args, model)
    dense = 4 * args.hidden
    summary = summarize(rows, dense)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "args": {k: str(v) for k, v in vars(args).items()},
                "heap": args.heap,
                "model": model,
                "dense_float32_bytes_per_token": dense,
                "runs": rows,
                "summary": summary,
                "load_average": os.getloadavg(),
                "python": platform.python_version(),
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
