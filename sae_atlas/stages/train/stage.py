"""The train stage: one SAE per hook point of an activation store, each with its training card.

`train_saes(store, out, config)` trains one SAE per hook, one after another, each into
`out/<hook>/` in sae-lens format (`sae_weights.safetensors`, `cfg.json`, loadable with
`SAE.load_from_disk`) plus `training_card.json` (identity, config, data, metrics, time, versions,
runtime, seed) and, when a model handle is given, `eval.json` (`sae_atlas.stages.evaluate`). A
hook whose card exists for the same identity (training config, hook, store digest) is skipped;
one of another identity is refused. An interrupted training resumes from its latest checkpoint
to the same total step count. Cost: that of `train_sae` per hook, plus the evaluation.
"""

from __future__ import annotations

import platform
import shutil
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from sae_lens import SAE

import sae_atlas
from feature_store.activations import ActivationStore
from feature_store.errors import StoreError
from sae_atlas.config import TrainConfig, to_dict
from sae_atlas.errors import SaeAtlasError
from sae_atlas.model import ModelHandle
from sae_atlas.model.dtype import DtypeChoice, refuse_other_dtype, resolve_dtype
from sae_atlas.stages.base import (
    CountProgress,
    StageResult,
    existing_output,
    open_store,
    store_digest,
)
from sae_atlas.stages.evaluate import evaluate_sae
from sae_atlas.stages.train.checkpoints import CHECKPOINTS_DIR, read_json, write_json
from sae_atlas.stages.train.loop import train_sae
from sae_atlas.stages.train.settings import check_config

CARD_FILE = "training_card.json"
EVAL_FILE = "eval.json"
EVAL_FIELDS = ("eval_splits", "eval_tokens", "eval_transcripts", "eval_max_len")
LOGGING_FIELDS = ("log_to_wandb", "wandb_project")


@dataclass(frozen=True)
class TrainResult(StageResult):
    """One trained SAE: its folder (sae-lens format + training card) and how training went."""

    hook: str
    n_steps: int
    n_tokens: int
    card: dict[str, Any]

    @property
    def tokens_per_second(self) -> float:
        return self.n_tokens / self.seconds if self.seconds > 0 else float("nan")


def training_mask(store: ActivationStore, config: TrainConfig) -> np.ndarray:
    """bool [n_tokens]: the tokens an SAE trains on (roles, splits, conditions; empty: any);
    SaeAtlasError when they do not fill one batch."""
    try:
        mask = store.token_mask(
            roles=config.roles or None,
            splits=config.splits or None,
            conditions=config.conditions or None,
            min_pos=config.skip_positions,
        )
    except StoreError as error:
        raise SaeAtlasError(str(error)) from None
    n_candidates = int(mask.sum())
    if n_candidates < config.batch_size:
        raise SaeAtlasError(
            f"{store.path}: only {n_candidates} tokens match roles={list(config.roles)} "
            f"splits={list(config.splits)} conditions={list(config.conditions)}; "
            f"need at least one batch of {config.batch_size}"
        )
    return mask


def training_identity(store: ActivationStore, config: TrainConfig, hook: str) -> dict[str, Any]:
    """What decides an SAE's weights: the training config, the hook and the store's content."""
    train = {k: v for k, v in to_dict(config).items() if k not in EVAL_FIELDS + LOGGING_FIELDS}
    train.pop("hooks")
    return {"train": train, "hook": hook, "store": store_digest(store)}


