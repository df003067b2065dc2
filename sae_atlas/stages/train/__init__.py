"""Train sparse autoencoders on the activation store with sae-lens, one SAE per hook point.

`train_saes(store, out, config, handle=...)` (`stage`) trains one SAE per hook, one after another,
on `config.device` (dtype bfloat16: sae-lens's autocast), each into `out/<hook>/` in sae-lens
format with its training card and, given a model handle, its evaluation
(`sae_atlas.stages.evaluate`); a hook whose card exists for the same config and store is skipped.
`loop` feeds sae-lens's trainer from the store's shuffled reader and checkpoints it
(`checkpoints`: every `config.checkpoint_every` steps and on Ctrl-C, resumed to the same total
step count); `settings` builds what sae-lens is told. `sae_atlas.sae.load_sae(source)` loads a
trained or pretrained SAE instead.

Cost: an encoder and a decoder matmul, forward and backward, per token (see `loop`); a TopK
SAE trains with a sparse backward and a gathered decoder (`topk`: one dense product per step
instead of six).
"""

from __future__ import annotations

from sae_atlas.stages.base import open_store
from sae_atlas.stages.train.checkpoints import latest_checkpoint, save_checkpoint
from sae_atlas.stages.train.loop import as_tensors, norm_scaling_factor, train_sae
from sae_atlas.stages.train.settings import (
    LR_SCHEDULERS,
    NORMALIZATIONS,
    TRAIN_DTYPES,
    build_sae,
    check_config,
    dead_feature_window,
    sae_config,
    trainer_config,
)
from sae_atlas.stages.train.stage import (
    CARD_FILE,
    EVAL_FILE,
    TrainResult,
    train_saes,
    training_identity,
    training_mask,
)

__all__ = [
    "CARD_FILE",
    "EVAL_FILE",
    "LR_SCHEDULERS",
    "NORMALIZATIONS",
    "TRAIN_DTYPES",
    "TrainResult",
    "as_tensors",
    "build_sae",
    "check_config",
    "dead_feature_window",
    "latest_checkpoint",
    "norm_scaling_factor",
    "open_store",
    "sae_config",
    "save_checkpoint",
    "train_sae",
    "train_saes",
    "trainer_config",
    "training_identity",
    "training_mask",
]
