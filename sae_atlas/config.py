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
from sae_atlas.model.loading import DEFAULT_MODEL


@dataclass(frozen=True)
class ModelConfig:
    """Which model to load and how: source is the default, an HF id, a folder or a .gguf path;
    dtype: float32, bfloat16, float16 or auto (every stage's dtype: bfloat16 only where measured
    fast, sae_atlas.model.dtype); adapter: a peft LoRA adapter folder merged into it ("": none)."""

    source: str = DEFAULT_MODEL
    device: str = "cpu"
    dtype: str = "auto"
    adapter: str = ""


@dataclass(frozen=True)
class CorpusConfig:
    """Which personas and questions to sample, and how.

    personas / categories: a subset of the catalogue (empty: all); n_questions: per split;
    variants: system-prompt variants per question (drawn from its split's pool); samples:
    responses per prompt; heldout_variant_share: share of each persona's system prompts held out
    (a seeded draw per persona, at least one per split; 0: the legacy corpus, where both splits
    use the first `variants` prompts); heldout_personas: share of the non-default personas held
    out whole for claims about every persona (a seeded draw, recorded; their transcripts keep
    their question split) (sae_atlas.stages.splits);
    temperature (0: greedy), top_p, max_new_tokens, batch_size, seed: how responses are sampled;
    dtype: the dtype the sampler decodes in (auto: bfloat16 where measured fast, e.g. CPUs
    with AVX512-BF16 or AMX, else float32; the store records the dtype it resolved to).
    """

    catalogue: str = ""
    personas: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    n_questions: int = 24
    variants: int = 2
    samples: int = 1
    heldout_variant_share: float = 0.4
    heldout_personas: float = 0.2
    conditions: tuple[str, ...] = (
        "persona",
        "default",
        "no_system",
        "unwrapped",
        "user_control",
        "plain_control",
    )
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 64
    batch_size: int = 64
    seed: int = 0
    dtype: str = "auto"


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
    skip_positions: the first positions of every transcript are attention sinks whose residual
    norm is ~150x that of other tokens (SmolLM2 layer 15: ~25,000 against ~170); they would take
    over the loss and the explained variance, so they are left out of training and evaluation and
    left untouched when the reconstruction is spliced in.
    dead_feature_window: steps without firing after which a feature is dead and auxiliary
    losses (TopK's AuxK) revive it; 0: a tenth of the run, at most 1000.
    device: where the SAE trains; dtype: float32, or bfloat16 for sae-lens's autocast (bfloat16
    matrix products, float32 weights and optimizer state), or auto (bfloat16 where measured fast).
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
    skip_positions: int = 1
    dead_feature_window: int = 0
    device: str = "cpu"
    dtype: str = "auto"
    seed: int = 0
    log_to_wandb: bool = False
    wandb_project: str = "sae-atlas"


