"""The files of a built run that experiment scripts read and write: the model settings the run
was built with (its config.yaml's model section, read alone so that a config written by another
version still serves) and the atlas to write results into (the run's own, or a copy)."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from sae_atlas.config import ModelConfig, from_dict
from sae_atlas.errors import SaeAtlasError


def run_model_config(run: Path) -> ModelConfig:
    """The model section of `run`/config.yaml."""
    path = run / "config.yaml"
    if not path.is_file():
        raise SaeAtlasError(f"{run}: has no config.yaml; give a run folder `sae-atlas build` wrote")
    data = yaml.safe_load(path.read_text()) or {}
    return from_dict(ModelConfig, data.get("model", {}), f"{path}: model")


def output_atlas(atlas: Path, copy: Path | None) -> Path:
    """The atlas results go into: `atlas` itself, or a copy of it at `copy` (replacing a file
    there)."""
    if not atlas.is_file():
        raise SaeAtlasError(f"{atlas}: no such atlas; give the atlas.h5 of a built run")
    if copy is None:
        return atlas
    shutil.copyfile(atlas, copy)
    return copy
