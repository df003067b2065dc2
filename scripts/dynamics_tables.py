"""Print an atlas's dynamics/ headline tables, the flow and attractor claims recomputed.

The flow tables (per rollout condition: gain, hold, their bootstrap intervals and permuted-turn
null, BH q-values, claims; return to the assistant region by lag) are recomputed from the stored
trajectories at --fdr with --n-bootstrap resamples, and the drift curves (raw and minus the
default persona's rollout) with the current code.

    python scripts/dynamics_tables.py runs/dyn/atlas.h5 --fdr 0.05
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from feature_store.atlas import Atlas
from sae_atlas.stages.dynamics import (
    baseline_rows,
    drift_curves,
    flow_tables,
    relative_to_baseline,
)

FLOW_COLUMNS = [
    "experiment",
    "region_name",
    "start_share",
    "end_share",
    "gain",
    "gain_low",
    "gain_q",
    "hold",
    "hold_null",
    "hold_excess_low",
    "hold_q",
    "stationary",
    "no_exit",
    "attractor",
]


def main(
    atlas_path: Annotated[Path, typer.Argument(help="an atlas.h5 with dynamics/")],
    fdr: Annotated[float, typer.Option(help="false discovery rate of the claims")] = 0.05,
    max_lag: Annotated[int, typer.Option(help="largest k of the return curves")] = 7,
    n_bootstrap: Annotated[int, typer.Option(help="resamples and permutations")] = 2000,
) -> None:
    pd.set_option("display.width", 200)
    with Atlas.open(atlas_path) as atlas:
        summary = json.loads(str(atlas.dynamics("summary")))
        trajectories = atlas.dynamics("trajectories").sort_values(["rollout", "turn"])
        tables = {n: atlas.dynamics(n) for n in ("steering", "kick", "markers", "trigger_scan")}
        default = atlas.default_persona()
        names = atlas.regions()["name"].tolist()
    n_turns = int(trajectories["turn"].max()) + 1
    regions = trajectories["region"].to_numpy().reshape(-1, n_turns)
    axis = trajectories["axis_projection"].to_numpy().reshape(-1, n_turns)
    meta = trajectories[trajectories["turn"] == 0].reset_index(drop=True)
    print(f"{len(regions)} rollouts x {n_turns} turns; regions {names}")
    flow = flow_tables(
        regions, meta, names, names.index("assistant"), max_lag, n_bootstrap, fdr, seed=0
    )
    claims = flow["flow"][FLOW_COLUMNS].round(3).to_string()
    print(f"\nflow (attractor claims at fdr {fdr})\n{claims}")
    back = flow["return_to_assistant"]
    back["value"] = [
        f"{p:.2f} [{lo:.2f}, {hi:.2f}] null {n:.2f}"
        for p, lo, hi, n in back[["p_return", "ci_low", "ci_high", "null"]].to_numpy()
    ]
    print("\nP(back in the assistant region after k turns) [95% CI], permuted-turn null")
    print(
        back.pivot(index=["experiment", "region_name"], columns="lag", values="value").to_string()
    )
    relative = relative_to_baseline(axis, meta["seed"].tolist(), baseline_rows(meta, default))
    for label, values in (("raw", axis), ("minus the default persona's rollout", relative)):
        curves = drift_curves(values, meta["group"].tolist())
        curves["value"] = [
            f"{m:.1f} [{lo:.1f}, {hi:.1f}]"
            for m, lo, hi in curves[["mean", "ci_low", "ci_high"]].to_numpy()
        ]
        print(f"\ndrift, {label} (95% CI)")
        print(curves.pivot(index="group", columns="turn", values="value").to_string())
    for name, table in tables.items():
        if name == "trigger_scan":
            table = table.groupby("wrapper")[["confirmed"]].agg(["size", "sum"])
        print(f"\n{name}\n{table.round(3).to_string()}")
    print("\nkick half-life (turns):", summary["kick_half_life"])
    print("steering strength", round(summary["steer_strength"], 2), "seconds", summary["seconds"])


if __name__ == "__main__":
    typer.run(main)
