"""The dynamics stage: run every experiment on a built run and write the atlas's dynamics/ group.

`run_dynamics` reads the run (atlas.h5, transcripts.h5, the SAE), is skipped when the atlas holds
dynamics for the same model and config (another one is refused unless overwritten), runs the
experiments step by step (`DYNAMICS_STEPS`, `Experiments`) and writes their tables, arrays and a
JSON summary (config, model, timings, headline numbers). Cost: the experiments' sampling; the
quick profile samples ~14k tokens, the full profile ~30k (on the 2-core development machine
shared with other jobs at load 7-10: 18 and 29 minutes).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from feature_store.atlas import AtlasWriter
from feature_store.schema import RUNTIME_ATTR
from sae_atlas.classifier import PersonaClassifier
from sae_atlas.config import DynamicsConfig, to_dict
from sae_atlas.errors import SaeAtlasError
from sae_atlas.model import ModelHandle
from sae_atlas.model.dtype import DtypeChoice, refuse_other_dtype, resolve_dtype
from sae_atlas.stages.base import StageResult, StepProgress, Stopwatch, json_ready
from sae_atlas.stages.dynamics.checks import check_dynamics_config
from sae_atlas.stages.dynamics.experiments import (
    Experiments,
    NaturalDynamics,
    SteeringResults,
    corpus_classifier,
    prepare_experiments,
)
from sae_atlas.stages.dynamics.repetition import state_names
from sae_atlas.stages.dynamics.steering import half_life
from sae_atlas.stages.dynamics.tables import (
    stored_summary,
    write_entry,
)

DYNAMICS_STEPS = ("rollouts", "classifier", "steering", "markers", "triggers", "write")
"""The steps `run_dynamics` reports to `progress`, in order (triggers: the wrapper scan)."""


@dataclass(frozen=True)
class DynamicsPaths:
    """The run files dynamics reads: the atlas (written to), the corpus and the SAE folder
    (sae-lens format, or a folder holding one per hook as `sae-atlas train` writes)."""

    atlas: Path
    transcripts: Path
    sae: Path

    @classmethod
    def from_run(cls, run: str | Path) -> DynamicsPaths:
        """The files of the run folder `run` (as `sae-atlas build` writes them)."""
        run = Path(run)
        return cls(run / "atlas.h5", run / "transcripts.h5", run / "sae")

    def check(self) -> None:
        """SaeAtlasError naming the files that do not exist."""
        missing = [str(p) for p in (self.atlas, self.transcripts, self.sae) if not p.exists()]
        if missing:
            raise SaeAtlasError(
                f"dynamics: {', '.join(missing)} missing; run `sae-atlas build` (or corpus, "
                "train, label and organize) first"
            )


@dataclass(frozen=True)
class DynamicsResult(StageResult):
    """Where the results went (atlas dynamics/), how long it took, whether they were already
    there, and the summary (config, timings, headline numbers) stored as dynamics/summary."""

    summary: dict[str, Any]


def existing_dynamics(
    atlas: Path, config: DynamicsConfig, model_id: str, choice: DtypeChoice
) -> dict[str, Any] | None:
    """The summary of the atlas's dynamics when they come from this model and config (skip the
    stage); None when it has none; SaeAtlasError when they come from another (pass overwrite)."""
    stored = stored_summary(atlas)
    if stored is None:
        return None
    if stored.get("config") == to_dict(config) and stored.get("model") == model_id:
        return stored
    made_in = stored.get("config", {}).get("dtype")
    refuse_other_dtype(atlas, made_in, choice, "pass --overwrite to replace them")
    raise SaeAtlasError(
        f"{atlas}: holds dynamics from another model or config; pass overwrite (--overwrite) "
        "to replace them"
    )


def dynamics_summary(
    experiments: Experiments,
    natural: NaturalDynamics,
    classifier: PersonaClassifier,
    steering: SteeringResults,
    markers: pd.DataFrame,
    scan: pd.DataFrame,
) -> dict[str, Any]:
    """dynamics/summary without its timings: config, model, headline numbers (JSON-ready)."""
    pmap, config = natural.pmap, experiments.config
    rollouts = natural.rollouts
    relaxation = steering.relaxation
    return json_ready(
        {
            "model": experiments.handle.model_id,
            "hook": experiments.inputs.hook,
            "config": to_dict(config),
            "regions": list(pmap.names),
            "stationary": dict(
                zip(state_names(pmap.names), natural.stationary.tolist(), strict=True)
            ),
            "repeated_share": float(np.mean(rollouts.repeated[:, 1:]))
            if rollouts.repeated is not None and rollouts.repeated.shape[1] > 1
            else None,
            "attractors": natural.flow["flow"]
            .loc[
                natural.flow["flow"]["attractor"],
                ["experiment", "region_name", "gain", "gain_low", "hold", "hold_null", "hold_q"],
            ]
            .to_dict("records"),
            "n_transitions": int(rollouts.regions.size - len(rollouts.regions)),
            "token_norm": rollouts.token_norm,
            "steer_strength": steering.strength,
            "steer_targets": steering.targets,
            "kick_half_life": {
                target: half_life(block[block["control"] == "persona"])
                for target, block in relaxation.groupby("target", sort=False)
            },
            "classifier_heldout_accuracy": classifier.heldout_accuracy,
            "classifier_chance": classifier.chance,
            "steering": steering.scores.to_dict("records"),
            "ablated_tag": config.ablate_tag,
            "n_ablated_features": len(experiments.inputs.ablated),
            "markers": markers.to_dict("records"),
            "trigger_candidates": scan.groupby("wrapper").size().to_dict(),
            "trigger_confirmed": scan[scan["confirmed"]].groupby("wrapper").size().to_dict(),
        }
    )


def dynamics_entries(
    natural: NaturalDynamics,
    steering: SteeringResults,
    markers: pd.DataFrame,
    scan: pd.DataFrame,
) -> dict[str, pd.DataFrame | np.ndarray]:
    """Every entry of dynamics/ but the summary, by name, in the order they are written."""
    return {
        **natural.entries(),
        "kick": steering.relaxation,
        "steering": steering.scores,
        "steering_responses": steering.responses,
        "markers": markers,
        "trigger_scan": scan,
    }


def replace_dynamics(
    atlas: Path,
    choice: DtypeChoice,
    entries: Mapping[str, pd.DataFrame | np.ndarray],
    summary: dict[str, Any],
    clock: Stopwatch,
    started: float,
) -> None:
    """Replace the atlas's dynamics/ group (and nothing else: experiments/ stays as it was) by
    `entries` (in order) and `summary`, its `seconds` (the clock's steps and the total since
    `started`, a perf_counter value) taken once the entries are written; record the dtype,
    device and threads dynamics ran with among the atlas's runtimes."""
    with AtlasWriter.extend(atlas) as writer:
        if "dynamics" in writer.file:
            del writer.file["dynamics"]
        runtime = json.loads(writer.file.attrs.get(RUNTIME_ATTR, "{}"))
        writer.file.attrs[RUNTIME_ATTR] = json.dumps({**runtime, "dynamics": choice.record()})
        for name, data in entries.items():
            write_entry(writer, name, data)
        summary["seconds"] = {**clock.seconds, "total": time.perf_counter() - started}
        write_entry(writer, "summary", json.dumps(summary))


