"""Device check: harvest, SAE training and labeling throughput of a ~1B-parameter model.

`device_check` builds a randomly initialised Llama of TinyLlama-1.1B's shape in code (hidden 2048,
22 layers, 32 heads, 4 KV heads, MLP 5632, vocabulary 32,000; no download), writes a synthetic
chat corpus, and runs the stages on it as `sae-atlas build` does: harvest (residual stream after
layer 11 into a real activations.h5), train (a TopK SAE of width 16,384 from that store,
evaluation included) and label (every feature, on the whole store). It writes the report as JSON
after every step, so an interrupted run still reports what it measured. Sized for about 3-4
minutes on one H100 in bfloat16; SIZES["small"] runs tiny sizes on the CPU in seconds. Returns
the report's path; `table` formats its steps.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from feature_store.activations import ActivationStore
from feature_store.transcripts import TranscriptStore
from sae_atlas.config import HarvestConfig, LabelConfig, TrainConfig
from sae_atlas.model import ModelHandle, resid_hook
from sae_atlas.stages.harvest import harvest
from sae_atlas.stages.label import label_stage
from sae_atlas.stages.train import train_saes
from sae_atlas.testing import random_chat_model, synthetic_corpus

SIZES: dict[str, dict[str, Any]] = {
    "full": {
        "model": {
            "hidden": 2048,
            "layers": 22,
            "heads": 32,
            "kv_heads": 4,
            "intermediate": 5632,
            "vocab": 32000,
        },
        "layer": 11,
        "corpus_tokens": 1_000_000,
        "batch_tokens": 65536,
        "max_batch": 512,
        "width": 16384,
        "k": 64,
        "batch_size": 4096,
        "training_tokens": 4096 * 600,
        "eval_transcripts": 32,
    },
    "small": {
        "model": {
            "hidden": 64,
            "layers": 2,
            "heads": 4,
            "kv_heads": 2,
            "intermediate": 128,
            "vocab": 512,
        },
        "layer": 1,
        "corpus_tokens": 4000,
        "batch_tokens": 4096,
        "max_batch": 64,
        "width": 256,
        "k": 8,
        "batch_size": 512,
        "training_tokens": 512 * 5,
        "eval_transcripts": 4,
    },
}
VERSIONS = ("torch", "transformers", "transformer-lens", "sae-lens", "h5py", "numpy")
StepDone = Callable[[dict[str, Any]], None]
"""on_step(row) after every step."""


class Report:
    """Steps measured so far; written to `path` as JSON after each one."""

    def __init__(self, path: Path, header: dict[str, Any], on_step: StepDone | None = None):
        self.path, self.header, self.on_step = path, header, on_step
        self.steps: list[dict[str, Any]] = []

    @contextmanager
    def step(self, name: str) -> Iterator[dict[str, Any]]:
        """Time the block as step `name`; the block fills the yielded row."""
        row: dict[str, Any] = {"step": name}
        synchronize()
        started = time.perf_counter()
        try:
            yield row
        finally:
            synchronize()
            row["seconds"] = round(time.perf_counter() - started, 2)
            if torch.cuda.is_available():
                row["gpu_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            self.steps.append(row)
            self.write()
            if self.on_step is not None:
                self.on_step(row)

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({**self.header, "steps": self.steps}, indent=2))


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def versions() -> dict[str, str]:
    """Python's version and those of VERSIONS ("missing" where not installed)."""
    found = {"python": platform.python_version()}
    for name in VERSIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "missing"
    return found


def _model_step(report: Report, size: dict[str, Any], device: str, dtype: str) -> ModelHandle:
    with report.step("model") as row:
        handle = random_chat_model(**size["model"], device=device, dtype=dtype)
        row["parameters_b"] = round(sum(p.numel() for p in handle.hf_model.parameters()) / 1e9, 3)
        row["model"], row["device"] = handle.model_id, str(handle.device)
        row["dtype"] = str(handle.dtype).removeprefix("torch.")
    return handle