@dataclass(frozen=True)
class LabelConfig:
    """The labeling pass (sae_atlas.stages.label): per-feature statistics, contrasts, tags, cards.

    block_tokens: store rows encoded per block. Cards: top_examples / quantile_examples contexts
    per feature (quantiles drawn from a uniform sample of `reservoir` firing tokens), each with
    context_tokens tokens either side; logit_tokens promoted / suppressed tokens; top_personas.
    Contrasts (a persona against the default persona on the same questions, response-level mean
    activations): candidates need a train AUROC >= auroc_min and Cohen's d >= effect_min (at most
    max_candidates per persona); a candidate holds when its held-out AUROC >= heldout_auroc_min
    and its Benjamini-Hochberg q-value (one-sided Mann-Whitney U on held-out responses, over every
    test) <= fdr. persona:<name> when it holds for at most family_max personas or one category,
    and for fewer than broad_share of them; roleplay / assistant when up / down in at least
    broad_share of the personas. format: the current token's id predicts the feature on held-out
    response tokens with R^2 >= format_min_r2 (a per-token-id mean fitted on train tokens;
    0.5: the surface form explains most of its variance on unseen text; label/surface.py).
    puppeteer (label/puppeteer.py): chosen on the train split of the personas not held out (fires
    in at least puppeteer_min_response_share of the responses of the default persona and of at
    least puppeteer_persona_share of the personas, with a coefficient of variation of the
    per-persona mean <= puppeteer_max_cv, a mean activation >= puppeteer_min_enrichment times
    that on the same text in a user turn and outside the template, not format), confirmed on
    held-out data (the same sharing, held-out personas included; paired tests over questions
    against both controls and an empirical p against puppeteer_null_neighbours matched features,
    BH over the family at fdr); the set against puppeteer_null_sets matched random sets.
    trigger:<wrapper>: its maximum over the response (response tokens
    only, never the user's message that holds the wrapper) is > 0 in at least trigger_min_rate
    of the wrapped transcripts and separates them from the unwrapped ones
    (corpus condition unwrapped: same system prompts and questions) with AUROC >=
    trigger_min_auroc. Template features: firing rate on the assistant header >=
    template_min_rate and >= template_min_enrichment times the response rate. seed: the sampling
    of quantile examples and of the shuffled-label control; device: where the SAE encodes.
    """

    block_tokens: int = 4096
    top_examples: int = 10
    quantile_examples: int = 5
    reservoir: int = 64
    context_tokens: int = 8
    logit_tokens: int = 8
    top_personas: int = 5
    auroc_min: float = 0.8
    effect_min: float = 0.8
    max_candidates: int = 32
    heldout_auroc_min: float = 0.75
    fdr: float = 0.05
    family_max: int = 3
    broad_share: float = 0.5
    puppeteer_min_response_share: float = 0.5
    puppeteer_persona_share: float = 0.9
    puppeteer_max_cv: float = 0.5
    puppeteer_min_enrichment: float = 2.0
    puppeteer_null_neighbours: int = 50
    puppeteer_null_sets: int = 1000
    format_min_r2: float = 0.5
    trigger_min_rate: float = 0.5
    trigger_min_auroc: float = 0.95
    template_min_rate: float = 0.15
    template_min_enrichment: float = 5.0
    seed: int = 0
    device: str = "cpu"


@dataclass(frozen=True)
class OrganizeConfig:
    """Feature clusters and persona space (sae_atlas.stages.organize).

    n_neighbors: neighbours per feature in the kNN graph UMAP starts from (itself included);
    cluster_dims / cluster_min_dist: the UMAP embedding HDBSCAN clusters; map_min_dist: the 2-D
    map's; n_epochs: UMAP optimisation epochs; min_cluster_size / min_samples /
    cluster_selection ("eom" or "leaf"): HDBSCAN. stability_reruns: reclusterings of a
    stability_fraction subsample with another seed each; a cluster reappears in a rerun when its
    best match there has Jaccard >= stability_jaccard. A tag family names a cluster's kind when
    it tags at least kind_share of the members, kind_enrichment times its base rate, with a
    hypergeometric p-value below kind_alpha (Bonferroni over clusters and families).
    n_components: principal components of persona space kept; max_persona_clusters: most
    clusters of personas tried. n_jobs: BLAS / numba / HDBSCAN threads (not part of the result).
    """

    n_neighbors: int = 15
    cluster_dims: int = 10
    cluster_min_dist: float = 0.0
    map_min_dist: float = 0.1
    n_epochs: int = 200
    min_cluster_size: int = 10
    min_samples: int = 5
    cluster_selection: str = "eom"
    stability_reruns: int = 3
    stability_fraction: float = 0.8
    stability_jaccard: float = 0.5
    kind_share: float = 0.3
    kind_enrichment: float = 2.0
    kind_alpha: float = 0.01
    n_components: int = 10
    max_persona_clusters: int = 8
    seed: int = 0
    n_jobs: int = 1


