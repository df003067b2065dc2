"""The layer sweep on honest splits: at each chosen layer, do the SAE's best features (chosen on
train) reach held-out AUROC 0.9 for as many personas as the residual probe does?

On a built run's corpus (its transcripts.h5 with its split plan: held-out system prompts, held-out
questions, held-out personas), `run_sweep` harvests the residual at every chosen layer in one
pass (the harvest stage), trains one SAE per layer with the train stage (the run's architecture,
width and token budget, or `SweepConfig.training_tokens` for every layer), optionally one SAE
`width_factor` times wider at one layer (chosen on train data: the best within-train CV share
of the mean pooling, unless given), and scores each SAE with `carry.carry_figures`: per method
the share of personas at held-out AUROC >= 0.9 with Wilson intervals, each feature method
against the residual probe of the same layer (paired over personas, McNemar, BH over every
comparison of the sweep), per persona AUROC differences with intervals over questions, and the
SAE's quality (held-out explained variance, L0, dead share; CE recovered with eval_transcripts).
The target: some feature method's share at least the response probe's at the same layer.

Cost: one harvest through the deepest layer (all of the corpus's tokens), one training per SAE
(the train stage's cost per token x the budget), one SAE pass over the store and about a minute
of fits per SAE; wall and CPU seconds (every thread of the process) per step are returned.
Outputs go under `out` (activations.h5; sae_<tokens>/ and sae_<tokens>_x<factor>/ per budget);
the run is only read.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from feature_store.activations import ActivationStore
from sae_atlas.config import HarvestConfig, LabelConfig, TrainConfig, load_config
from sae_atlas.errors import SaeAtlasError
from sae_atlas.model import ModelHandle, hook_layer, resid_hook
from sae_atlas.personas import Catalogue
from sae_atlas.sae import load_sae
from sae_atlas.stages.base import StepProgress, Stopwatch, json_ready
from sae_atlas.stages.harvest import harvest
from sae_atlas.stages.label.carry import carry_figures
from sae_atlas.stages.label.inputs import catalogue_from_corpus, heldout_personas_from_corpus
from sae_atlas.stages.label.statistics import response_statistics
from sae_atlas.stages.train import CARD_FILE, TrainResult, train_saes
from sae_atlas.stats import benjamini_hochberg


@dataclass(frozen=True)
class SweepConfig:
    """layers: residual layers (blocks.<L>.hook_resid_post) harvested, in one pass.
    train_layers: those an SAE is trained at (empty: every one of layers), so that sweeps with
    other budgets reuse one harvest. training_tokens: SAE budget per layer (0: the run's).
    width_factor: train one more SAE this many times wider (0 or 1: none) at width_layer (-1:
    the layer with the best within-train CV share of the mean pooling). sparse_features:
    features of the sparse probes (0: none).
    eval_transcripts: transcripts through the model for CE recovered per SAE (0: none).
    n_bootstrap / seed: the intervals' resampling."""

    layers: tuple[int, ...] = (6, 9, 12, 15, 18, 21)
    train_layers: tuple[int, ...] = ()
    training_tokens: int = 0
    width_factor: int = 0
    width_layer: int = -1
    sparse_features: int = 8
    eval_transcripts: int = 8
    n_bootstrap: int = 2000
    seed: int = 0


@dataclass(frozen=True)
class SweepInputs:
    """What a sweep reads of a built run: its corpus, the stage settings it was built with, the
    catalogue and held-out personas its corpus records."""

    transcripts: Path
    harvest: HarvestConfig
    train: TrainConfig
    label: LabelConfig
    catalogue: Catalogue | None
    heldout_personas: tuple[str, ...]


def sweep_inputs(run: str | Path) -> SweepInputs:
    """The SweepInputs of the run folder `run` (SaeAtlasError naming what is missing)."""
    run = Path(run)
    for name in ("config.yaml", "transcripts.h5"):
        if not (run / name).is_file():
            raise SaeAtlasError(f"{run}: no {name}; give a run folder `sae-atlas build` wrote")
    config = load_config(str(run / "config.yaml"))
    return SweepInputs(
        transcripts=run / "transcripts.h5",
        harvest=config.harvest,
        train=config.train,
        label=config.label,
        catalogue=catalogue_from_corpus(run / "transcripts.h5"),
        heldout_personas=heldout_personas_from_corpus(run / "transcripts.h5"),
    )


def sae_quality(card: dict[str, Any]) -> dict[str, Any]:
    """Held-out explained variance, L0, dead and dense shares and CE recovered (None when not
    evaluated) of a training card; its steps, tokens and training seconds."""
    evaluation = card.get("evaluation") or {}
    activations = evaluation.get("activations") or {}
    spliced = evaluation.get("spliced") or {}
    return {
        **{k: activations.get(k) for k in ("explained_variance", "l0", "dead_fraction")},
        "dense_fraction": activations.get("dense_fraction"),
        "ce_recovered_zero": spliced.get("ce_recovered_zero"),
        "train_steps": card["metrics"]["steps"],
        "train_tokens": card["data"]["tokens_trained"],
        "train_seconds": card["metrics"]["seconds"],
    }


def sae_figures(
    store: ActivationStore,
    trained: TrainResult,
    inputs: SweepInputs,
    config: SweepConfig,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One SAE's row (quality and carry_figures) and its per-persona table (JSON-ready)."""
    sae = load_sae(trained.path)
    responses, statistics = response_statistics(
        store, sae, trained.hook, inputs.catalogue, inputs.label.block_tokens
    )
    figures, table = carry_figures(
        statistics,
        responses,
        inputs.label,
        sparse_features=config.sparse_features,
        n_bootstrap=config.n_bootstrap,
        seed=config.seed,
    )
    table["heldout_persona"] = table.index.isin(inputs.heldout_personas)
    row = {"hook": trained.hook, "width": int(sae.cfg.d_sae), **sae_quality(trained.card)}
    return row | figures, json_ready(table.to_dict(orient="index"))


def sweep_train_config(train: TrainConfig, config: SweepConfig) -> TrainConfig:
    """The run's training settings with the sweep's budget and evaluation."""
    tokens = config.training_tokens or train.training_tokens
    return replace(train, training_tokens=tokens, eval_transcripts=config.eval_transcripts)


def width_layer(rows: list[dict[str, Any]], config: SweepConfig) -> int:
    """The layer of the wider SAE: config.width_layer, or the row with the best within-train
    CV share of the mean pooling (the first on ties)."""
    if config.width_layer >= 0:
        return config.width_layer
    return int(max(rows, key=lambda row: row["train_cv_share_mean"])["layer"])


def run_sweep(
    inputs: SweepInputs,
    out: str | Path,
    config: SweepConfig,
    *,
    handle: ModelHandle,
    progress: StepProgress | None = None,
    reference: Path | None = None,
) -> dict[str, Any]:
    """The sweep (module docstring) into `out`: its config, one row per SAE (layer, width,
    quality, shares, comparisons with BH q-values over the sweep), per-persona tables, the
    target's verdict, and wall / CPU seconds per step. With `reference` (a built run folder on
    the same corpus) its own SAEs are scored on its store as well (rows "run SAE ..."). Reruns
    skip the harvest and the SAEs already there for the same settings."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clock = Stopwatch(progress)
    started, cpu_started = time.perf_counter(), time.process_time()
    hooks = tuple(resid_hook(layer) for layer in config.layers)
    with clock.step("harvest"):
        harvest(
            inputs.transcripts,
            out / "activations.h5",
            replace(inputs.harvest, hooks=hooks),
            handle=handle,
        )
    train = sweep_train_config(inputs.train, config)
    rows, tables = train_and_score(out, inputs, config, train, handle, clock)
    if reference is not None:
        run_store = ActivationStore(reference / "activations.h5")
        for trained in run_saes(reference):
            name = (
                f"run SAE layer {hook_layer(trained.hook)} width {trained.card['config']['width']}"
            )
            with clock.step(f"figures {name}"):
                row, tables[name] = sae_figures(run_store, trained, inputs, config)
            rows.append({"variant": name, "layer": hook_layer(trained.hook), **row})
    add_q_values(rows)
    seconds = {"wall": time.perf_counter() - started, "cpu": time.process_time() - cpu_started}
    return sweep_record(inputs, config, train, rows, tables) | {
        "seconds": seconds | {"steps": clock.seconds, "cpu_steps": clock.cpu_seconds}
    }


def train_and_score(
    out: Path,
    inputs: SweepInputs,
    config: SweepConfig,
    train: TrainConfig,
    handle: ModelHandle,
    clock: Stopwatch,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per train layer (then the wider SAE, if any) train the SAE on out/activations.h5 into
    out/sae_<tokens>/ (out/sae_<tokens>_x<factor>/) and score it: the rows and the per-persona
    tables by variant name."""
    store = ActivationStore(out / "activations.h5")
    base = out / f"sae_{train.training_tokens}"
    layers = config.train_layers or config.layers
    rows, tables = [], {}
    variants = [(layer, train, base) for layer in layers]
    for index, (layer, settings, folder) in enumerate(variants):
        name = f"layer {layer} width {settings.width}"
        with clock.step(f"train {name}"):
            hooks = (resid_hook(layer),)
            trained = train_saes(store, folder, replace(settings, hooks=hooks), handle=handle)[0]
        with clock.step(f"figures {name}"):
            row, tables[name] = sae_figures(store, trained, inputs, config)
        rows.append({"variant": name, "layer": layer, **row})
        if index == len(layers) - 1 and config.width_factor > 1:
            wide = replace(train, width=train.width * config.width_factor)
            variants.append(
                (width_layer(rows, config), wide, Path(f"{base}_x{config.width_factor}"))
            )
    return rows, tables


def run_saes(run: Path) -> list[TrainResult]:
    """The SAEs a built run trained (run/sae/<hook>/ with a training card), as TrainResults."""
    found = []
    for folder in sorted(p for p in (run / "sae").iterdir() if p.is_dir()):
        card_path = folder / CARD_FILE
        if not card_path.is_file():
            continue
        card = json.loads(card_path.read_text())
        metrics = card["metrics"]
        found.append(
            TrainResult(
                path=folder,
                seconds=float(metrics["seconds"]),
                skipped=True,
                hook=card["hook"],
                n_steps=int(metrics["steps"]),
                n_tokens=int(card["data"]["tokens_trained"]),
                card=card,
            )
        )
    if not found:
        raise SaeAtlasError(f"{run}: no sae/<hook>/{CARD_FILE}; give a run whose train stage ran")
    return found


def sweep_record(
    inputs: SweepInputs,
    config: SweepConfig,
    train: TrainConfig,
    rows: list[dict[str, Any]],
    tables: dict[str, Any],
) -> dict[str, Any]:
    """The JSON-ready record of a sweep (without its seconds)."""
    return {
        "config": json_ready(vars(config)),
        "training": {
            k: getattr(train, k) for k in ("architecture", "width", "k", "training_tokens")
        },
        "heldout_personas": list(inputs.heldout_personas),
        "rows": json_ready(rows),
        "per_persona": tables,
        "target": target_verdict(rows),
    }


def add_q_values(rows: list[dict[str, Any]]) -> None:
    """Adds to every comparison of every row its BH q-value (`mcnemar_q`) over all of them."""
    found = [c for row in rows for c in row["comparisons"].values()]
    q_values = benjamini_hochberg(np.array([c["mcnemar_p"] for c in found]))
    for comparison, q in zip(found, q_values, strict=True):
        comparison["mcnemar_q"] = float(q)


def target_verdict(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Whether some feature method of some SAE reaches a share of personas at held-out AUROC
    >= 0.9 at least the response probe's at the same layer: `met`, the (variant, method) pairs
    that do, and the comparison with the largest share difference."""
    response = [
        (row["variant"], method, comparison)
        for row in rows
        for method, comparison in row["comparisons"].items()
        if comparison["reference"] == "response_probe"
    ]
    met = [(variant, method) for variant, method, c in response if c["at_least_equal"]]
    variant, method, best = max(response, key=lambda item: item[2]["share_difference"])
    return {
        "met": bool(met),
        "met_by": [list(pair) for pair in met],
        "closest": {"variant": variant, "method": method, **json_ready(best)},
    }
