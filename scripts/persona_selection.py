"""Persona selection at the assistant header: decoding by position, header patching, relaxation.

On a built run: per persona (6 by default, spread over categories) x 5 system-prompt variants x
6 questions, and the default persona's 5 neutral prompts on the same questions, samples 24
response tokens; decodes the persona at every position class (system prompt, user turn, each
header token, response tokens 1..24) from the residual and the SAE's codes, cross-fitted over
variants and questions; patches the header residual (after the atlas's hook layer) of persona runs
into default runs and back, against patches at the last user tokens and another persona's
header, scored by the corpus persona classifier and the persona's SAE features; and measures how
fast the assistant-axis gap relaxes along the response. Records the tables and the summary as the
atlas's experiments/selection (--atlas-out: in a copy; no stage rerun touches it), writes the
JSON summary (--json) and prints the headline tables. ~15-25 min on 2 shared cores with the
defaults.

    nice -n 10 python scripts/persona_selection.py /work/runs/quick --atlas-out /tmp/atlas.h5 \
        --json /tmp/selection.json

The relaxation alone, on longer responses (no patched runs; the grid's persona and default runs
read to 64 tokens; the relaxation table reports a gap that does not halve as censored, "> n"):

    OMP_NUM_THREADS=1 nice -n 10 python scripts/persona_selection.py runs/quick --no-patching \
        --n-response 64 --n-personas 6 --n-variants 4 --n-questions 12 \
        --atlas-out /tmp/atlas.h5 --json /tmp/relaxation.json
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import time
from typing import Annotated

import pandas as pd
import torch
import typer

from sae_atlas.cli.options import AtlasOption, AtlasOutOption, JsonOption, RunArgument
from sae_atlas.model import load_model
from sae_atlas.stages.dynamics.run_files import output_atlas, run_model_config
from sae_atlas.stages.record import record_results
from sae_atlas.stages.selection import SelectionConfig, run_selection
from sae_atlas.stages.selection.tables import COLUMNS, DESCRIPTIONS, selection_summary


def main(
    run: RunArgument,
    atlas: AtlasOption = None,
    atlas_out: AtlasOutOption = None,
    json_out: JsonOption = None,
    personas: Annotated[list[str] | None, typer.Option(help="personas (default: spread)")] = None,
    n_personas: int = 6,
    n_variants: int = 5,
    n_questions: int = 6,
    n_response: int = 24,
    layer: Annotated[int | None, typer.Option(help="patch layer (default: the hook's)")] = None,
    patching: Annotated[bool, typer.Option(help="patched runs (--no-patching: skip)")] = True,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> None:
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    model = run_model_config(run)
    config = SelectionConfig(
        personas=tuple(personas or ()), n_personas=n_personas, n_variants=n_variants,
        n_questions=n_questions, max_new_tokens=n_response, layer=layer, patching=patching,
        dtype=model.dtype, n_bootstrap=n_bootstrap, seed=seed,
    )  # fmt: skip
    atlas = output_atlas(atlas or run / "atlas.h5", atlas_out)
    started = time.perf_counter()
    handle = load_model(model.source, model.device, model.dtype)
    result = run_selection(handle, run, config)
    record = dataclasses.asdict(config)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    summary = selection_summary(result, record) | {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
    }
    tables = {name: table for name, table in result.tables.items() if len(table.columns)}
    record_results(
        atlas, "selection", tables, summary, descriptions=DESCRIPTIONS, columns=COLUMNS,
        script="scripts/persona_selection.py", config=record, seconds=summary["seconds"],
    )  # fmt: skip
    print_headlines(result.tables, result.header)
    print(f"\n{summary['seconds']:.0f} s ({summary['cpu_seconds']:.0f} CPU s); written to {atlas}")
    if json_out is not None:
        json_out.write_text(json.dumps(summary, indent=1))


RELAXATION_COLUMNS = [
    "condition", "persona", "n_tokens", "relaxation", "censored", "gap_first", "gap_last",
    "retained", "retained_low", "retained_high", "slope", "slope_low", "slope_high", "slope_q",
]  # fmt: skip


def print_headlines(tables: dict[str, pd.DataFrame], header: int) -> None:
    """Decoding at the key positions, header gains, patching contrasts, relaxation lengths."""
    pd.set_option("display.width", 220)
    decoding = tables["decoding"]
    keys = ["system", "user", *(f"header_{i}" for i in range(header)), "response_1", "response_8"]
    wide = decoding[decoding["position"].isin(keys)].pivot(
        index=["source", "persona"], columns="position", values="auroc"
    )[[k for k in keys if k in set(decoding["position"])]]
    print(f"decoding AUROC (cross-fitted)\n{wide.round(2).to_string()}")
    print(f"\nheader gain over the user turn\n{tables['header_gain'].round(3).to_string()}")
    patching = tables["patching"]
    if len(patching):
        print(f"\npatching\n{patching.round(3).to_string()}")
    relaxation = tables["relaxation"][RELAXATION_COLUMNS]
    print(f"\nrelaxation (half-gap length, tokens)\n{relaxation.round(3).to_string()}")


if __name__ == "__main__":
    typer.run(main)
