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
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from feature_store.activations import ActivationStore
from feature_store.schema import ROLE_CODE
from feature_store.transcripts import TranscriptStore
from sae_atlas.config import HarvestConfig, LabelConfig
from sae_atlas.model import load_model, resid_hook
from sae_atlas.sae import load_sae
from sae_atlas.stages.corpus import SAMPLED_CONDITIONS
from sae_atlas.stages.harvest import harvest
from sae_atlas.stages.label import (
    DECODERS,
    HELDOUT,
    TRAIN,
    Responses,
    best_features,
    catalogue_from_corpus,
    contrast,
    fit_decoder,
    open_store,
    paired_rows,
    persona_decoder,
    question_folds,
    response_statistics,
)
from sae_atlas.stats import auroc

HEADER = "header"
"""A statistic of the assistant header, not of response tokens: reported, never chosen."""
HEADER_RESIDUAL = "header_residual"
RAW = ("residual", HEADER_RESIDUAL)
"""Raw residual means (no SAE), of the response tokens and of the assistant header."""
DECODED = ("mean", "max", "rate", "first16", "residual")
"""The statistics decoders are fitted on (each fit costs seconds)."""
DECODER_FOLDS = 4
"""Folds of the grouped cross-validations over train questions (folds never share a question)."""
LDA_MAX_DIM = 1024
"""Shrinkage LDA only up to this many dimensions (a fit on 2,304 SAE features costs ~45 s)."""


def within_train(responses: Responses, held: np.ndarray) -> Responses:
    """`responses` with the train questions in `held` as the held-out split and the rest of the
    train questions as train; held-out questions are dropped (split -1)."""
    split = np.full(len(responses), -1, dtype=np.int64)
    train = responses.split == TRAIN
    split[train] = TRAIN
    split[train & np.isin(responses.question, held)] = HELDOUT
    return replace(responses, split=split)


def first_questions(responses: Responses, k: int) -> Responses:
    """`responses` keeping only the first k train questions (sorted ids) in the train split."""
    keep = np.unique(responses.question[responses.split == TRAIN])[:k]
    dropped = (responses.split == TRAIN) & ~np.isin(responses.question, keep)
    return replace(responses, split=np.where(dropped, -1, responses.split))


# ---------------------------------------------------------------------------- AUROC


def auroc_share(values: np.ndarray, responses: Responses, config: LabelConfig) -> dict[str, Any]:
    """The labeling pass's best feature per persona (chosen on train) and its held-out AUROC;
    the share at >= 0.9; the best held-out AUROC of any feature (a ceiling, not a choice)."""
    result = contrast(values, responses, config)
    best = best_features(result, responses)
    heldout = {responses.names[p]: float(result.heldout_auroc[p, f]) for p, f in best.items()}
    oracle = {responses.names[p]: float(np.nanmax(result.heldout_auroc[p])) for p in best}
    return {
        "share": float(np.mean([v >= 0.9 for v in heldout.values()])),
        "median": float(np.median(list(heldout.values()))),
        "oracle_share": float(np.mean([v >= 0.9 for v in oracle.values()])),
        "heldout": heldout,
        "oracle": oracle,
        "train": {responses.names[p]: float(result.train_auroc[p, f]) for p, f in best.items()},
    }


def auroc_cv(values: np.ndarray, responses: Responses, config: LabelConfig) -> float:
    """The share of personas at AUROC >= 0.9 when the feature is chosen on half of the train
    questions and scored on the other half, averaged over both halves (train data only)."""
    folds = question_folds(responses.question[responses.split == TRAIN], 2)
    shares = [auroc_share(values, within_train(responses, held), config)["share"] for held in folds]
    return float(np.mean(shares))


# ---------------------------------------------------------------------------- ceilings


PROBE_C = (0.01, 0.1, 1.0)
"""L2 strengths of the persona-vs-default probes; one per input, chosen by CV on train questions."""
PROBES = {
    "residual": "residual mean over response tokens (no SAE)",
    "sae": "SAE response mean, every feature",
    "text": "response token n-grams (TF-IDF, 1-2)",
    HEADER_RESIDUAL: "residual mean over the assistant header (no SAE)",
}


