"""`sae-atlas build`: run every stage that exists, in order, into one run folder.

Each stage writes one output in the run folder (dynamics: the atlas's dynamics/ group) and is
skipped when that output is complete for the same config, so an interrupted build resumes where
it stopped. `build.json` in the run folder records the config, how each stage that runs torch
runs (`runtime`: the dtype "auto" resolved to, device, threads, why), and per stage its seconds,
output size and whether it was skipped; it is rewritten after every stage. Cost: the sum of the
stages' (one model load, shared by every stage that runs the model).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from feature_store.activations import ActivationStore
from feature_store.labels import load_labels
from feature_store.transcripts import TranscriptStore
from sae_atlas.config import BuildConfig, dump_config, to_dict
from sae_atlas.model import ModelHandle, load_model
from sae_atlas.model.dtype import resolve_dtype
from sae_atlas.personas import Catalogue, load_catalogue
from sae_atlas.sae import load_sae
from sae_atlas.stages.base import CountProgress
from sae_atlas.stages.corpus import build_corpus, corpus_jobs
from sae_atlas.stages.dynamics import DYNAMICS_STEPS, run_dynamics
from sae_atlas.stages.harvest import harvest, length_sorted
from sae_atlas.stages.label import catalogue_from_corpus, label_stage
from sae_atlas.stages.organize import ORGANIZE_STEPS, organize
from sae_atlas.stages.report import REPORT_STEPS, write_report
from sae_atlas.stages.train import TrainResult, train_saes

StageBars = Callable[[str, int, str], CountProgress]
"""bars(stage, total, unit) -> the stage's progress callback, e.g. the update of a progress bar
of `total` `unit`s that the CLI opens when the stage starts."""


@dataclass(frozen=True)
class StageRecord:
    stage: str
    output: str
    seconds: float
    bytes: int
    skipped: bool


def run_paths(out: Path) -> dict[str, Path]:
    return {
        "corpus": out / "transcripts.h5",
        "harvest": out / "activations.h5",
        "train": out / "sae",
        "label": out / "labels.h5",
        "organize": out / "atlas.h5",
        "dynamics": out / "atlas.h5",  # its dynamics/ group
        "report": out / "report",
    }


def disk_bytes(path: Path) -> int:
    """Size of a file, or of every file under a folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def build_runtime(config: BuildConfig, handle: ModelHandle) -> dict[str, dict[str, Any]]:
    """How each stage that runs torch runs: dtype (resolved), device, threads and why."""
    device = str(handle.device)
    return {
        "corpus": resolve_dtype(config.corpus.dtype, device).record(),
        "harvest": handle.dtype_choice.record(),
        "train": resolve_dtype(config.train.dtype, config.train.device).record(),
        "dynamics": resolve_dtype(config.dynamics.dtype, device).record(),
    }


@dataclass
class BuildRun:
    """A build in progress: its config, folder, model, what earlier stages handed on, and the
    records of the stages done so far (written to build.json after each)."""

    config: BuildConfig
    out: Path
    handle: ModelHandle
    catalogue: Catalogue
    runtime: dict[str, dict[str, Any]]
    bars: StageBars | None
    records: list[StageRecord] = field(default_factory=list)
    trained: list[TrainResult] = field(default_factory=list)

    @property
    def paths(self) -> dict[str, Path]:
        return run_paths(self.out)

    def progress(self, stage: str, total: int, unit: str) -> CountProgress:
        return self.bars(stage, total, unit) if self.bars else lambda n: None

    def record(self, stage: str, started: float, skipped: bool) -> None:
        path = self.paths[stage]
        seconds = time.monotonic() - started
        self.records.append(StageRecord(stage, str(path), seconds, disk_bytes(path), skipped))
        summary = {
            "config": to_dict(self.config),
            "runtime": self.runtime,
            "stages": [asdict(r) for r in self.records],
        }
        (self.out / "build.json").write_text(json.dumps(summary, indent=2))


