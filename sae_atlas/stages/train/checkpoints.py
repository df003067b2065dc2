"""Training checkpoints and the JSON files beside an SAE, written so a crash never leaves half a
file.

A checkpoint (sae-lens's weights, trainer and optimizer state) goes to
`<folder>/checkpoints/step_<n>/` with `stage.json` holding the training identity, written last:
only a checkpoint with that file is finished. Saving one removes the older ones; resuming takes
the newest finished one and refuses one of another identity. Cost: one write of the SAE and its
optimizer state (about 3 x the weights) per checkpoint.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sae_lens.training.sae_trainer import SAETrainer

from sae_atlas.errors import SaeAtlasError

CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_DONE_FILE = "stage.json"


def read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write atomically: a crash leaves the old file or the new one, never half of one."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float))
    tmp.replace(path)


def latest_checkpoint(folder: Path, identity: Mapping[str, Any]) -> Path | None:
    """The newest finished checkpoint under folder/checkpoints for `identity`, or None.

    SaeAtlasError when the checkpoints there were made with another config.
    """
    finished = sorted((folder / CHECKPOINTS_DIR).glob(f"step_*/{CHECKPOINT_DONE_FILE}"))
    if not finished:
        return None
    if read_json(finished[-1]) != json.loads(json.dumps(identity)):
        raise SaeAtlasError(
            f"{folder}: holds a checkpoint of another training configuration; "
            "train into another out dir or delete it"
        )
    return finished[-1].parent


def save_checkpoint(
    trainer: SAETrainer[Any, Any], folder: Path, identity: Mapping[str, Any]
) -> None:
    """Weights, trainer and optimizer state at the current step; older checkpoints go."""
    name = f"step_{trainer.n_training_steps:09d}"
    base = folder / CHECKPOINTS_DIR
    shutil.rmtree(base / name, ignore_errors=True)
    trainer.save_checkpoint(name, base_path=base)
    write_json(base / name / CHECKPOINT_DONE_FILE, identity)
    for older in base.glob("step_*"):
        if older.name < name:
            shutil.rmtree(older)
