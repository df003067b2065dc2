"""What sae-lens is told: the training SAE and trainer configs a TrainConfig builds, and the
checks that refuse a config that cannot train before anything is read or written.

Computes nothing; building an SAE allocates its weights (2 x d_model x width floats), seeded so
the same config gives the same SAE.
"""

from __future__ import annotations

from typing import Any

import torch
from sae_lens.config import LoggingConfig, SAETrainerConfig
from sae_lens.registry import get_sae_training_class
from sae_lens.saes import TrainingSAE, TrainingSAEConfig

from sae_atlas.config import TrainConfig
from sae_atlas.errors import SaeAtlasError
from sae_atlas.sae import ARCHITECTURES
from sae_atlas.stages.train.topk import SparseTopKTrainingSAE

NORMALIZATIONS = ("none", "expected_average_only_in")
TRAIN_DTYPES = ("auto", "float32", "bfloat16")
"""float32, or bfloat16: sae-lens's autocast (its only one); auto: bfloat16 where measured fast
(sae_atlas.model.dtype.resolve_dtype on the training device)."""
LR_SCHEDULERS = ("constant", "cosineannealing", "cosineannealingwarmrestarts")
TRAINING_CLASSES: dict[str, type[TrainingSAE[Any]]] = {"topk": SparseTopKTrainingSAE}
"""Architectures whose training SAE is ours (the same step, fewer dense products); the others
are sae-lens's (its registry)."""


def check_config(config: TrainConfig) -> None:
    """SaeAtlasError for a config that cannot train, before anything is read or written."""
    choices = (
        ("SAE architecture", config.architecture, tuple(ARCHITECTURES), ""),
        ("normalize_activations", config.normalize_activations, NORMALIZATIONS, ""),
        ("lr_scheduler", config.lr_scheduler, LR_SCHEDULERS, ""),
        ("train dtype", config.dtype, TRAIN_DTYPES, " (bfloat16: sae-lens's autocast)"),
    )
    for what, value, valid, note in choices:
        if value not in valid:
            raise SaeAtlasError(f"unknown {what} {value!r}; valid: {', '.join(valid)}{note}")
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
    """A freshly initialized training SAE (TRAINING_CLASSES, else sae-lens's registry); the same
    seed gives the same weights."""
    cfg = sae_config(config, d_in, hook, model)
    sae_class = TRAINING_CLASSES.get(config.architecture)
    if sae_class is None:
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
