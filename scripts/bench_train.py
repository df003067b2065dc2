"""Benchmark: SAE training fed from the HDF5 activation store against an in-memory tensor.

Writes a synthetic activation store (random float16 rows, so no model is needed;
`sae_atlas.testing.random_activation_store`), then runs the same sae-lens SAETrainer steps
(sae_atlas.stages.train's SAE and trainer settings) fed by the store's shuffled background reader
and by random batches of an in-memory float32 tensor, alternating rounds in one process, once the
reader has filled its read-ahead queue (its start-up, a few seconds, is not timed). Prints a table
and writes JSON (--out). Target: store-fed samples/s at least 0.9 of in-memory.

    python scripts/bench_train.py --rows 262144 --steps 24
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from sae_lens.training.sae_trainer import SAETrainer

from feature_store.activations import ActivationStore
from sae_atlas.config import TrainConfig
from sae_atlas.model import resid_hook
from sae_atlas.stages.train import as_tensors, build_sae, trainer_config
from sae_atlas.testing import random_activation_store

HOOK = resid_hook(0)


def memory_batches(acts: torch.Tensor, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """Random batches [batch_size, d_model] of an in-memory tensor, reshuffled every epoch."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(acts), generator=generator)
        for start in range(0, len(acts) - batch_size + 1, batch_size):
            yield acts[order[start : start + batch_size]]


def timed_steps(trainer: SAETrainer, batches: Iterator[torch.Tensor], steps: int) -> float:
    started = time.perf_counter()
    for _ in range(steps):
        trainer.step(next(batches))
        trainer.n_training_steps += 1
    return time.perf_counter() - started


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=262144)
    parser.add_argument("--d-model", type=int, default=576)
    parser.add_argument("--width", type=int, default=4608)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=24, help="timed steps per source")
    parser.add_argument("--rounds", type=int, default=6, help="alternations of the two sources")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--store", type=Path, default=None, help="reuse or keep the store here")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/bench_train.json"))
    return parser.parse_args()


def time_sources(
    store: ActivationStore, config: TrainConfig, args: argparse.Namespace
) -> tuple[dict[str, list[float]], int]:
    """Seconds of every round of per_round steps fed by the store and by memory, and
    per_round."""
    trainer = SAETrainer(
        trainer_config(config),
        build_sae(config, store.d_model, HOOK, store.model).to(args.device),
        data_provider=iter(()),
    )
    in_memory = torch.from_numpy(store.acts(HOOK).astype(np.float32))
    memory = memory_batches(in_memory, args.batch, seed=0)
    with store.batches(HOOK, args.batch, seed=0) as reader:
        from_store = as_tensors(reader, "cpu")
        timed_steps(trainer, from_store, args.warmup)
        timed_steps(trainer, memory, args.warmup)
        while not reader.queue.full():  # time the steady state, not the reader's start-up
            time.sleep(0.1)
        rounds: dict[str, list[float]] = {"store": [], "memory": []}
        per_round = max(1, args.steps // args.rounds)
        for _ in range(args.rounds):
            rounds["store"].append(timed_steps(trainer, from_store, per_round))
            rounds["memory"].append(timed_steps(trainer, memory, per_round))
    return rounds, per_round


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        store_path = args.store or Path(scratch) / "bench_activations.h5"
        started = time.perf_counter()
        if not store_path.exists():
            random_activation_store(store_path, args.rows, args.d_model, hook=HOOK, model="bench")
        write_seconds = time.perf_counter() - started
        store = ActivationStore(store_path)
        config = TrainConfig(
            architecture="batchtopk",
            width=args.width,
            k=args.k,
            batch_size=args.batch,
            training_tokens=args.batch * 10**6,
            normalize_activations="none",
            device=args.device,
        )
        rounds, per_round = time_sources(store, config, args)
        samples = per_round * args.rounds * args.batch
        rate = {name: samples / sum(times) for name, times in rounds.items()}
        ratio = rate["store"] / rate["memory"]
        result = {
            "config": {**vars(args), "store": str(store_path), "out": str(args.out)},
            "train_config": asdict(config),
            "store_rows": store.n_tokens,
            "store_write_seconds": write_seconds,
            "samples_per_step": args.batch,
            "timed_steps_per_source": per_round * args.rounds,
            "samples_per_second": rate,
            "round_seconds": rounds,
            "store_over_memory": ratio,
            "target": 0.9,
            "meets_target": ratio >= 0.9,
            "machine": {
                "cpu_count": os.cpu_count(),
                "torch_threads": torch.get_num_threads(),
                "platform": platform.platform(),
                "torch": torch.__version__,
                "device": args.device,
            },
        }
    print(f"{'source':<10}{'samples/s':>12}{'s/step':>10}")
    for name in ("store", "memory"):
        print(f"{name:<10}{rate[name]:>12.0f}{args.batch / rate[name]:>10.3f}")
    print(f"store / memory = {ratio:.3f} (target >= 0.9: {'met' if ratio >= 0.9 else 'NOT met'})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