@dataclass(frozen=True)
class DynamicsConfig:
    """Multi-turn rollouts, steering kicks, puppeteer ablation and the trigger scan
    (sae_atlas.stages.dynamics).

    personas: starting personas (empty: n_personas of the atlas, the default first, spread over
    the persona clusters); seeds: rollouts per start; n_turns: exchanges per rollout, user turns
    from the question bank (model_plays_user: the model writes the user turns after the first);
    n_scenes: scene-setting first user turns without a system prompt. Sampling: temperature,
    top_p, max_new_tokens, batch_size, dtype (of the plain model copy that decodes; auto:
    bfloat16 where measured fast). Steering:
    steer_personas (empty: the n_steer personas farthest below the default on the assistant
    axis), each added at turn 0 only along persona vector minus default vector with strength
    steer_scale x the mean residual norm of response tokens, against a matched random direction,
    on n_prompts prompts. Markers: assistant-style phrase rates with and without zero-ablating
    the features tagged ablate_tag (puppeteer; "assistant" is the fallback when an SAE has no
    puppeteer features). Trigger scan: wrappers (names of WRAPPERS) on n_prompts prompts x
    seeds; a feature is a candidate when it fires in >= trigger_min_rate of the wrapped
    responses and <= trigger_max_base_rate of the plain ones on the first half of the prompts,
    confirmed on the other half by a one-sided Fisher test under Benjamini-Hochberg at fdr.
    Attractors (`flow`): experiments: the rollout conditions sampled (persona_prompt: the
    system prompt kept every turn; persona_once: given for the first turn only; scene;
    self_talk: the model writes both sides after one of n_self_talk openers); n_regions: regions
    of persona space (the personas clustered; at least the organize stage's persona clusters);
    calibration_chats: multi-turn chats per persona and prompt variant built from the corpus's
    responses, whose turns give each region its centroid per turn; max_lag: the largest k of
    P(back in the assistant region after k turns); n_bootstrap: resamples of every bootstrap CI
    and permutations of the attractor null.
    """

    personas: tuple[str, ...] = ()
    n_personas: int = 8
    seeds: int = 2
    n_turns: int = 4
    n_scenes: int = 4
    model_plays_user: bool = False
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 48
    batch_size: int = 64
    dtype: str = "auto"
    steer_personas: tuple[str, ...] = ()
    n_steer: int = 3
    steer_scale: float = 0.3
    n_prompts: int = 8
    ablate_tag: str = "puppeteer"
    wrappers: tuple[str, ...] = ("pirate_tag", "year_2027", "bullets")
    trigger_min_rate: float = 0.5
    trigger_max_base_rate: float = 0.05
    fdr: float = 0.05
    experiments: tuple[str, ...] = ("persona_prompt", "persona_once", "scene", "self_talk")
    n_self_talk: int = 4
    n_regions: int = 8
    calibration_chats: int = 1
    max_lag: int = 7
    n_bootstrap: int = 2000
    seed: int = 0


@dataclass(frozen=True)
class BuildConfig:
    """Everything `sae-atlas build` needs."""

    model: ModelConfig = field(default_factory=ModelConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    harvest: HarvestConfig = field(default_factory=HarvestConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    organize: OrganizeConfig = field(default_factory=OrganizeConfig)
    label: LabelConfig = field(default_factory=LabelConfig)
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)


def on_device(
    config: BuildConfig, device: str | None = None, dtype: str | None = None
) -> BuildConfig:
    """`config` with every stage that runs torch put on `device` and in `dtype` (None: as
    configured): the model, corpus and dynamics sampling, SAE training (float32, auto, or any
    other dtype: sae-lens's bfloat16 autocast) and labeling (the SAE encodes on `device` in
    float32)."""
    replace = dataclasses.replace
    if device is not None:
        config = replace(
            config,
            model=replace(config.model, device=device),
            train=replace(config.train, device=device),
            label=replace(config.label, device=device),
        )
    if dtype is not None:
        config = replace(
            config,
            model=replace(config.model, dtype=dtype),
            corpus=replace(config.corpus, dtype=dtype),
            dynamics=replace(config.dynamics, dtype=dtype),
            train=replace(
                config.train, dtype=dtype if dtype in ("float32", "auto") else "bfloat16"
            ),
        )
    return config


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
