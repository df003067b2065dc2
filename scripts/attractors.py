"""Attractors that mean something: long rollouts on a built run, their regions' flow and claims.

Runs the dynamics stage's natural rollouts at a larger size (by default 8 turns, 4 seeds, 10
starting personas with the system prompt kept and given once, 4 scenes, 6 self-talk openers; 40
new tokens a turn) on the regions' multi-turn centroids (calibration chats of the same length),
then the flow tables per condition: each region's gain and hold against the permuted-turn null
with bootstrap intervals over rollouts, BH q-values and the attractor claims, the transition
probabilities with intervals (no invented self-loops, no edge filter), the stationary
distribution and P(back in the assistant region after k turns). Records them as the atlas's
experiments/attractors (described tables and the summary; --atlas-out: in a copy; no stage rerun
touches it) and prints and writes (--json) the JSON summary. Runs niced on one thread; ~20-30
min on 2 shared cores with the defaults (the sampling: every turn re-reads its conversation).

    nice -n 10 python scripts/attractors.py /work/runs/quick --atlas-out /tmp/atlas.h5 \
        --json /tmp/attractors.json
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import pandas as pd
import torch
import typer

from sae_atlas.cli.options import AtlasOption, AtlasOutOption, JsonOption, RunArgument
from sae_atlas.config import DynamicsConfig
from sae_atlas.model import load_model
from sae_atlas.stages.base import json_ready
from sae_atlas.stages.dynamics.experiments import NaturalDynamics, prepare_experiments
from sae_atlas.stages.dynamics.run_files import output_atlas, run_model_config
from sae_atlas.stages.dynamics.tables import COLUMNS, DESCRIPTIONS
from sae_atlas.stages.record import record_results

CLAIM_COLUMNS = ["experiment", "region_name", "start_share", "end_share", "gain", "gain_low",
                 "gain_q", "hold", "hold_null", "hold_excess_low", "hold_q", "stationary",
                 "no_exit", "attractor"]  # fmt: skip


def main(
    run: RunArgument,
    atlas: AtlasOption = None,
    atlas_out: AtlasOutOption = None,
    json_out: JsonOption = None,
    n_turns: int = 8,
    seeds: int = 4,
    n_personas: int = 10,
    n_scenes: int = 4,
    n_self_talk: int = 6,
    n_regions: int = 8,
    calibration_chats: int = 2,
    max_new_tokens: int = 40,
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> None:
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    model_config = run_model_config(run)
    config = DynamicsConfig(
        n_personas=n_personas, seeds=seeds, n_turns=n_turns, n_scenes=n_scenes,
        n_self_talk=n_self_talk, n_regions=n_regions, calibration_chats=calibration_chats,
        max_new_tokens=max_new_tokens, max_lag=n_turns - 1, n_bootstrap=n_bootstrap,
        seed=seed, dtype=model_config.dtype,
    )  # fmt: skip
    atlas = output_atlas(atlas or run / "atlas.h5", atlas_out)
    started = time.perf_counter()
    handle = load_model(model_config.source, model_config.device, model_config.dtype)
    experiments = prepare_experiments(handle, atlas, run / "sae", run / "transcripts.h5", config)
    natural = experiments.natural()
    seconds = time.perf_counter() - started
    summary = summarise(natural, config, seconds)
    record_results(
        atlas, "attractors", natural.entries(), summary, descriptions=DESCRIPTIONS,
        columns=COLUMNS, script="scripts/attractors.py", config=dataclasses.asdict(config),
        seconds=seconds,
    )  # fmt: skip
    pd.set_option("display.width", 220)
    flow = natural.flow["flow"]
    print(f"regions: {summary['regions']}")
    print(f"resolution (share placed in their own region):\n{natural.resolution.round(3)}")
    print(f"\nflow and claims\n{flow[CLAIM_COLUMNS].round(3).to_string()}")
    back = natural.flow["return_to_assistant"]
    print("\nP(back in the assistant region after k turns)")
    print(back.pivot(index=["experiment", "region_name"], columns="lag", values="p_return")
          .round(2).to_string())  # fmt: skip
    print(f"\n{len(natural.rollouts.regions)} rollouts in {seconds:.0f} s; written to {atlas}")
    if json_out is not None:
        json_out.write_text(json.dumps(summary, indent=1))


def summarise(natural: NaturalDynamics, config: DynamicsConfig, seconds: float) -> dict:
    """The JSON summary: config, regions with their personas, resolution, claims, counts."""
    flow = natural.flow["flow"]
    return json_ready(
        {
            "config": dataclasses.asdict(config),
            "seconds": seconds,
            "regions": dict(zip(natural.pmap.names, map(list, natural.pmap.members), strict=True)),
            "rollouts": natural.rollouts.meta.groupby("experiment").size().to_dict(),
            "resolution": natural.resolution.to_dict("records"),
            "attractors": flow.loc[flow["attractor"], CLAIM_COLUMNS].to_dict("records"),
            "no_exit": flow.loc[
                flow["no_exit"] & (flow["occupancy"] > 0), ["experiment", "region_name"]
            ].to_dict("records"),
            "flow": flow.to_dict("records"),
        }
    )


if __name__ == "__main__":
    typer.run(main)
