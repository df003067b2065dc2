"""The puppeteer's causal test on a finished run: zero, resample, add and cap its puppeteer features
while the model plays personas, against matched random feature sets (same count, firing
frequency, activation scale, decoder norm), scored by the persona classifier's P(persona),
non-format assistant markers, the assistant-axis projection and KL (sae_atlas.stages.label.causal).

Prompts: the run's held-out personas first, then others, under held-out system prompts on
held-out questions. Prints the effects table and writes JSON (effects and per-answer scores).
With `--base PATH` (the pre-post-training base model, loaded like the tuned one: a Hugging Face
folder or id in the local cache, or a GGUF file) it also compares the features on identical
tokens (sae_atlas.stages.label.base_diff: base/tuned ratio in assistant vs user turns, against
the matched random sets) and writes that table under "base"; `--no-edits` runs only that.
With --atlas it also records them as that atlas's experiments/puppeteer_causal (--atlas-out: in
a copy of it; no stage rerun touches it).
Cost (defaults, quick atlas, 2 busy CPU cores): 10 personas x 4 questions x (1 + 4 x 6)
conditions = 1,000 answers of 32 tokens, about 15-30 minutes.

    python scripts/puppeteer_causal.py runs/quick-honest --out runs/bench/puppeteer_causal.json \
        --atlas runs/quick-honest/atlas.h5
"""

from __future__ import annotations

import json
import resource
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import typer

from feature_store.labels import load_labels
from sae_atlas.cli.options import AtlasOption, AtlasOutOption
from sae_atlas.config import CorpusConfig, load_config
from sae_atlas.errors import SaeAtlasError
from sae_atlas.model import ModelHandle, load_model
from sae_atlas.stages.dynamics.run_files import output_atlas
from sae_atlas.stages.label.base_diff import base_comparison, chat_responses
from sae_atlas.stages.label.causal import (
    causal_prompts,
    puppeteer_causal,
    run_keys,
    run_setup,
    tagged,
)
from sae_atlas.stages.label.edits import CAP_RULE, EDITS
from sae_atlas.stages.label.honest import RunInputs, run_inputs
from sae_atlas.stages.label.matched import matched_pools, matched_sets
from sae_atlas.stages.label.records import record_causal


def causal_part(
    inputs: RunInputs, handle: ModelHandle, sampling: CorpusConfig, chosen: np.ndarray,
    random_sets: np.ndarray, n_personas: int, n_questions: int, seed: int,
) -> dict[str, Any]:  # fmt: skip
    """The edits' effects table (printed) and the JSON entries of the causal test."""
    setup = run_setup(inputs, handle, sampling, 2048, seed)
    prompts = causal_prompts(inputs.catalogue, sampling, n_personas, n_questions)
    scored, effects = puppeteer_causal(setup, prompts, chosen, random_sets)
    print(effects.round(4).to_string(index=False))
    return {
        "edits": list(EDITS),
        "cap_rule": CAP_RULE,
        "n_prompts": len(prompts),
        "personas": sorted({p.persona for p in prompts}),
        "prompt_personas": [p.persona for p in prompts],
        "classifier_heldout_accuracy": setup.classifier.heldout_accuracy,
        "effects": effects.to_dict(orient="records"),
        "answers": scored.drop(columns="text").to_dict(orient="records"),
    }


def base_part(
    inputs: RunInputs, handle: ModelHandle, base: str, chosen: np.ndarray,
    random_sets: np.ndarray, n_responses: int, seed: int,
) -> dict[str, Any]:  # fmt: skip
    """The base comparison's table (printed) and its JSON entry."""
    config = load_config(str(inputs.path / "config.yaml"))
    base_handle = load_model(base, config.model.device, config.model.dtype)
    transcripts = chat_responses(inputs.path / "transcripts.h5", n_responses, seed)
    table = base_comparison(
        handle, base_handle, transcripts, inputs.hook, inputs.sae, chosen, random_sets, seed=seed
    )
    print(f"base {base} against {handle.model_id} on {len(transcripts)} held-out responses")
    print(table.round(4).to_string(index=False))
    return {"model": base, "n_responses": len(transcripts), "rows": table.to_dict("records")}


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
    base: Annotated[str, typer.Option(help="the base model, to compare on identical tokens")] = "",
    base_responses: Annotated[int, typer.Option(help="held-out responses compared")] = 200,
    edits: Annotated[bool, typer.Option(help="run the edits (--no-edits: base only)")] = True,
    seed: Annotated[int, typer.Option(help="seed of draws and sampling")] = 0,
    atlas: AtlasOption = None,
    atlas_out: AtlasOutOption = None,
) -> None:
    started = time.monotonic()
    pd.set_option("display.width", 200)
    config = load_config(str(run / "config.yaml"))
    inputs = run_inputs(run)
    handle = load_model(config.model.source, config.model.device, config.model.dtype)
    labels = load_labels(run / "labels.h5")
    chosen = np.array([int(f) for f in features.split(",")]) if features else tagged(labels, tag)
    if not len(chosen):
        raise SaeAtlasError(f"{run}: no feature tagged {tag!r}; pass --features")
    pools = matched_pools(run_keys(inputs, labels), chosen, neighbours)
    random_sets = matched_sets(pools, n_random, np.random.default_rng(seed))
    print(f"{len(chosen)} features ({tag or 'given'}): {chosen.tolist()}")
    result: dict[str, Any] = {
        "run": str(run),
        "features": chosen.tolist(),
        "random_sets": random_sets.tolist(),
        "heldout_personas": list(inputs.heldout_personas),
    }
    if edits:
        sampling = replace(config.corpus, max_new_tokens=max_new_tokens, seed=seed)
        result |= causal_part(
            inputs, handle, sampling, chosen, random_sets, n_personas, n_questions, seed
        )
    if base:
        result["base"] = base_part(inputs, handle, base, chosen, random_sets, base_responses, seed)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime
    result |= {"seconds": time.monotonic() - started, "cpu_seconds": cpu}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=float))
    print(f"wrote {out} ({result['seconds']:.0f} s, {result['cpu_seconds']:.0f} CPU s)")
    if atlas is not None:
        settings = {"run": str(run), "tag": tag, "n_personas": n_personas,
                    "n_questions": n_questions, "n_random": n_random, "neighbours": neighbours,
                    "max_new_tokens": max_new_tokens, "base": base, "seed": seed}  # fmt: skip
        written = record_causal(output_atlas(atlas, atlas_out), result, settings)
        print(f"recorded as experiments/puppeteer_causal in {written}")


if __name__ == "__main__":
    typer.run(main)
