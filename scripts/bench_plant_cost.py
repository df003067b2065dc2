"""Benchmark: the training cost of scripts/plant_persona.py's recipe, from its first few steps.

Runs the first --steps steps of the recipe (`sae_atlas.planting.train_lora` with the default
PlantConfig, on the
fixture's committed training data, so no sampling) and times each step in wall and process CPU
seconds (every thread). The full recipe's training cost is extrapolated per padded token: each
step costs about its batch's rows x longest sequence tokens, and `batch_order` gives every
step's batch. The first step (warm-up) is not used for the rate. Sampling the base answers
(the recipe's other part) is not measured here. Prints a table and writes JSON (--out). About
a minute on an idle 2-core CPU for 6 steps.

    python scripts/bench_plant_cost.py --steps 6 --out runs/bench/bench_plant_cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sae_atlas.model import load_model, sampling_model
from sae_atlas.planting import PlantConfig, batch_order, train_lora, training_batches, versions


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("tests/fixtures/planted_adapter"))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/bench_plant_cost.json"))
    args = parser.parse_args()
    if args.steps < 2:
        raise SystemExit("--steps: at least 2 (the first step is warm-up)")
    return args


def timed_steps(data: Path, steps: int, config: PlantConfig) -> tuple[pd.DataFrame, np.ndarray]:
    """Wall and CPU seconds of the first `steps` steps on the training data in folder `data`,
    and the padded tokens of every step of the recipe."""
    lines = (data / "training_data.jsonl").read_text().splitlines()
    handle = load_model()
    examples = training_batches(handle, [json.loads(line) for line in lines])
    lengths = np.array([len(ids) for ids, _ in examples])
    padded = np.array([len(b) * lengths[b].max() for b in batch_order(len(examples), config)])
    marks = [(time.perf_counter(), time.process_time())]

    def progress(step: int, total: int, loss: float) -> None:
        marks.append((time.perf_counter(), time.process_time()))

    model = sampling_model(handle, "float32")
    pad_id = int(handle.tokenizer.pad_token_id or 0)
    train_lora(model, examples, config, pad_id, progress, max_steps=steps)
    wall, cpu = np.diff(np.array(marks), axis=0).T
    table = pd.DataFrame({"step": np.arange(1, steps + 1), "padded_tokens": padded[:steps]})
    return table.assign(wall_s=wall, cpu_s=cpu), padded


def main() -> None:
    args = parse_args()
    card = json.loads((args.data / "training_card.json").read_text())
    config = PlantConfig()
    if card["hyper_parameters"] != {**asdict(config), "targets": list(config.targets)}:
        raise SystemExit(f"{args.data}: trained with other hyper-parameters than the default")
    load_start = os.getloadavg()[0]
    steps, padded = timed_steps(args.data, args.steps, config)
    load_end = os.getloadavg()[0]
    timed = steps.iloc[1:]
    wall_per_token = timed["wall_s"].sum() / timed["padded_tokens"].sum()
    cpu_per_token = timed["cpu_s"].sum() / timed["padded_tokens"].sum()
    result = {
        "steps": steps.to_dict("records"),
        "recipe_steps": len(padded),
        "recipe_padded_tokens": int(padded.sum()),
        "wall_s_per_padded_token": wall_per_token,
        "cpu_s_per_padded_token": cpu_per_token,
        "recipe_training_wall_s": wall_per_token * padded.sum(),
        "recipe_training_cpu_s": cpu_per_token * padded.sum(),
        "fixture_training_wall_s": card["seconds"]["training"],
        "load_average": {"start": load_start, "end": load_end},
        "torch_threads": torch.get_num_threads(),
        "versions": versions(),
    }
    print(steps.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    summary = pd.DataFrame(
        [
            ("recipe steps", result["recipe_steps"]),
            ("recipe padded tokens", result["recipe_padded_tokens"]),
            ("extrapolated training wall s", result["recipe_training_wall_s"]),
            ("extrapolated training CPU s", result["recipe_training_cpu_s"]),
            ("fixture's measured training wall s", result["fixture_training_wall_s"]),
            ("load average start / end", f"{load_start:.2f} / {load_end:.2f}"),
        ],
        columns=["measure", "value"],
    )
    print("\n" + summary.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str))
    print(f"\n{args.out}")


if __name__ == "__main__":
    main()
