"""The training loop of one SAE: sae-lens's `SAETrainer` fed from the activation store.

`train_sae` builds the SAE (or resumes it from its latest checkpoint), feeds the trainer the
store's shuffled background reader (`ActivationStore.batches`: float16 [batch_size, d_model] per
step, made float32 on `config.device`; only a shuffle buffer is in memory, never the store),
estimates the normalization factor first when asked, checkpoints every
`config.checkpoint_every` steps and on Ctrl-C, folds the normalization into the weights, and
saves the inference SAE in sae-lens format. Returns the SAE and the training card's data and
metrics sections.

Cost: an encoder and a decoder matmul, forward and backward, per token: O(d_model x width) each;
a batchtopk SAE of width 4608 on d_model 576 at batch 4096 trains at about 2,000-3,000 tokens/s
on the 2-core development CPU, and the store-fed trainer runs at 0.97 of one fed from memory
(scripts/bench_train.py).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sae_lens import SAE
from sae_lens.training.sae_trainer import SAETrainer

from feature_store.activations import ActivationStore, ShuffledBatches
from sae_atlas.config import TrainConfig
from sae_atlas.stages.base import CountProgress
from sae_atlas.stages.train.checkpoints import latest_checkpoint, save_checkpoint
from sae_atlas.stages.train.settings import build_sae, trainer_config

NORM_ESTIMATE_ROWS = 131072
"""Activations used to estimate the normalization factor (expected_average_only_in)."""
WANDB_LOG_EVERY = 10
LOSS_WINDOW = 100


@dataclass
class StepLog:
    """What the loop keeps of its steps: the last LOSS_WINDOW losses and the last sae-lens log
    (every WANDB_LOG_EVERY steps and at the last one)."""

    losses: deque[float] = field(default_factory=lambda: deque(maxlen=LOSS_WINDOW))
    last: dict[str, Any] = field(default_factory=dict)


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


def train_sae(
    store: ActivationStore,
    hook: str,
    mask: np.ndarray,
    folder: Path,
    config: TrainConfig,
    identity: Mapping[str, Any],
    progress: CountProgress | None = None,
) -> tuple[SAE[Any], dict[str, Any]]:
    """Train (or continue training) one SAE on the rows of acts/<hook> where mask [n_tokens] is
    true; returns the inference SAE saved in `folder` and the card's data and metrics sections.
    `progress(n_steps)` after every step (and once with the steps already done when resuming)."""
    trainer = resumed_trainer(store, hook, folder, config, identity)
    resumed_from = trainer.n_training_steps
    batches: ShuffledBatches = store.batches(
        hook, config.batch_size, mask=mask, seed=config.seed + resumed_from, dtype=np.float16
    )
    trainer.data_provider = as_tensors(batches, config.device)
    run = _wandb_run(config, hook, identity) if config.log_to_wandb else None
    started = time.monotonic()
    try:
        log = run_steps(trainer, folder, config, identity, run, progress)
    finally:
        batches.close()
        if run is not None:
            run.finish()
    seconds = time.monotonic() - started
    inference_sae = save_sae(trainer, folder, config.device)
    data = {
        "store": str(store.path),
        "store_model": store.model,
        "store_tokens": store.n_tokens,
        "mask": {
            "roles": list(config.roles) or "any",
            "splits": list(config.splits) or "any",
            "conditions": list(config.conditions) or "any",
        },
        "candidate_tokens": int(mask.sum()),
        "tokens_trained": trainer.n_training_samples,
        "epochs": trainer.n_training_samples / int(mask.sum()),
    }
    steps_run = trainer.n_training_steps - resumed_from
    metrics = training_metrics(trainer, log, resumed_from, seconds, steps_run * config.batch_size)
    return inference_sae, {"data": data, "metrics": metrics}


def resumed_trainer(
    store: ActivationStore,
    hook: str,
    folder: Path,
    config: TrainConfig,
    identity: Mapping[str, Any],
) -> SAETrainer[Any, Any]:
    """A trainer of a fresh SAE for `hook`, or of the one in the latest checkpoint in `folder`
    (weights, trainer and optimizer state); its data provider is set by the caller."""
    sae = build_sae(config, store.d_model, hook, store.model)
    trainer = SAETrainer(trainer_config(config), sae, data_provider=iter(()))
    checkpoint = latest_checkpoint(folder, identity)
    if checkpoint is not None:
        sae.load_weights_from_checkpoint(checkpoint)
        trainer.load_trainer_state(checkpoint)
    return trainer


def run_steps(
    trainer: SAETrainer[Any, Any],
    folder: Path,
    config: TrainConfig,
    identity: Mapping[str, Any],
    run: Any,
    progress: CountProgress | None,
) -> StepLog:
    """Step `trainer` to its total step count, checkpointing every config.checkpoint_every steps
    and, on Ctrl-C, after the last whole step; logs to the wandb `run` (None: no wandb)."""
    resumed_from = trainer.n_training_steps
    total_steps = trainer.cfg.total_training_steps
    log = StepLog()
    consistent = True
    try:
        if config.normalize_activations == "expected_average_only_in" and (
            trainer.activation_scaler.scaling_factor is None
        ):
            trainer.activation_scaler.scaling_factor = norm_scaling_factor(
                trainer.data_provider, max(1, NORM_ESTIMATE_ROWS // config.batch_size)
            )
        trainer.sae.to(trainer.cfg.device)
        if progress is not None and resumed_from:
            progress(resumed_from)
        while trainer.n_training_steps < total_steps:
            sparsity_log = trainer.maybe_reset_sparsity()
            consistent = False
            output = trainer.step(next(trainer.data_provider))
            trainer.n_training_steps += 1
            consistent = True
            log.losses.append(float(output.loss.item()))
            step = trainer.n_training_steps
            if step % WANDB_LOG_EVERY == 0 or step == total_steps:
                log.last = trainer.build_train_step_log_dict(output, trainer.n_training_samples)
                if run is not None:
                    run.log({**log.last, **sparsity_log}, step=step)
            if step % config.checkpoint_every == 0 and step < total_steps:
                save_checkpoint(trainer, folder, identity)
            if progress is not None:
                progress(1)
    except KeyboardInterrupt:
        if consistent and trainer.n_training_steps > resumed_from:
            save_checkpoint(trainer, folder, identity)
        raise
    return log


def save_sae(trainer: SAETrainer[Any, Any], folder: Path, device: str) -> SAE[Any]:
    """Fold the normalization factor into the trained weights, save the inference SAE in
    `folder` (sae-lens format) and return it loaded from there."""
    if trainer.activation_scaler.scaling_factor is not None:
        trainer.sae.fold_activation_norm_scaling_factor(trainer.activation_scaler.scaling_factor)
        trainer.activation_scaler.scaling_factor = None
    trainer.set_final_sae_metadata()
    trainer.sae.save_inference_model(folder)
    return SAE.load_from_disk(folder, device=device)


def training_metrics(
    trainer: SAETrainer[Any, Any], log: StepLog, resumed_from: int, seconds: float, tokens: int
) -> dict[str, Any]:
    """The card's metrics: steps, the mean loss of the last steps, sae-lens's last metrics and
    losses, and the speed of this run (`tokens` trained in `seconds`)."""
    metadata = trainer.sae.cfg.metadata
    return {
        "steps": trainer.n_training_steps,
        "resumed_from_step": resumed_from,
        "final_loss": float(np.mean(log.losses)) if log.losses else None,
        "final_loss_window_steps": len(log.losses),
        "train_l0": metadata.l0,
        "dead_features": metadata.num_dead_features,
        **{
            key.split("/", 1)[1]: value
            for key, value in log.last.items()
            if isinstance(value, int | float) and key.startswith(("metrics/", "losses/"))
        },
        "seconds": seconds,
        "tokens_per_second": tokens / max(seconds, 1e-9),
    }


def _wandb_run(config: TrainConfig, hook: str, identity: Mapping[str, Any]) -> Any:
    import wandb

    return wandb.init(project=config.wandb_project, name=hook, config=dict(identity))
