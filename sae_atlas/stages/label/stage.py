"""The label stage: label the SAE of a run on its activation store into labels.h5, or skip when
that file is complete for the same inputs and config.

Cost: the labeling pass (`labeling.label`) unless skipped; loading the SAE and hashing it for
the identity otherwise. Returns `LabelResult`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from feature_store.labels import labels_config, save_labels
from sae_atlas.config import LabelConfig
from sae_atlas.errors import SaeAtlasError
from sae_atlas.model import ModelHandle
from sae_atlas.model.dtype import DtypeChoice
from sae_atlas.personas import Catalogue
from sae_atlas.sae import load_sae
from sae_atlas.stages.base import CountProgress, StageResult, existing_output, open_store
from sae_atlas.stages.label.inputs import label_identity
from sae_atlas.stages.label.labeling import label


@dataclass(frozen=True)
class LabelResult(StageResult):
    """A StageResult with the number of features labeled."""

    n_features: int


def label_stage(
    store_path: str | Path,
    sae_path: str | Path,
    out: str | Path,
    config: LabelConfig,
    handle: ModelHandle | None = None,
    catalogue: Catalogue | None = None,
    progress: CountProgress | None = None,
) -> LabelResult:
    """Label the SAE at `sae_path` (its hook from its metadata) on `store_path` into `out`
    (labels.h5); skipped when `out` is complete for the same inputs and config, refused when it
    holds labels of others."""
    out = Path(out)
    store = open_store(store_path)
    sae = load_sae(sae_path, device=config.device)
    hook = str(getattr(sae.cfg.metadata, "hook_name", "") or "")
    if not hook:
        raise SaeAtlasError(f"{sae_path}: the SAE records no hook_name; give it one in cfg.json")
    identity = label_identity(store, sae, hook, config, catalogue)
    if existing_output(out, labels_config(out), identity, "labels"):
        return LabelResult(out, 0.0, skipped=True, n_features=int(sae.cfg.d_sae))
    started = time.monotonic()
    labels = label(store, sae, hook, config, handle, catalogue, progress)
    threads = torch.get_num_threads()
    runtime = DtypeChoice("float32", torch.float32, config.device, threads, "SAE codes in float32")
    save_labels(replace(labels, runtime={"label": runtime.record()}), out)
    return LabelResult(out, time.monotonic() - started, skipped=False, n_features=labels.d_sae)