def versions() -> dict[str, str]:
    """Versions of what trained the SAE."""
    return {
        "sae_atlas": sae_atlas.__version__,
        **{name: metadata.version(name) for name in ("sae-lens", "transformer-lens", "torch")},
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def training_hooks(
    store: ActivationStore, config: TrainConfig, handle: ModelHandle | None
) -> tuple[str, ...]:
    """The hooks to train (config.hooks, empty: every hook of the store); SaeAtlasError for a
    hook the store lacks or a handle of another model than the store's."""
    hooks = config.hooks or store.hooks
    for hook in hooks:
        if hook not in store.hooks:
            raise SaeAtlasError(
                f"{store.path}: has no activations at {hook!r}; it has {', '.join(store.hooks)}"
            )
    if handle is not None and handle.model_id != store.model:
        raise SaeAtlasError(
            f"{store.path}: was harvested from {store.model!r}, but the model given is "
            f"{handle.model_id!r}; evaluate with the same model"
        )
    return hooks


def train_saes(
    store: str | Path | ActivationStore,
    out: str | Path,
    config: TrainConfig,
    *,
    handle: ModelHandle | None = None,
    progress: CountProgress | None = None,
) -> list[TrainResult]:
    """Train one SAE per hook of `config.hooks` (empty: every hook of the store), in order.

    Each goes to out/<hook>/. A hook whose training card exists for the same training config
    and store is skipped (its evaluation is redone only when the eval settings changed and a
    handle is given); an interrupted training resumes from its latest checkpoint. With a model
    `handle` (sae_atlas.model.ModelHandle) each SAE is also evaluated (eval.json, and the card).
    `progress(n_steps)` after every training step.
    """
    check_config(config)
    choice = resolve_dtype(config.dtype, config.device)
    config = replace(config, dtype=choice.name)
    store = open_store(store)
    hooks = training_hooks(store, config, handle)
    mask = training_mask(store, config)
    return [
        train_hook(store, hook, mask, Path(out) / hook, config, choice, handle, progress)
        for hook in hooks
    ]


def train_hook(
    store: ActivationStore,
    hook: str,
    mask: np.ndarray,
    folder: Path,
    config: TrainConfig,
    choice: DtypeChoice,
    handle: ModelHandle | None,
    progress: CountProgress | None,
) -> TrainResult:
    """Train the SAE of `hook` into `folder` (skipped when its card is there for the same
    identity), evaluate it when a handle is given, and write its card."""
    identity = training_identity(store, config, hook)
    card = read_json(folder / CARD_FILE)
    started = datetime.now(UTC)
    if card is not None:
        refuse_other_dtype(folder, card["identity"]["train"].get("dtype"), choice)
    recorded = None if card is None else card["identity"]
    skipped = existing_output(folder / CARD_FILE, recorded, identity, "an SAE's training card")
    if card is None:
        folder.mkdir(parents=True, exist_ok=True)
        sae, sections = train_sae(store, hook, mask, folder, config, identity, progress)
        card = new_card(hook, config, identity, sections, started, choice)
    else:
        sae = SAE.load_from_disk(folder, device=config.device)
    evaluation = (
        None if handle is None else new_evaluation(card, handle, sae, store, hook, mask, config)
    )
    if evaluation is not None:
        card["evaluation"] = evaluation
        write_json(folder / EVAL_FILE, evaluation)
    if not skipped or evaluation is not None:
        card["time"]["finished"] = datetime.now(UTC).isoformat()
        write_json(folder / CARD_FILE, card)
        shutil.rmtree(folder / CHECKPOINTS_DIR, ignore_errors=True)
    metrics = card["metrics"]
    return TrainResult(
        path=folder,
        seconds=0.0 if skipped else float(metrics["seconds"]),
        skipped=skipped,
        hook=hook,
        n_steps=int(metrics["steps"]),
        n_tokens=int(card["data"]["tokens_trained"]),
        card=card,
    )


def new_card(
    hook: str,
    config: TrainConfig,
    identity: dict[str, Any],
    sections: dict[str, Any],
    started: datetime,
    choice: DtypeChoice,
) -> dict[str, Any]:
    """The training card of a freshly trained SAE, not yet evaluated nor finished."""
    return {
        "kind": "sae-atlas/training-card",
        "hook": hook,
        "architecture": config.architecture,
        "identity": identity,
        "config": to_dict(config),
        **sections,
        "evaluation": None,
        "time": {"started": started.isoformat(), "finished": None},
        "versions": versions(),
        "runtime": {"train": choice.record()},
        "seed": config.seed,
    }


def new_evaluation(
    card: dict[str, Any],
    handle: ModelHandle,
    sae: SAE[Any],
    store: ActivationStore,
    hook: str,
    mask: np.ndarray,
    config: TrainConfig,
) -> dict[str, Any] | None:
    """The evaluation of `sae` (`sae_atlas.stages.evaluate`) with the config's eval settings;
    None when the card already holds one with the same settings."""
    settings = {k: v for k, v in to_dict(config).items() if k in EVAL_FIELDS}
    if card.get("evaluation") is not None and card["evaluation"]["settings"] == settings:
        return None
    return {
        "settings": settings,
        **evaluate_sae(
            handle,
            sae,
            store,
            hook,
            splits=config.eval_splits,
            exclude=mask,
            n_tokens=config.eval_tokens,
            n_transcripts=config.eval_transcripts,
            max_len=config.eval_max_len,
            skip_positions=config.skip_positions,
            seed=config.seed,
        ),
    }
