"""Configuration: one dataclass per stage, gathered in BuildConfig, read from and written to YAML.

Profiles (`quick`, `full`) are YAML files in sae_atlas/configs/. A stage's output records the
config it was made with (`stage_config`), and a stage is skipped when its output exists for the
same config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, TypeVar

import yaml

from sae_atlas.errors import SaeAtlasError
from sae_atlas.models import DEFAULT_MODEL


@dataclass(frozen=True)
class ModelConfig:
    """Which model to load and how: source is the default, an HF id, a folder or a .gguf path."""

    source: str = DEFAULT_MODEL
    device: str = "cpu"
    dtype: str = "float32"


@dataclass(frozen=True)
class CorpusConfig:
    """Which personas and questions to sample, and how.

    personas / categories: a subset of the catalogue (empty: all); n_questions: per split;
    variants: system-prompt variants per persona; samples: responses per prompt;
    temperature (0: greedy), top_p, max_new_tokens, batch_size, seed: how responses are sampled;
    dtype: the dtype the sampler decodes in (bfloat16: fast on CPUs with AVX512-BF16).
    """

    catalogue: str = ""
    personas: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    n_questions: int = 24
    variants: int = 2
    samples: int = 1
    conditions: tuple[str, ...] = (
        "persona",
        "default",
        "no_system",
        "user_control",
        "plain_control",
    )
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 64
    batch_size: int = 64
    seed: int = 0
    dtype: str = "bfloat16"


@dataclass(frozen=True)
class HarvestConfig:
    """Which hook points to record and how to batch the forward passes.

    batch_tokens bounds a batch's padded size (rows x longest sequence); sequences are sorted by
    length so batches hold similar lengths; max_len truncates longer transcripts.
    """

    hooks: tuple[str, ...] = ("blocks.15.hook_resid_post",)
    batch_tokens: int = 8192
    max_batch: int = 64
    max_len: int = 1024


@dataclass(frozen=True)
class TrainConfig:
    """SAE training on the activation store (one SAE per hook point) and its evaluation.

    hooks: empty = every hook of the store. architecture: batchtopk, topk, jumprelu,
    matryoshka_batchtopk or standard. width: d_sae. k: active features per token (the target L0
    of jumprelu). sparsity_coefficient: L1 (standard) or L0 (jumprelu) coefficient.
    matryoshka_widths: nested prefix widths (empty: width/8, width/4, width/2, width).
    training_tokens: budget per SAE; batch_size: tokens per step. lr_scheduler: constant,
    cosineannealing or cosineannealingwarmrestarts, with warm-up and final decay steps.
    roles / splits / conditions: which tokens train (empty: any). Evaluation uses tokens of
    eval_splits that are not training tokens: up to eval_tokens activations from the store and
    eval_transcripts transcripts (cut to eval_max_len tokens) through the model.
    """

    hooks: tuple[str, ...] = ()
    architecture: str = "batchtopk"
    width: int = 4608
    k: int = 32
    sparsity_coefficient: float = 1.0
    matryoshka_widths: tuple[int, ...] = ()
    normalize_activations: str = "expected_average_only_in"
    training_tokens: int = 2_000_000
    batch_size: int = 4096
    lr: float = 3e-4
    lr_scheduler: str = "constant"
    lr_warm_up_steps: int = 0
    lr_decay_steps: int = 0
    roles: tuple[str, ...] = ()
    splits: tuple[str, ...] = ("train",)
    conditions: tuple[str, ...] = ()
    checkpoint_every: int = 500
    eval_splits: tuple[str, ...] = ("heldout",)
    eval_tokens: int = 65536
    eval_transcripts: int = 32
    eval_max_len: int = 256
    device: str = "cpu"
    seed: int = 0
    log_to_wandb: bool = False
    wandb_project: str = "sae-atlas"


@dataclass(frozen=True)
class BuildConfig:
    """Everything `sae-atlas build` needs."""

    model: ModelConfig = field(default_factory=ModelConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    harvest: HarvestConfig = field(default_factory=HarvestConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass `cls` from `data`, recursing into nested dataclasses; unknown keys fail."""
    if not isinstance(data, dict):
        raise SaeAtlasError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise SaeAtlasError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(fields)}")
    values: dict[str, Any] = {}
    defaults = cls()
    for name, value in data.items():
        default = getattr(defaults, name)
        if dataclasses.is_dataclass(default):
            values[name] = from_dict(type(default), value, f"{where}.{name}")
        elif isinstance(default, tuple):
            values[name] = tuple(value) if isinstance(value, list | tuple) else (value,)
        else:
            values[name] = value
    return cls(**values)


def to_dict(config: Any) -> dict[str, Any]:
    """Plain, JSON- and YAML-ready dict of a config dataclass (tuples become lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return {k: plain(v) for k, v in dataclasses.asdict(config).items()}


def load_config(profile_or_path: str) -> BuildConfig:
    """A BuildConfig from a profile name (quick, full) or a YAML file."""
    path = Path(profile_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise SaeAtlasError(f"{path}: no such config file")
        text = path.read_text()
    else:
        resource = files("sae_atlas") / "configs" / f"{profile_or_path}.yaml"
        if not resource.is_file():
            raise SaeAtlasError(
                f"unknown profile {profile_or_path!r}; use quick, full or a .yaml file"
            )
        text = resource.read_text()
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise SaeAtlasError(f"{profile_or_path}: not valid YAML: {error}") from None
    return from_dict(BuildConfig, data, str(profile_or_path))


def dump_config(config: BuildConfig) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)
