"""What every stage shares: its result, its progress callbacks, a stopwatch, JSON-ready
records, and the skip-or-refuse rule by identity.

A stage is a function of its inputs and its config. Its output records an identity (the config
and digests of its inputs); rerun with the same identity, the stage is skipped; asked to write
over an output of another identity, it refuses with a one-line error instead of overwriting.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from feature_store.activations import ActivationStore
from feature_store.errors import StoreError
from feature_store.transcripts import TranscriptStore
from sae_atlas.errors import SaeAtlasError

CountProgress = Callable[[int], None]
"""Called with the number of items (jobs, tokens, blocks) just done."""

StepProgress = Callable[[str], None]
"""Called with the name of the step about to start."""


@dataclass(frozen=True)
class StageResult:
    """Where a stage wrote, how long it took (0 when skipped) and whether it was skipped."""

    path: Path
    seconds: float
    skipped: bool


class Stopwatch:
    """Wall seconds (`seconds`) and CPU seconds of this process, every thread (`cpu_seconds`),
    per named step; calls `progress(step)` as each step starts."""

    def __init__(self, progress: StepProgress | None) -> None:
        self.progress = progress
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        if self.progress is not None:
            self.progress(name)
        started, cpu_started = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started
            cpu = time.process_time() - cpu_started
            self.cpu_seconds[name] = self.cpu_seconds.get(name, 0.0) + cpu


def json_ready(value: Any) -> Any:
    """`value` with numpy scalars as Python ones, tuples as lists, keys as strings and non-finite
    floats as None, so json.dumps writes it (and reads it back) unchanged."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def existing_output(
    out: Path, recorded: Mapping[str, Any] | None, identity: Mapping[str, Any], what: str
) -> bool:
    """True when `out` already holds this stage's output for `identity` (skip the stage); False
    when there is nothing at `out`; SaeAtlasError when `out` holds `what` of another identity."""
    if recorded is not None and json_ready(dict(recorded)) == json_ready(dict(identity)):
        return True
    if out.exists():
        raise SaeAtlasError(
            f"{out}: holds {what} of other inputs or another config; write to another --out or "
            "delete it"
        )
    return False


def open_store(store: str | Path | ActivationStore) -> ActivationStore:
    """`store` itself, or the complete activation store at that path; SaeAtlasError when it is
    missing, not an activation store, or unfinished."""
    if isinstance(store, ActivationStore):
        return store
    path = Path(store)
    if not path.is_file():
        raise SaeAtlasError(f"{path}: no such activation store; run `sae-atlas harvest` first")
    try:
        opened = ActivationStore(path)
    except StoreError as error:
        raise SaeAtlasError(str(error)) from None
    if not opened.complete:
        raise SaeAtlasError(f"{path}: the harvest is unfinished; run it again to complete it")
    return opened


def store_digest(store: TranscriptStore) -> dict[str, Any]:
    """What a stage's identity records of an input store: its model, token count and the sha1 of
    the config it was written with (which holds the digest of its own inputs)."""
    return {
        "model": store.model,
        "n_tokens": store.n_tokens,
        "config_sha1": hashlib.sha1(json.dumps(store.config, sort_keys=True).encode()).hexdigest(),
    }