def run_dynamics(
    transcripts: str | Path,
    sae: str | Path,
    atlas: str | Path,
    config: DynamicsConfig,
    *,
    handle: ModelHandle,
    progress: StepProgress | None = None,
    overwrite: bool = False,
) -> DynamicsResult:
    """Run every experiment with `handle` and write their results into the dynamics/ group of
    the atlas at `atlas`.

    `transcripts`: the corpus store (transcripts.h5); `sae`: the SAE folder (sae-lens format, or
    the folder of one SAE per hook that `sae-atlas train` writes); `atlas`: the atlas organize
    wrote. Skipped when the atlas holds dynamics for the same model and config (its dtype
    resolved: "auto" becomes the dtype sampling runs in here); another config raises unless
    `overwrite`. `progress(step)` as each of DYNAMICS_STEPS starts.
    """
    started = time.perf_counter()
    paths = DynamicsPaths(Path(atlas), Path(transcripts), Path(sae))
    paths.check()
    check_dynamics_config(config)
    choice = resolve_dtype(config.dtype, str(handle.device))
    config = replace(config, dtype=choice.name)
    done = None if overwrite else existing_dynamics(paths.atlas, config, handle.model_id, choice)
    if done is not None:
        return DynamicsResult(paths.atlas, 0.0, True, done)
    clock = Stopwatch(progress)
    experiments = prepare_experiments(handle, paths.atlas, paths.sae, paths.transcripts, config)
    with clock.step("rollouts"):
        natural = experiments.natural()
    with clock.step("classifier"):
        classifier = corpus_classifier(paths.transcripts, handle, config.seed)
    with clock.step("steering"):
        steering = experiments.steering(classifier, natural.rollouts.token_norm)
    with clock.step("markers"):
        markers = experiments.markers()
    with clock.step("triggers"):
        scan = experiments.wrapper_scan()
    with clock.step("write"):
        entries = dynamics_entries(natural, steering, markers, scan)
        summary = dynamics_summary(experiments, natural, classifier, steering, markers, scan)
        replace_dynamics(paths.atlas, choice, entries, summary, clock, started)
    return DynamicsResult(paths.atlas, time.perf_counter() - started, False, summary)
