"""What limits the labeling pass's two headline figures, and what a choice made on train questions
buys: the share of personas whose best feature reaches held-out AUROC >= 0.9 against the default,
and persona decoding from SAE profiles on held-out responses.

Reads a finished run (activations.h5, sae/, transcripts.h5 for the catalogue; nothing is written
there) and makes one SAE pass over its sampled responses (sae_atlas.stages.label's
response_statistics) that keeps, per response and feature, several response-level statistics:
the mean over its tokens (what `sae-atlas label` uses), the maximum, the firing rate, the mean
over its first N tokens; apart from these, the mean over the response's assistant header
(`header`: the template tokens where the model selects its persona, DESIGN.md), whose share is
reported but never chosen; and the raw residual mean (no SAE) over the response and over its
header.
Then, for each statistic:
- AUROC: the labeling pass's own contrast and best-feature rule (sae_atlas.stages.label.contrast,
  best_features), giving the share of personas at held-out AUROC >= 0.9; the same rule
  cross-validated inside the train questions (choose on half of them, score on the other half)
  is the figure a statistic is chosen by. The best held-out AUROC of any feature ("oracle") is a
  ceiling for diagnosis only, never a choice.
- Decoding: nearest centroid on unit-normalised response means (a labeling-pass candidate, the
  baseline), nearest centroid on standardised features, L2 logistic regression on standardised
  features and (on the residual only: a fit on SAE features costs ~45 s) shrinkage LDA; the
  decoder, statistic and regularisation are chosen by accuracy in a grouped cross-validation
  over train questions (folds never share a question) and only then scored on held-out
  questions.
- Linear ceilings, persona by persona: an L2 logistic probe of each persona against the default
  (fitted on train questions, C chosen by CV inside them, scored on held-out ones) on the raw
  residual mean of the response (no SAE: what any linear read of the response's mean can do;
  not a strict bound on one feature, which is nonlinear per token before its mean), on every
  SAE feature together, on the response's token n-grams (what the behaviour shows) and on the
  residual mean over the assistant header; the share of personas at AUROC >= 0.9 of each,
  beside the best feature's.
- A learning curve over the number of train questions (2, 4, 8, ... up to the run's) for the
  chosen decoder and the AUROC share: what more questions per persona would buy.

The analysis is sae_atlas.stages.label.targets; this script runs it and prints the tables.
Prints the tables and writes runs/bench/label_targets.json. With --layers, instead: harvests
the run's sampled responses at those layers (one pass, into --scratch) and decodes personas from
the raw residual mean at each (no SAE), to see which layer carries the persona.

    .venv/bin/python scripts/label_targets.py --run runs/quick
    .venv/bin/python scripts/label_targets.py --run runs/quick --layers 5 10 15 20 \
        --out runs/bench/label_targets_layers.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from feature_store.transcripts import TranscriptStore
from sae_atlas.config import HarvestConfig, LabelConfig
from sae_atlas.model import load_model, resid_hook
from sae_atlas.sae import load_sae
from sae_atlas.stages.corpus import SAMPLED_CONDITIONS
from sae_atlas.stages.harvest import harvest
from sae_atlas.stages.label import (
    TRAIN,
    catalogue_from_corpus,
    open_store,
    persona_decoder,
    response_statistics,
)
from sae_atlas.stages.label.targets import (
    HEADER,
    PROBES,
    auroc_table,
    decoder_scores,
    decoding_table,
    learning_curve,
    linear_ceilings,
    response_texts,
)


def say(text: str) -> None:
    print(text, flush=True)


# ---------------------------------------------------------------------------- layers


def layer_decoding(args: argparse.Namespace) -> dict[str, Any]:
    """Persona decoding from the raw residual mean of each response at each of args.layers (no
    SAE: which layer carries the persona), from one harvest of the run's sampled transcripts
    into args.scratch."""
    catalogue = catalogue_from_corpus(args.run / "transcripts.h5")
    corpus = TranscriptStore(args.run / "transcripts.h5")
    transcripts = [t for t in corpus if t.condition in SAMPLED_CONDITIONS]
    hooks = tuple(resid_hook(layer) for layer in args.layers)
    started = time.monotonic()
    handle = load_model(corpus.model)
    harvested = harvest(transcripts, args.scratch, HarvestConfig(hooks=hooks), handle=handle)
    store = open_store(args.scratch)
    rows = []
    for layer, hook in zip(args.layers, hooks, strict=True):
        responses, stats = response_statistics(store, None, hook, catalogue)
        scores = decoder_scores(stats["residual"], responses)
        chosen = max(scores, key=lambda name: scores[name]["cv"])
        rows.append(
            {
                "layer": layer,
                "centroid_heldout": scores["centroid"]["heldout"],
                "chosen": chosen,
                **scores[chosen],
            }
        )
        say(f"layer {layer}: {rows[-1]}")
    return {
        "run": str(args.run),
        "layers": rows,
        "harvest_seconds": harvested.seconds,
        "tokens": harvested.n_tokens,
        "seconds": time.monotonic() - started,
    }


def report_layers(result: dict[str, Any]) -> None:
    print("Raw residual mean per response, by layer (no SAE); decoder chosen by CV on train")
    print("| layer | centroid held-out | chosen decoder | CV (train) | held-out |")
    print("|-------|-------------------|----------------|------------|----------|")
    for row in result["layers"]:
        print(
            f"| {row['layer']:>5} | {row['centroid_heldout']:>17.3f} | {row['chosen']:<14} | "
            f"{row['cv']:>10.3f} | {row['heldout']:>8.3f} |"
        )
    print(f"harvest: {result['tokens']:,} tokens in {result['harvest_seconds']:.0f} s")


# ---------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    store = open_store(args.run / "activations.h5")
    sae = load_sae(next((args.run / "sae").iterdir()))
    catalogue = catalogue_from_corpus(args.run / "transcripts.h5")
    responses, stats = response_statistics(store, sae, str(sae.cfg.metadata.hook_name), catalogue)
    seconds = {"pass": time.monotonic() - started}
    say(f"statistics of {len(responses)} responses: {seconds['pass']:.0f} s")
    config = LabelConfig()
    n_classes = len(np.unique(responses.persona[responses.split == TRAIN]))
    labeling_pass = persona_decoder(stats["mean"], responses)
    say(f"the labeling pass's decoder: {time.monotonic() - started:.0f} s")

    started = time.monotonic()
    auroc, chosen_statistic = auroc_table(stats, responses, config)
    seconds["auroc"] = time.monotonic() - started
    say(f"AUROC shares: {seconds['auroc']:.0f} s")
    started = time.monotonic()
    ceilings = linear_ceilings(stats, response_texts(store, responses), responses)
    seconds["ceilings"] = time.monotonic() - started
    say(f"linear ceilings: {seconds['ceilings']:.0f} s")
    started = time.monotonic()
    decoding, cv_best = decoding_table(stats, responses, say)
    seconds["decoding"] = time.monotonic() - started
    started = time.monotonic()
    curve = learning_curve(stats, responses, config, cv_best, chosen_statistic)
    seconds["curve"] = time.monotonic() - started
    return {
        "run": str(args.run),
        "n_responses": len(responses),
        "n_classes": n_classes,
        "chance": 1 / n_classes,
        "baseline": {
            "auroc_share": auroc["mean"]["share"],
            "decoder_accuracy": labeling_pass["candidates"]["centroid"],
        },
        "labeling_pass_decoder": labeling_pass,
        "auroc": auroc,
        "auroc_chosen_statistic": chosen_statistic,
        "ceilings": ceilings,
        "decoding": decoding,
        "decoder_chosen": {
            "statistic": cv_best[0],
            "decoder": cv_best[1],
            **decoding[cv_best[0]][cv_best[1]],
        },
        "curve": curve,
        "seconds": seconds,
    }


def report(result: dict[str, Any]) -> None:
    chance = result["chance"]
    print(
        f"responses: {result['n_responses']}, personas: {result['n_classes']}, chance {chance:.3f}"
    )
    print("\nShare of personas whose best feature (chosen on train) reaches held-out AUROC >= 0.9")
    print(f"| {'statistic':<9} | CV share (train) | held-out share | median | oracle share |")
    print(f"|{'-' * 11}|------------------|----------------|--------|--------------|")
    for name, row in result["auroc"].items():
        mark = " *" if name == result["auroc_chosen_statistic"] else ""
        print(
            f"| {name:<9} | {row['cv_share']:>16.3f} | {row['share']:>14.3f} | "
            f"{row['median']:>6.3f} | {row['oracle_share']:>12.3f} |{mark}"
        )
    print(
        "(* chosen by the CV share among response statistics; oracle: best held-out AUROC of any "
        f"feature, a ceiling; {HEADER}: the assistant header's tokens, never chosen)"
    )
    report_ceilings(result)
    print("\nPersona decoding: CV accuracy on train questions / held-out accuracy")
    decoders = list(result["decoding"]["residual"])
    print("| statistic | " + " | ".join(f"{d:>17}" for d in decoders) + " |")
    print("|-----------|" + "|".join("-" * 19 for _ in decoders) + "|")
    for name, row in result["decoding"].items():
        cells = " | ".join(
            (f"{row[d]['cv']:.3f} / {row[d]['heldout']:.3f}" if d in row else "-").rjust(17)
            for d in decoders
        )
        print(f"| {name:<9} | {cells} |")
    chosen = result["decoder_chosen"]
    print(
        f"\nchosen by CV (SAE statistics only): {chosen['decoder']} on {chosen['statistic']}: "
        f"held-out {chosen['heldout']:.3f} = {chosen['heldout'] / chance:.1f}x chance "
        f"(baseline centroid on mean: {result['baseline']['decoder_accuracy']:.3f} = "
        f"{result['baseline']['decoder_accuracy'] / chance:.1f}x)"
    )
    own = result["labeling_pass_decoder"]
    print(
        "the labeling pass's decoder (sae_atlas.stages.label.persona_decoder on the mean, each "
        f"held-out half scored by the candidate best on the other): {own['decoder']}: held-out "
        f"{own['accuracy']:.3f} = {own['accuracy'] / chance:.1f}x"
    )
    print("\nTrain questions per persona (held-out questions fixed):")
    keys = [k for k in result["curve"][0] if k != "train_questions"]
    print("| train questions | " + " | ".join(keys) + " |")
    for row in result["curve"]:
        cells = " | ".join(f"{row[k]:.3f}".rjust(len(k)) for k in keys)
        print(f"| {row['train_questions']:>15} | {cells} |")
    print(f"\nseconds: { {k: round(v, 1) for k, v in result['seconds'].items()} }")


def report_ceilings(result: dict[str, Any]) -> None:
    ceilings = result["ceilings"]
    print("\nPersona against the default, held-out AUROC: the best single feature (response mean,")
    print("chosen on train), the best of any feature (oracle), and linear probes fitted on train:")
    for name, text in PROBES.items():
        print(f"  {name}: {text}, C {ceilings[name]['c']}")
    names = list(PROBES)
    print("| persona              | feature | oracle | " + " | ".join(names) + " |")
    print(
        "|----------------------|---------|--------|"
        + "|".join("-" * (len(n) + 2) for n in names)
        + "|"
    )
    mean = result["auroc"]["mean"]
    for persona in sorted(mean["heldout"], key=lambda p: -ceilings["residual"]["heldout"][p]):
        cells = " | ".join(f"{ceilings[n]['heldout'][persona]:.2f}".rjust(len(n)) for n in names)
        print(
            f"| {persona:<20} | {mean['heldout'][persona]:>7.2f} | {mean['oracle'][persona]:>6.2f} "
            f"| {cells} |"
        )
    shares = " | ".join(f"{ceilings[n]['share']:.2f}".rjust(len(n)) for n in names)
    print(f"| {'share >= 0.9':<20} | {mean['share']:>7.2f} | {mean['oracle_share']:>6.2f} ", end="")
    print(f"| {shares} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/quick"), help="a finished run")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/label_targets.json"))
    parser.add_argument(
        "--layers",
        type=int,
        nargs="*",
        default=[],
        help="instead: harvest the run's responses at these layers and decode from the residual",
    )
    parser.add_argument(
        "--scratch",
        type=Path,
        default=Path("runs/bench/label_targets_layers.h5"),
        help="activation store of the layer harvest (reused when complete)",
    )
    args = parser.parse_args()
    if args.layers:
        result = layer_decoding(args)
        report_layers(result)
    else:
        result = run(args)
        report(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