def response_texts(store: ActivationStore, responses: Responses) -> np.ndarray:
    """Each response's assistant token ids as one string of words ("t123 t45 ..."), for a text
    probe that needs no tokenizer."""
    table = store.token_table()
    provenance = store.provenance()
    start = provenance["token_start"].to_numpy()
    count = provenance["token_count"].to_numpy()
    texts = []
    for doc in responses.doc:
        rows = slice(start[doc], start[doc] + count[doc])
        ids = table["token_id"][rows][table["role"][rows] == ROLE_CODE["assistant"]]
        texts.append(" ".join(f"t{token}" for token in ids))
    return np.array(texts, dtype=object)


def probe_scores(
    values: np.ndarray, fit: np.ndarray, labels: np.ndarray, score: np.ndarray, c: float
) -> np.ndarray:
    """Decision values on rows `score` of an L2 logistic probe fitted on rows `fit` with binary
    `labels`: standardised features, or TF-IDF n-grams when `values` holds texts."""
    if values.dtype == object:
        model = make_pipeline(
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"\S+"),
            LogisticRegression(C=c, max_iter=2000),
        )
    else:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
    return model.fit(values[fit], labels).decision_function(values[score])


def probe_auroc(
    values: np.ndarray, responses: Responses, p: int, fit_split: int, score_split: int, c: float
) -> float:
    """Held-out AUROC of persona p against the default (same questions) of a probe fitted on
    `fit_split` and scored on `score_split`."""
    fit, fit_default = paired_rows(responses, responses.persona, p, fit_split)
    score, score_default = paired_rows(responses, responses.persona, p, score_split)
    if min(len(fit), len(fit_default), len(score), len(score_default)) < 2:
        return float("nan")
    labels = np.r_[np.ones(len(fit)), np.zeros(len(fit_default))]
    decision = probe_scores(values, np.r_[fit, fit_default], labels, np.r_[score, score_default], c)
    return auroc(decision[: len(score)], decision[len(score) :])


def linear_ceiling(values: np.ndarray, responses: Responses) -> dict[str, Any]:
    """What any linear read of `values` can do, persona by persona: an L2 logistic probe of each
    persona against the default, fitted on train questions (C chosen by the mean AUROC of a
    2-fold CV over train questions) and scored on held-out ones; the share at AUROC >= 0.9.
    On the residual mean it shows what the response tokens carry linearly: a guide to what one
    feature can reach, not a strict bound (a feature is nonlinear per token before its mean)."""
    personas = [p for p in range(len(responses.names)) if p != responses.default]
    folds = question_folds(responses.question[responses.split == TRAIN], 2)

    def cv(c: float) -> float:
        scores = []
        for held in folds:
            inner = within_train(responses, held)
            scores += [probe_auroc(values, inner, p, TRAIN, HELDOUT, c) for p in personas]
        return float(np.nanmean(scores))

    c = max(PROBE_C, key=cv)
    heldout = {
        responses.names[p]: probe_auroc(values, responses, p, TRAIN, HELDOUT, c) for p in personas
    }
    scored = np.array([v for v in heldout.values() if not np.isnan(v)])
    return {
        "c": c,
        "share": float(np.mean(scored >= 0.9)),
        "median": float(np.median(scored)),
        "heldout": heldout,
    }


# ---------------------------------------------------------------------------- decoding


def fitted(name: str, values: np.ndarray, labels: np.ndarray) -> Any:
    """predict(x) of a decoder fitted on values [n, d] with labels [n]: the labeling pass's
    candidates (sae_atlas.stages.label.fit_decoder), nearest centroid on standardised features, or
    shrinkage LDA on standardised features."""
    if name == "centroid_std":
        scaler = StandardScaler().fit(values)
        predict = fit_decoder("centroid", scaler.transform(values), labels)
        return lambda x: predict(scaler.transform(x))
    if name == "lda":
        model = make_pipeline(
            StandardScaler(), LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")
        )
        return model.fit(values, labels).predict
    return fit_decoder(name, values, labels)


CANDIDATES = (DECODERS[0], "centroid_std", "lda", *DECODERS[1:])


