"""`sae-atlas build`: run every stage that exists, in order, into one run folder.

Each stage writes one output in the run folder (dynamics: the atlas's dynamics/ group) and is
skipped when that output is complete for the same config, so an interrupted build resumes where
it stopped. `build.json` in the run folder records the config, how each stage that runs torch
runs (`runtime`: the dtype "auto" resolved to, device, threads, why), and per stage its seconds,
output size and whether it was skipped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from feature_store.activations import ActivationStore
from feature_store.labels import load_labels
from feature_store.transcripts import TranscriptStore
from sae_atlas.config import BuildConfig, dump_config, to_dict
from sae_atlas.model import ModelHandle, load_model
from sae_atlas.model.dtype import resolve_dtype
from sae_atlas.personas import load_catalogue
from sae_atlas.sae import load_sae
from sae_atlas.stages.corpus import build_corpus, corpus_jobs
from sae_atlas.stages.dynamics import DYNAMICS_STEPS, run_dynamics
from sae_atlas.stages.harvest import harvest, length_sorted
from sae_atlas.stages.label import catalogue_from_corpus, label_stage
from sae_atlas.stages.organize import ORGANIZE_STEPS, organize
from sae_atlas.stages.report import write_report
from sae_atlas.stages.train import train_saes

STAGES = ("corpus", "harvest", "train", "label", "organize", "dynamics", "report")

Progress = Callable[[str, int, str], Callable[[int], None]]
"""progress(stage, total, unit) -> update(n): the CLI's progress bars."""


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


def build(
    config: BuildConfig,
    out: str | Path,
    progress: Progress | None = None,
    handle: ModelHandle | None = None,
) -> list[StageRecord]:
    """Run every stage (STAGES) into `out`; returns one record per stage."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(dump_config(config))
    paths = run_paths(out)
    catalogue = load_catalogue(config.corpus.catalogue or None)
    handle = handle or load_model(
        config.model.source,
        config.model.device,
        config.model.dtype,
        adapter=config.model.adapter or None,
    )
    runtime = build_runtime(config, handle)
    records: list[StageRecord] = []

    def record(stage: str, started: float, skipped: bool) -> None:
        path = paths[stage]
        records.append(
            StageRecord(stage, str(path), time.monotonic() - started, disk_bytes(path), skipped)
        )
        summary = {
            "config": to_dict(config),
            "runtime": runtime,
            "stages": [asdict(r) for r in records],
        }
        (out / "build.json").write_text(json.dumps(summary, indent=2))

    def bar(stage: str, total: int, unit: str) -> Callable[[int], None]:
        return progress(stage, total, unit) if progress else lambda n: None

    started = time.monotonic()
    update = bar("corpus", len(corpus_jobs(catalogue, config.corpus)), "job")
    corpus = build_corpus(handle, catalogue, config.corpus, paths["corpus"], progress=update)
    record("corpus", started, corpus.skipped)

    started = time.monotonic()
    transcripts = TranscriptStore(paths["corpus"])
    update = bar("harvest", length_sorted(transcripts, config.harvest.max_len).n_tokens, "tok")
    result = harvest(handle, transcripts, paths["harvest"], config.harvest, progress=update)
    record("harvest", started, result.skipped)

    started = time.monotonic()
    hooks = config.train.hooks or config.harvest.hooks
    steps = len(hooks) * -(-config.train.training_tokens // config.train.batch_size)
    update = bar("train", steps, "step")
    trained = train_saes(
        paths["harvest"],
        paths["train"],
        config.train,
        handle=handle,
        progress=lambda _: update(1),
    )
    record("train", started, all(r.skipped for r in trained))

    started = time.monotonic()
    store = ActivationStore(paths["harvest"])
    update = bar("label", store.n_tokens, "tok")
    labeled = label_stage(
        paths["harvest"],
        trained[0].path,
        paths["label"],
        config.label,
        handle=handle,
        catalogue=catalogue_from_corpus(paths["corpus"]),
        progress=update,
    )
    record("label", started, labeled.skipped)

    started = time.monotonic()
    update = bar("organize", len(ORGANIZE_STEPS), "step")
    organized = organize(
        load_labels(paths["label"]),
        load_sae(str(trained[0].path)),
        paths["organize"],
        config.organize,
        progress=lambda _: update(1),
        records={
            "sae_training": trained[0].card,  # config, data, metrics and held-out evaluation
            "build_stages": [asdict(r) for r in records],
        },
    )
    record("organize", started, organized.skipped)

    started = time.monotonic()
    update = bar("dynamics", len(DYNAMICS_STEPS), "step")
    dynamics = run_dynamics(handle, out, config.dynamics, progress=lambda _: update(1))
    record("dynamics", started, dynamics.skipped)

    started = time.monotonic()
    write_report(paths["organize"], paths["report"])  # seconds, so always rewritten
    record("report", started, False)
    return records
