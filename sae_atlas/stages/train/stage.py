"""Train sparse autoencoders on the activation store with sae-lens, one SAE per hook point.

`train_saes(store_path, out_dir, config)` feeds sae-lens's `SAETrainer` from the store's shuffled
background reader (`ActivationStore.batches`: float16 [batch_size, d_model] per step, made float32
on `config.device`; only a shuffle buffer is in memory, never the store), trains one SAE per hook
point one after another on `config.device` (dtype bfloat16: sae-lens's autocast), checkpoints
the weights with the trainer and optimizer state every `config.checkpoint_every` steps and on
Ctrl-C, and resumes from the latest checkpoint to the same total step count. Each hook gets
`out_dir/<hook>/` in sae-lens format (`sae_weights.safetensors`, `cfg.json`, loadable with
`SAE.load_from_disk`) plus
`training_card.json` (config, data, metrics, time, versions, seed) and, when a model handle is
given, `eval.json` (see `sae_atlas.stages.evaluate`). A hook whose card exists for the same config
is skipped. `sae_atlas.sae.load_sae(source)` loads a trained or pretrained SAE instead.

Cost: an encoder and a decoder matmul, forward and backward, per token: O(d_model x width) each;
a batchtopk SAE of width 4608 on d_model 576 at batch 4096 trains at about 2,000-3,000 tokens/s
on the 2-core development CPU, and the store-fed trainer runs at 0.97 of one fed from memory
(scripts/bench_train.py).
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sae_lens import SAE
from sae_lens.config import LoggingConfig, SAETrainerConfig
from sae_lens.registry import get_sae_training_class
from sae_lens.saes import (
    TrainingSAE,
    TrainingSAEConfig,
)
from sae_lens.training.sae_trainer import SAETrainer

import sae_atlas
from feature_store.activations import ActivationStore, ShuffledBatches
from feature_store.errors import StoreError
from sae_atlas.config import TrainConfig, to_dict
from sae_atlas.errors import SaeAtlasError
from sae_atlas.model import ModelHandle
from sae_atlas.model.dtype import refuse_other_dtype, resolve_dtype
from sae_atlas.sae import ARCHITECTURES

CARD_FILE = "training_card.json"
EVAL_FILE = "eval.json"
CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_DONE_FILE = "stage.json"
NORM_ESTIMATE_ROWS = 131072
"""Activations used to estimate the normalization factor (expected_average_only_in)."""
EVAL_FIELDS = ("eval_splits", "eval_tokens", "eval_transcripts", "eval_max_len")
LOGGING_FIELDS = ("log_to_wandb", "wandb_project")
WANDB_LOG_EVERY = 10
LOSS_WINDOW = 100


NORMALIZATIONS = ("none", "expected_average_only_in")
TRAIN_DTYPES = ("auto", "float32", "bfloat16")
"""float32, or bfloat16: sae-lens's autocast (its only one); auto: bfloat16 where measured fast
(sae_atlas.model.dtype.resolve_dtype on the training device)."""
LR_SCHEDULERS = ("constant", "cosineannealing", "cosineannealingwarmrestarts")


@dataclass(frozen=True)
class TrainProgress:
    """Handed to the progress callback after every training step."""

    hook: str
    step: int
    total_steps: int
    loss: float


@dataclass(frozen=True)
class TrainResult:
    """One trained SAE: its folder (sae-lens format + training card) and how training went."""

    hook: str
    path: Path
    n_steps: int
    n_tokens: int
    seconds: float
    skipped: bool
    card: dict[str, Any]

    @property
    def tokens_per_second(self) -> float:
        return self.n_tokens / self.seconds if self.seconds > 0 else float("nan")


def check_config(config: TrainConfig) -> None:
    """SaeAtlasError for a config that cannot train, before anything is read or written."""
    if config.architecture not in ARCHITECTURES:
        raise SaeAtlasError(
            f"unknown SAE architecture {config.architecture!r}; valid: {', '.join(ARCHITECTURES)}"
        )
    if config.normalize_activations not in NORMALIZATIONS:
        raise SaeAtlasError(
            f"unknown normalize_activations {config.normalize_activations!r}; "
            f"valid: {', '.join(NORMALIZATIONS)}"
        )
    if config.lr_scheduler not in LR_SCHEDULERS:
        raise SaeAtlasError(
            f"unknown lr_scheduler {config.lr_scheduler!r}; valid: {', '.join(LR_SCHEDULERS)}"
        )
    if config.dtype not in TRAIN_DTYPES:
        raise SaeAtlasError(
            f"unknown train dtype {config.dtype!r}; valid: {', '.join(TRAIN_DTYPES)} "
            "(bfloat16: sae-lens's autocast)"
        )
    if config.batch_size <= 0 or config.training_tokens < config.batch_size:
        raise SaeAtlasError(
            f"train: training_tokens ({config.training_tokens}) must be at least one batch "
            f"(batch_size {config.batch_size})"
        )
    if not 0 < config.k <= config.width:
        raise SaeAtlasError(f"train: k ({config.k}) must be between 1 and width ({config.width})")


def sae_config(config: TrainConfig, d_in: int, hook: str, model: str) -> TrainingSAEConfig:
    """The sae-lens training config of `config.architecture` for activations [*, d_in]."""
    check_config(config)
    common: dict[str, Any] = {
        "d_in": d_in,
        "d_sae": config.width,
        "device": config.device,
        "normalize_activations": config.normalize_activations,
    }
    try:
        cfg = ARCHITECTURES[config.architecture](config, common)
    except ValueError as error:
        raise SaeAtlasError(f"train: {config.architecture}: {error}") from None
    cfg.metadata.hook_name = hook
    cfg.metadata.model_name = model
    return cfg


def build_sae(config: TrainConfig, d_in: int, hook: str, model: str) -> TrainingSAE[Any]:
    """A freshly initialized training SAE; the same seed gives the same weights."""
    cfg = sae_config(config, d_in, hook, model)
    sae_class = get_sae_training_class(config.architecture)[0]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        try:
            return sae_class(cfg)
        except ValueError as error:
            raise SaeAtlasError(f"train: {config.architecture}: {error}") from None


def trainer_config(config: TrainConfig) -> SAETrainerConfig:
    """sae-lens trainer settings: schedule, budget, device, autocast (dtype bfloat16);
    checkpoints are ours, wandb too."""
    return SAETrainerConfig(
        total_training_samples=config.training_tokens,
        train_batch_size_samples=config.batch_size,
        lr=config.lr,
        lr_end=config.lr / 10,
        lr_scheduler_name=config.lr_scheduler,
        lr_warm_up_steps=config.lr_warm_up_steps,
        lr_decay_steps=config.lr_decay_steps,
        device=config.device,
        autocast=config.dtype == "bfloat16",
        n_checkpoints=0,
        save_final_checkpoint=False,
        dead_feature_window=dead_feature_window(config),
        logger=LoggingConfig(log_to_wandb=False),
    )


def dead_feature_window(config: TrainConfig) -> int:
    """Steps without firing after which a feature counts as dead (and the TopK auxiliary loss
    starts reviving it): config.dead_feature_window, or 0 for a tenth of the run, at most 1000
    (sae-lens's default of 1000 steps would never trigger in a short CPU run)."""
    steps = max(1, config.training_tokens // config.batch_size)
    return config.dead_feature_window or max(1, min(1000, steps // 10))


def as_tensors(batches: Iterator[np.ndarray], device: str) -> Iterator[torch.Tensor]:
    """The store's float16 numpy batches [batch, d_model] as float32 tensors on `device` (half
    the bytes cross to the device; float16 -> float32 is exact)."""
    for batch in batches:
        yield torch.from_numpy(batch).to(device, non_blocking=True).float()


@torch.no_grad()
def norm_scaling_factor(batches: Iterator[torch.Tensor], n_batches: int) -> float:
    """sqrt(d_model) / mean activation norm over n_batches batches [batch, d_model]: the factor
    that scales activations to an expected squared norm of d_model (expected_average_only_in)."""
    first = next(batches)
    norms = torch.cat([first, *(next(batches) for _ in range(n_batches - 1))]).float().norm(dim=-1)
    return first.shape[-1] ** 0.5 / float(norms.mean())


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
    store_config = json.dumps(store.config, sort_keys=True).encode()
    return {
        "train": train,
        "hook": hook,
        "store": {
            "model": store.model,
            "n_tokens": store.n_tokens,
            "config_sha1": hashlib.sha1(store_config).hexdigest(),
        },
    }


def versions() -> dict[str, str]:
    """Versions of what trained the SAE."""
    return {
        "sae_atlas": sae_atlas.__version__,
        **{name: metadata.version(name) for name in ("sae-lens", "transformer-lens", "torch")},
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write atomically: a crash leaves the old file or the new one, never half of one."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float))
    tmp.replace(path)


def hook_dir(out_dir: Path, hook: str) -> Path:
    return out_dir / hook


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


def train_sae(
    store: ActivationStore,
    hook: str,
    mask: np.ndarray,
    folder: Path,
    config: TrainConfig,
    identity: Mapping[str, Any],
    progress: Callable[[TrainProgress], None] | None = None,
) -> tuple[SAE[Any], dict[str, Any]]:
    """Train (or continue training) one SAE on the rows of acts/<hook> where mask [n_tokens] is
    true; returns the inference SAE saved in `folder` and the card's data and metrics sections."""
    n_candidates = int(mask.sum())
    sae = build_sae(config, store.d_model, hook, store.model)
    trainer = SAETrainer(trainer_config(config), sae, data_provider=iter(()))
    checkpoint = latest_checkpoint(folder, identity)
    if checkpoint is not None:
        sae.load_weights_from_checkpoint(checkpoint)
        trainer.load_trainer_state(checkpoint)
    resumed_from = trainer.n_training_steps
    total_steps = trainer.cfg.total_training_steps
    batches: ShuffledBatches = store.batches(
        hook, config.batch_size, mask=mask, seed=config.seed + resumed_from, dtype=np.float16
    )
    trainer.data_provider = as_tensors(batches, config.device)
    run = _wandb_run(config, hook, identity) if config.log_to_wandb else None
    started = time.monotonic()
    losses: deque[float] = deque(maxlen=LOSS_WINDOW)
    last_log: dict[str, Any] = {}
    consistent = True
    try:
        if config.normalize_activations == "expected_average_only_in" and (
            trainer.activation_scaler.scaling_factor is None
        ):
            trainer.activation_scaler.scaling_factor = norm_scaling_factor(
                trainer.data_provider, max(1, NORM_ESTIMATE_ROWS // config.batch_size)
            )
        trainer.sae.to(trainer.cfg.device)
        while trainer.n_training_steps < total_steps:
            sparsity_log = trainer.maybe_reset_sparsity()
            consistent = False
            output = trainer.step(next(trainer.data_provider))
            trainer.n_training_steps += 1
            consistent = True
            losses.append(float(output.loss.item()))
            step = trainer.n_training_steps
            if step % WANDB_LOG_EVERY == 0 or step == total_steps:
                last_log = trainer.build_train_step_log_dict(output, trainer.n_training_samples)
                if run is not None:
                    run.log({**last_log, **sparsity_log}, step=step)
            if step % config.checkpoint_every == 0 and step < total_steps:
                save_checkpoint(trainer, folder, identity)
            if progress is not None:
                progress(TrainProgress(hook, step, total_steps, losses[-1]))
    except KeyboardInterrupt:
        if consistent and trainer.n_training_steps > resumed_from:
            save_checkpoint(trainer, folder, identity)
        raise
    finally:
        batches.close()
        if run is not None:
            run.finish()
    seconds = time.monotonic() - started
    if trainer.activation_scaler.scaling_factor is not None:
        trainer.sae.fold_activation_norm_scaling_factor(trainer.activation_scaler.scaling_factor)
        trainer.activation_scaler.scaling_factor = None
    trainer.set_final_sae_metadata()
    trainer.sae.save_inference_model(folder)
    inference_sae = SAE.load_from_disk(folder, device=config.device)
    steps_run = trainer.n_training_steps - resumed_from
    data = {
        "store": str(store.path),
        "store_model": store.model,
        "store_tokens": store.n_tokens,
        "mask": {
            "roles": list(config.roles) or "any",
            "splits": list(config.splits) or "any",
            "conditions": list(config.conditions) or "any",
        },
        "candidate_tokens": n_candidates,
        "tokens_trained": trainer.n_training_samples,
        "epochs": trainer.n_training_samples / n_candidates,
    }
    metrics = {
        "steps": trainer.n_training_steps,
        "resumed_from_step": resumed_from,
        "final_loss": float(np.mean(losses)) if losses else None,
        "final_loss_window_steps": len(losses),
        "train_l0": sae.cfg.metadata.l0,
        "dead_features": sae.cfg.metadata.num_dead_features,
        **{
            key.split("/", 1)[1]: value
            for key, value in last_log.items()
            if isinstance(value, int | float) and key.startswith(("metrics/", "losses/"))
        },
        "seconds": seconds,
        "tokens_per_second": steps_run * config.batch_size / max(seconds, 1e-9),
    }
    return inference_sae, {"data": data, "metrics": metrics}


def _wandb_run(config: TrainConfig, hook: str, identity: Mapping[str, Any]) -> Any:
    import wandb

    return wandb.init(project=config.wandb_project, name=hook, config=dict(identity))


def open_store(store_path: str | Path) -> ActivationStore:
    """The activation store at `store_path`; SaeAtlasError when it is missing or unfinished."""
    path = Path(store_path)
    if not path.is_file():
        raise SaeAtlasError(f"{path}: no such activation store; run `sae-atlas harvest` first")
    try:
        store = ActivationStore(path)
    except StoreError as error:
        raise SaeAtlasError(str(error)) from None
    if not store.complete:
        raise SaeAtlasError(f"{path}: the harvest is unfinished; run it again to complete it")
    return store


def train_saes(
    store_path: str | Path,
    out_dir: str | Path,
    config: TrainConfig,
    handle: ModelHandle | None = None,
    progress: Callable[[TrainProgress], None] | None = None,
) -> list[TrainResult]:
    """Train one SAE per hook of `config.hooks` (empty: every hook of the store), in order.

    Each goes to out_dir/<hook>/. A hook whose training card exists for the same training config
    and store is skipped (its evaluation is redone only when the eval settings changed and a
    handle is given); an interrupted training resumes from its latest checkpoint. With a model
    `handle` (sae_atlas.model.ModelHandle) each SAE is also evaluated (eval.json, and the card).
    """
    from sae_atlas.stages.evaluate import evaluate_sae

    check_config(config)
    choice = resolve_dtype(config.dtype, config.device)
    config = replace(config, dtype=choice.name)
    store = open_store(store_path)
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
    mask = training_mask(store, config)
    out = Path(out_dir)
    eval_settings = {k: v for k, v in to_dict(config).items() if k in EVAL_FIELDS}
    results = []
    for hook in hooks:
        folder = hook_dir(out, hook)
        identity = training_identity(store, config, hook)
        card = read_json(folder / CARD_FILE)
        started = datetime.now(UTC)
        if card is not None:
            refuse_other_dtype(folder, card["identity"]["train"].get("dtype"), choice)
        if card is not None and card["identity"] != json.loads(json.dumps(identity)):
            raise SaeAtlasError(
                f"{folder}: holds an SAE trained with another configuration; "
                "train into another out dir or delete it"
            )
        skipped = card is not None
        if card is None:
            folder.mkdir(parents=True, exist_ok=True)
            sae, sections = train_sae(store, hook, mask, folder, config, identity, progress)
            card = {
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
        else:
            sae = SAE.load_from_disk(folder, device=config.device)
        evaluation = card.get("evaluation")
        if handle is not None and (evaluation is None or evaluation["settings"] != eval_settings):
            card["evaluation"] = {
                "settings": eval_settings,
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
            write_json(folder / EVAL_FILE, card["evaluation"])
        if not skipped or card["evaluation"] is not evaluation:
            card["time"]["finished"] = datetime.now(UTC).isoformat()
            write_json(folder / CARD_FILE, card)
            shutil.rmtree(folder / CHECKPOINTS_DIR, ignore_errors=True)
        metrics = card["metrics"]
        results.append(
            TrainResult(
                hook=hook,
                path=folder,
                n_steps=int(metrics["steps"]),
                n_tokens=int(card["data"]["tokens_trained"]),
                seconds=0.0 if skipped else float(metrics["seconds"]),
                skipped=skipped,
                card=card,
            )
        )
    return results
