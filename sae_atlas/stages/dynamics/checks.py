"""The dynamics settings a run can work with: `check_dynamics_config` raises a one-line error
naming the first field of DynamicsConfig that cannot work (before any model time is spent)."""

from __future__ import annotations

from sae_atlas.config import DynamicsConfig
from sae_atlas.errors import SaeAtlasError
from sae_atlas.stages.dynamics.rollouts import EXPERIMENTS, SCENES, SELF_TALK_OPENERS
from sae_atlas.stages.dynamics.wrapper_firing import WRAPPERS


def check_dynamics_config(config: DynamicsConfig) -> None:
    """SaeAtlasError naming the field when a dynamics setting cannot work."""
    names = ("n_personas", "seeds", "n_prompts", "max_new_tokens", "batch_size", "max_lag")
    for name in (*names, "calibration_chats"):
        if getattr(config, name) < 1:
            raise SaeAtlasError(f"dynamics.{name}: is {getattr(config, name)}; use >= 1")
    if config.n_turns < 2:
        raise SaeAtlasError(
            f"dynamics.n_turns: is {config.n_turns}; transitions need at least 2 turns"
        )
    if not 0 <= config.n_scenes <= len(SCENES):
        raise SaeAtlasError(f"dynamics.n_scenes: use 0..{len(SCENES)}")
    if not 0 <= config.n_self_talk <= len(SELF_TALK_OPENERS):
        raise SaeAtlasError(f"dynamics.n_self_talk: use 0..{len(SELF_TALK_OPENERS)}")
    if config.n_regions < 2:
        raise SaeAtlasError(f"dynamics.n_regions: is {config.n_regions}; use >= 2")
    unknown_experiments = [e for e in config.experiments if e not in EXPERIMENTS]
    if unknown_experiments or "persona_prompt" not in config.experiments:
        raise SaeAtlasError(
            f"dynamics.experiments: {unknown_experiments or config.experiments}; use some of "
            f"{', '.join(EXPERIMENTS)}, persona_prompt included (the drift baseline)"
        )
    if config.n_prompts < 2:
        raise SaeAtlasError("dynamics.n_prompts: the wrapper scan needs at least 2 prompts")
    unknown = [name for name in config.wrappers if name not in WRAPPERS]
    if unknown or not config.wrappers:
        raise SaeAtlasError(
            f"dynamics.wrappers: {unknown or 'none'}; use some of {', '.join(WRAPPERS)}"
        )
