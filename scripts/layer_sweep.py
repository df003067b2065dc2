"""Layer sweep on honest splits: per layer, the share of personas whose best SAE feature (chosen on
train) reaches held-out AUROC >= 0.9, side by side with the residual probe's share
(sae_atlas.stages.label.sweep, carry).

On a built run's corpus (its transcripts.h5 and split plan; the run is only read): one harvest
pass recording every chosen layer, one SAE per layer with the run's training settings (or
--tokens for every layer), optionally a --width-factor times wider SAE at one layer; per SAE its
quality and, per method (best feature under mean / max / rate pooling, sparse probes over the
first --sparse-features train features, the header's best feature), the share with a Wilson
interval over personas and the paired comparison with the residual probe of the same tokens
(bootstrap interval over personas, McNemar, BH over the sweep). Prints the tables and whether
the target is met; writes JSON with per-persona tables and wall / CPU seconds per step; with
--atlas also records the tables as that atlas's experiments/layer_sweep (--atlas-out: a copy).

    OMP_NUM_THREADS=1 nice -n 10 python scripts/layer_sweep.py runs/quick --out runs/sweep \
        --layers 6,12,18 --tokens 1000000
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import torch
import typer

from sae_atlas.cli.options import AtlasOption, AtlasOutOption
from sae_atlas.model import load_model
from sae_atlas.stages.dynamics.run_files import output_atlas, run_model_config
from sae_atlas.stages.label.sweep import SweepConfig, run_sweep, sweep_inputs
from sae_atlas.stages.label.sweep_records import (
    SWEEP_COLUMNS,
    SWEEP_DESCRIPTIONS,
    sweep_summary,
    sweep_tables,
)
from sae_atlas.stages.record import record_results


def share_cell(share: dict[str, Any]) -> str:
    if share["share"] is None:
        return "-"
    low, high = share["ci"]
    return f"{share['share']:.2f} [{low:.2f},{high:.2f}]"


def print_tables(result: dict[str, Any]) -> None:
    """Per SAE its quality and shares; per comparison its paired test; the verdict; seconds."""
    pd.set_option("display.width", 250, "display.max_columns", 40)
    quality = ["layer", "width", "explained_variance", "l0", "dead_fraction", "ce_recovered_zero"]
    rows = []
    for row in result["rows"]:
        shares = {m: share_cell(s) for m, s in row["shares"].items()}
        rows.append({k: row[k] for k in quality} | {"cv_mean": row["train_cv_share_mean"]} | shares)
    print(pd.DataFrame(rows).round(3).to_string(index=False))
    tests = [
        {
            "layer": row["layer"],
            "width": row["width"],
            "method": method,
            "vs": c["reference"],
            "feature": c["feature_share"],
            "probe": c["probe_share"],
            "difference": c["share_difference"],
            "ci": "[{:.2f},{:.2f}]".format(*c["share_difference_ci"]),
            "only_f": c["only_feature"],
            "only_p": c["only_probe"],
            "q": c["mcnemar_q"],
            "auroc_diff": c["mean_auroc_difference"],
            "auroc_ci": "[{:.3f},{:.3f}]".format(*c["mean_auroc_difference_ci"]),
        }
        for row in result["rows"]
        for method, c in row["comparisons"].items()
    ]
    print(pd.DataFrame(tests).round(3).to_string(index=False))
    target = result["target"]
    closest = target["closest"]
    print(
        f"target (a feature method's share >= the response probe's at the same layer): "
        f"{'MET by ' + str(target['met_by']) if target['met'] else 'NOT met'}; closest: "
        f"{closest['variant']} {closest['method']} {closest['feature_share']:.2f} vs "
        f"{closest['probe_share']:.2f} (difference {closest['share_difference']:+.2f} "
        f"[{closest['share_difference_ci'][0]:+.2f},{closest['share_difference_ci'][1]:+.2f}])"
    )
    seconds = result["seconds"]
    print(f"wall {seconds['wall']:.0f} s, CPU {seconds['cpu']:.0f} s (this process, all threads)")
    for step, wall in seconds["steps"].items():
        print(f"  {step}: wall {wall:.0f} s, CPU {seconds['cpu_steps'][step]:.0f} s")


def main(
    run: Annotated[Path, typer.Argument(help="a built run: config.yaml, transcripts.h5")],
    out: Annotated[Path, typer.Option(help="folder for the store, the SAEs and the JSON")],
    layers: Annotated[
        str, typer.Option(help="layers harvested, comma-separated")
    ] = "6,9,12,15,18,21",
    train_layers: Annotated[str, typer.Option(help="layers trained (empty: all)")] = "",
    tokens: Annotated[int, typer.Option(help="SAE budget per layer (0: the run's)")] = 0,
    width_factor: Annotated[int, typer.Option(help="one SAE this many times wider")] = 0,
    width_layer: Annotated[int, typer.Option(help="its layer (-1: best train CV share)")] = -1,
    with_run_saes: Annotated[bool, typer.Option(help="also score the run's own SAEs")] = False,
    sparse_features: int = 8,
    eval_transcripts: int = 8,
    n_bootstrap: int = 2000,
    seed: int = 0,
    atlas: AtlasOption = None,
    atlas_out: AtlasOutOption = None,
) -> None:
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    config = SweepConfig(
        layers=tuple(int(layer) for layer in layers.split(",")),
        train_layers=tuple(int(layer) for layer in train_layers.split(",") if layer),
        training_tokens=tokens,
        width_factor=width_factor, width_layer=width_layer, sparse_features=sparse_features,
        eval_transcripts=eval_transcripts, n_bootstrap=n_bootstrap, seed=seed,
    )  # fmt: skip
    started, cpu_started = time.perf_counter(), time.process_time()
    model = run_model_config(run)
    handle = load_model(model.source, model.device, model.dtype)

    def progress(step: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {step}", flush=True)

    reference = run if with_run_saes else None
    inputs = sweep_inputs(run)
    result = run_sweep(inputs, out, config, handle=handle, progress=progress, reference=reference)
    result["seconds"]["wall_with_loading"] = time.perf_counter() - started
    result["seconds"]["cpu_with_loading"] = time.process_time() - cpu_started
    result["seconds"]["threads"] = torch.get_num_threads()
    print_tables(result)
    path = out / "layer_sweep.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"wrote {path}")
    if atlas is not None:
        written = record_results(
            output_atlas(atlas, atlas_out), "layer_sweep", sweep_tables(result),
            sweep_summary(result), descriptions=SWEEP_DESCRIPTIONS, columns=SWEEP_COLUMNS,
            script="scripts/layer_sweep.py", config=result["config"],
            seconds=result["seconds"]["wall"],
        )  # fmt: skip
        print(f"recorded as experiments/layer_sweep in {written}")


if __name__ == "__main__":
    typer.run(main)