def _harvest_step(report: Report, size: dict[str, Any], handle: ModelHandle, work: Path) -> None:
    hook = resid_hook(size["layer"])
    with report.step("corpus") as row:
        row["transcripts"] = synthetic_corpus(
            work / "transcripts.h5",
            handle.model_id,
            n_tokens=size["corpus_tokens"],
            vocab=size["model"]["vocab"],
        )
    with report.step("harvest") as row:
        config = HarvestConfig(
            hooks=(hook,), batch_tokens=size["batch_tokens"], max_batch=size["max_batch"]
        )
        transcripts = TranscriptStore(work / "transcripts.h5")
        result = harvest(transcripts, work / "activations.h5", config, handle=handle)
        row["hook"], row["tokens"] = hook, result.n_tokens
        row["tokens_per_s"] = round(result.tokens_per_second)
        row["store_gib"] = round((work / "activations.h5").stat().st_size / 2**30, 2)


def _train_step(
    report: Report, size: dict[str, Any], handle: ModelHandle, work: Path, device: str, dtype: str
) -> Path:
    with report.step("train") as row:
        train_config = TrainConfig(
            architecture="topk",
            width=size["width"],
            k=size["k"],
            batch_size=size["batch_size"],
            training_tokens=size["training_tokens"],
            eval_tokens=16 * size["batch_size"],
            eval_transcripts=size["eval_transcripts"],
            device=device,
            dtype=dtype if dtype in ("float32", "auto") else "bfloat16",
            checkpoint_every=10**9,
        )
        [trained] = train_saes(work / "activations.h5", work / "sae", train_config, handle=handle)
        metrics = trained.card["metrics"]
        row["width"], row["k"], row["steps"] = size["width"], size["k"], trained.n_steps
        row["tokens_per_s"] = round(metrics["tokens_per_second"])
        row["explained_variance"] = metrics.get("explained_variance")
        spliced = trained.card["evaluation"]["spliced"] or {}  # a random model: only that it ran
        row["eval_predictions"], row["kl_sae"] = spliced.get("n_predictions"), spliced.get("kl_sae")
    return Path(trained.path)


def _label_step(report: Report, handle: ModelHandle, work: Path, sae: Path, device: str) -> None:
    with report.step("label") as row:
        store = ActivationStore(work / "activations.h5")
        labeled = label_stage(
            work / "activations.h5",
            sae,
            work / "labels.h5",
            LabelConfig(device=device),
            handle=handle,
        )
        row["tokens"], row["features"] = store.n_tokens, labeled.n_features
        row["tokens_per_s"] = round(store.n_tokens / max(labeled.seconds, 1e-9))


def run_steps(report: Report, size: dict[str, Any], device: str, dtype: str, work: Path) -> None:
    """Model, corpus, harvest, train and label at `size` on `device` in `dtype`, into folder
    `work` (made when missing)."""
    work.mkdir(parents=True, exist_ok=True)
    handle = _model_step(report, size, device, dtype)
    _harvest_step(report, size, handle, work)
    sae = _train_step(report, size, handle, work, device, dtype)
    _label_step(report, handle, work, sae, device)


def report_header(size: str, args: dict[str, str]) -> dict[str, Any]:
    """What a report records before its steps: arguments, SIZES[size], versions, GPU, load."""
    return {
        "args": args,
        "sizes": SIZES[size],
        "versions": versions(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "load_average": os.getloadavg(),
    }


def table(steps: list[dict[str, Any]]) -> str:
    """The steps as a text table: seconds, tokens/s and the other measures."""
    lines = [f"{'step':<9}{'seconds':>9}{'tokens/s':>12}  details"]
    for row in steps:
        rate = f"{row['tokens_per_s']:,}" if "tokens_per_s" in row else ""
        details = ", ".join(
            f"{k}={v}" for k, v in row.items() if k not in ("step", "seconds", "tokens_per_s")
        )
        lines.append(f"{row['step']:<9}{row['seconds']:>9.1f}{rate:>12}  {details}")
    return "\n".join(lines)
