"""Print an atlas's dynamics/ headline tables, with attractors at several noise thresholds.

The attractor set depends on the threshold below which a transition counts as noise; this
recomputes it from the stored trajectories at each --threshold (with the bootstrap over rollouts),
and the drift curves (raw and minus the default persona's rollout) with the current code.

    python scripts/dynamics_tables.py runs/dyn/atlas.h5 --threshold 0.05 --threshold 0.1
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from feature_store.atlas import Atlas
from sae_atlas.stages.dynamics import (
    attractor_robustness,
    baseline_rows,
    drift_curves,
    find_attractors,
    relative_to_baseline,
)


def main(
    atlas_path: Annotated[Path, typer.Argument(help="an atlas.h5 with dynamics/")],
    threshold: Annotated[list[float], typer.Option(help="noise thresholds")] = [0.05, 0.1],  # noqa: B006
    n_bootstrap: Annotated[int, typer.Option(help="resamples of the rollouts")] = 2000,
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
    for value in threshold:
        matrix, stationary, attractors = find_attractors(
            regions, meta["start"].tolist(), len(names), value
        )
        found, _ = attractor_robustness(regions, len(names), value, n_bootstrap)
        shares = dict(zip(names, stationary.round(3).tolist(), strict=True))
        print(f"\nthreshold {value}: stationary {shares}")
        for members, share in found.items():
            print(f"  found in {share:.3f} of resamples: {[names[r] for r in members]}")
        for attractor in attractors:
            basin = pd.DataFrame({"basin": attractor.basin, "relaxation": attractor.relaxation})
            print(f"  attractor {[names[r] for r in attractor.regions]}:")
            print(basin.round(2).T.to_string())
    print(f"\ntransition matrix\n{pd.DataFrame(matrix, names, names).round(3)}")
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