def build(
    config: BuildConfig,
    out: str | Path,
    *,
    handle: ModelHandle | None = None,
    progress: StageBars | None = None,
) -> list[StageRecord]:
    """Run every stage (STAGES) into the run folder `out` with `handle` (None: the config's
    model, loaded once); `progress` makes each stage's progress callback. Returns one record per
    stage."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(dump_config(config))
    catalogue = load_catalogue(config.corpus.catalogue or None)
    handle = handle or load_model(
        config.model.source,
        config.model.device,
        config.model.dtype,
        adapter=config.model.adapter or None,
    )
    run = BuildRun(config, out, handle, catalogue, build_runtime(config, handle), progress)
    for stage, step in STEP_FUNCTIONS.items():
        started = time.monotonic()
        run.record(stage, started, step(run))
    return run.records


def corpus_step(run: BuildRun) -> bool:
    config = run.config.corpus
    update = run.progress("corpus", len(corpus_jobs(run.catalogue, config)), "job")
    out = run.paths["corpus"]
    return build_corpus(run.catalogue, out, config, handle=run.handle, progress=update).skipped


def harvest_step(run: BuildRun) -> bool:
    config = run.config.harvest
    transcripts = TranscriptStore(run.paths["corpus"])
    update = run.progress("harvest", length_sorted(transcripts, config.max_len).n_tokens, "tok")
    out = run.paths["harvest"]
    return harvest(transcripts, out, config, handle=run.handle, progress=update).skipped


def train_step(run: BuildRun) -> bool:
    config = run.config.train
    hooks = config.hooks or run.config.harvest.hooks
    steps = len(hooks) * -(-config.training_tokens // config.batch_size)
    update = run.progress("train", steps, "step")
    run.trained = train_saes(
        run.paths["harvest"], run.paths["train"], config, handle=run.handle, progress=update
    )
    return all(r.skipped for r in run.trained)


def label_step(run: BuildRun) -> bool:
    update = run.progress("label", ActivationStore(run.paths["harvest"]).n_tokens, "tok")
    labeled = label_stage(
        run.paths["harvest"],
        run.trained[0].path,
        run.paths["label"],
        run.config.label,
        handle=run.handle,
        catalogue=catalogue_from_corpus(run.paths["corpus"]),
        progress=update,
    )
    return labeled.skipped


def organize_step(run: BuildRun) -> bool:
    update = run.progress("organize", len(ORGANIZE_STEPS), "step")
    organized = organize(
        load_labels(run.paths["label"]),
        load_sae(str(run.trained[0].path)),
        run.paths["organize"],
        run.config.organize,
        progress=lambda _: update(1),
        records={
            "sae_training": run.trained[0].card,  # config, data, metrics and held-out evaluation
            "build_stages": [asdict(r) for r in run.records],
        },
    )
    return organized.skipped


def dynamics_step(run: BuildRun) -> bool:
    update = run.progress("dynamics", len(DYNAMICS_STEPS), "step")
    config = run.config.dynamics
    dynamics = run_dynamics(
        run.paths["corpus"],
        run.paths["train"],
        run.paths["dynamics"],
        config,
        handle=run.handle,
        progress=lambda _: update(1),
    )
    return dynamics.skipped


def report_step(run: BuildRun) -> bool:
    update = run.progress("report", len(REPORT_STEPS), "step")
    report = write_report(run.paths["organize"], run.paths["report"], progress=lambda _: update(1))
    return report.skipped  # never: the report takes seconds, so it is always rewritten


STEP_FUNCTIONS: dict[str, Callable[[BuildRun], bool]] = {
    "corpus": corpus_step,
    "harvest": harvest_step,
    "train": train_step,
    "label": label_step,
    "organize": organize_step,
    "dynamics": dynamics_step,
    "report": report_step,
}
"""Each stage, in order, as a step of a build: runs it into the run folder, returns whether it
was skipped."""
STAGES = tuple(STEP_FUNCTIONS)
