"""The puppeteer's causal test on a finished run: zero, resample and add its puppeteer features
while the model plays personas, against matched random feature sets (same count, firing
frequency, activation scale, decoder norm), scored by the persona classifier's P(persona),
non-format assistant markers, the assistant-axis projection and KL (sae_atlas.stages.label.causal).

Prompts: the run's held-out personas first, then others, under held-out system prompts on
held-out questions. Prints the effects table and writes JSON (effects and per-answer scores);
with --atlas, also records them as that atlas's experiments/puppeteer_causal (--atlas-out: in a
copy of it; no stage rerun touches it). Cost (defaults, quick atlas, 2 busy CPU cores): 10
personas x 4 questions x (1 + 3 x 6) conditions = 760 answers of 32 tokens, about 10-20 minutes.

    python scripts/puppeteer_causal.py runs/quick-honest --out runs/bench/puppeteer_causal.json \
        --atlas runs/quick-honest/atlas.h5
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import typer

from sae_atlas.config import load_config
from sae_atlas.errors import SaeAtlasError
from sae_atlas.model import load_model
from sae_atlas.stages.dynamics.run_files import output_atlas
from sae_atlas.stages.label.causal import causal_prompts, puppeteer_causal, run_setup, tagged
from sae_atlas.stages.label.honest import run_inputs
from sae_atlas.stages.label.matched import matched_pools, matched_sets
from sae_atlas.stages.label.records import (
    CAUSAL_COLUMNS,
    CAUSAL_DESCRIPTIONS,
    CAUSAL_UNITS,
    causal_tables,
)
from sae_atlas.stages.record import record_results


def main(
    run: Annotated[Path, typer.Argument(help="a run folder whose label stage is complete")],
    out: Annotated[Path, typer.Option(help="JSON to write")] = Path("runs/bench/causal.json"),
    features: Annotated[str, typer.Option(help="comma-separated ids (default: tag)")] = "",
    tag: Annotated[str, typer.Option(help="the tag whose features are edited")] = "puppeteer",
    n_personas: Annotated[int, typer.Option(help="personas played")] = 10,
    n_questions: Annotated[int, typer.Option(help="held-out questions per persona")] = 4,
    n_random: Annotated[int, typer.Option(help="matched random feature sets")] = 5,
    neighbours: Annotated[int, typer.Option(help="matched candidates per feature")] = 50,
    max_new_tokens: Annotated[int, typer.Option(help="tokens per answer")] = 32,
    seed: Annotated[int, typer.Option(help="seed of draws and sampling")] = 0,
    atlas: Annotated[Path | None, typer.Option(help="atlas to record the test in")] = None,
    atlas_out: Annotated[
        Path | None, typer.Option(help="record in a copy of --atlas written here")
    ] = None,
) -> None:
    started = time.monotonic()
    config = load_config(str(run / "config.yaml"))
    inputs = run_inputs(run)
    handle = load_model(config.model.source, config.model.device, config.model.dtype)
    sampling = replace(config.corpus, max_new_tokens=max_new_tokens, seed=seed)
    setup, labels, keys = run_setup(inputs, handle, sampling, 2048, seed)
    chosen = np.array([int(f) for f in features.split(",")]) if features else tagged(labels, tag)
    if not len(chosen):
        raise SaeAtlasError(f"{run}: no feature tagged {tag!r}; pass --features")
    pools = matched_pools(keys, chosen, neighbours)
    random_sets = matched_sets(pools, n_random, np.random.default_rng(seed))
    prompts = causal_prompts(inputs.catalogue, config.corpus, n_personas, n_questions)
    scored, effects = puppeteer_causal(setup, prompts, chosen, random_sets)
    pd.set_option("display.width", 200)
    print(f"{len(chosen)} features ({tag or 'given'}): {chosen.tolist()}")
    print(effects.round(4).to_string(index=False))
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "run": str(run),
        "features": chosen.tolist(),
        "random_sets": random_sets.tolist(),
        "n_prompts": len(prompts),
        "personas": sorted({p.persona for p in prompts}),
        "heldout_personas": list(inputs.heldout_personas),
        "classifier_heldout_accuracy": setup.classifier.heldout_accuracy,
        "effects": effects.to_dict(orient="records"),
        "answers": scored.drop(columns="text").to_dict(orient="records"),
        "seconds": time.monotonic() - started,
    }
    out.write_text(json.dumps(result, indent=1, default=float))
    print(f"wrote {out} ({result['seconds']:.0f} s)")
    if atlas is not None:
        tables = causal_tables(effects, scored, [p.persona for p in prompts], chosen, random_sets)
        summary = {k: v for k, v in result.items() if k not in ("answers", "random_sets")}
        settings = {"run": str(run), "tag": tag, "n_personas": n_personas,
                    "n_questions": n_questions, "n_random": n_random, "neighbours": neighbours,
                    "max_new_tokens": max_new_tokens, "seed": seed}  # fmt: skip
        written = record_results(
            output_atlas(atlas, atlas_out), "puppeteer_causal", tables, summary,
            descriptions=CAUSAL_DESCRIPTIONS, columns=CAUSAL_COLUMNS, units=CAUSAL_UNITS,
            script="scripts/puppeteer_causal.py", config=settings, seconds=result["seconds"],
        )  # fmt: skip
        print(f"recorded as experiments/puppeteer_causal in {written}")


if __name__ == "__main__":
    typer.run(main)