def say(text: str) -> None:
    print(text, flush=True)


def decoder_scores(values: np.ndarray, responses: Responses) -> dict[str, dict[str, float]]:
    """Per decoder: grouped CV accuracy on train questions and held-out accuracy (fit on all
    train responses)."""
    labels = responses.persona
    train = responses.split == TRAIN
    heldout = responses.split == HELDOUT
    out = {}
    for name in CANDIDATES:
        if name == "lda" and values.shape[1] > LDA_MAX_DIM:
            continue
        correct = []
        for held in question_folds(responses.question[train], DECODER_FOLDS):
            test = train & np.isin(responses.question, held)
            fit = train & ~test
            predict = fitted(name, values[fit], labels[fit])
            correct.append(predict(values[test]) == labels[test])
        predict = fitted(name, values[train], labels[train])
        out[name] = {
            "cv": float(np.concatenate(correct).mean()),
            "heldout": float((predict(values[heldout]) == labels[heldout]).mean()),
        }
    return out


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
    hook = str(sae.cfg.metadata.hook_name)
    catalogue = catalogue_from_corpus(args.run / "transcripts.h5")
    responses, stats = response_statistics(store, sae, hook, catalogue)
    seconds = {"pass": time.monotonic() - started}
    say(f"statistics of {len(responses)} responses: {seconds['pass']:.0f} s")
    config = LabelConfig()
    n_classes = len(np.unique(responses.persona[responses.split == TRAIN]))
    labeling_pass = persona_decoder(stats["mean"], responses)
    say(f"the labeling pass's decoder: {time.monotonic() - started:.0f} s")

    started = time.monotonic()
    auroc = {}
    for name, values in stats.items():
        if name in RAW:
            continue
        auroc[name] = {"cv_share": auroc_cv(values, responses, config)}
        auroc[name].update(auroc_share(values, responses, config))
    chosen_statistic = max(
        (name for name in auroc if name != HEADER), key=lambda name: auroc[name]["cv_share"]
    )
    seconds["auroc"] = time.monotonic() - started
    say(f"AUROC shares: {seconds['auroc']:.0f} s")

    started = time.monotonic()
    inputs = {
        "residual": stats["residual"],
        "sae": stats["mean"],
        "text": response_texts(store, responses),
        HEADER_RESIDUAL: stats[HEADER_RESIDUAL],
    }
    ceilings = {name: linear_ceiling(inputs[name], responses) for name in PROBES}
    seconds["ceilings"] = time.monotonic() - started
    say(f"linear ceilings: {seconds['ceilings']:.0f} s")

    started = time.monotonic()
    decoding = {}
    for name in DECODED:
        decoding[name] = decoder_scores(stats[name], responses)
        say(f"decoders on {name}: {time.monotonic() - started:.0f} s")
    cv_best = max(
        ((s, d) for s in decoding for d in decoding[s] if s != "residual"),
        key=lambda key: decoding[key[0]][key[1]]["cv"],
    )
    seconds["decoding"] = time.monotonic() - started

    started = time.monotonic()
    curve = []
    n_train = len(np.unique(responses.question[responses.split == TRAIN]))
    for k in sorted({*(2**i for i in range(1, n_train.bit_length())), n_train}):
        subset = first_questions(responses, k)
        values = stats[cv_best[0]]
        train, heldout = subset.split == TRAIN, subset.split == HELDOUT
        predict = fitted(cv_best[1], values[train], subset.persona[train])
        curve.append(
            {
                "train_questions": k,
                "decoder_heldout": float(
                    (predict(values[heldout]) == subset.persona[heldout]).mean()
                ),
                "centroid_mean_heldout": float(
                    (
                        fitted("centroid", stats["mean"][train], subset.persona[train])(
                            stats["mean"][heldout]
                        )
                        == subset.persona[heldout]
                    ).mean()
                ),
                "auroc_share_mean": auroc_share(stats["mean"], subset, config)["share"],
                f"auroc_share_{chosen_statistic}": auroc_share(
                    stats[chosen_statistic], subset, config
                )["share"],
            }
        )
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
