"""The dynamics settings a run can work with: `check_dynamics_config` raises a one-line error
naming the first field of DynamicsConfig that cannot work (before any model time is spent)."""

from __future__ import annotations

from sae_atlas.config import DynamicsConfig
from sae_atlas.errors import SaeAtlasError
from sae_atlas.stages.dynamics.rollouts import SCENES
from sae_atlas.stages.dynamics.wrapper_firing import WRAPPERS


def check_dynamics_config(config: DynamicsConfig) -> None:
    """SaeAtlasError naming the field when a dynamics setting cannot work."""
    for name in ("n_personas", "seeds", "n_prompts", "max_new_tokens", "batch_size"):
        if getattr(config, name) < 1:
            raise SaeAtlasError(f"dynamics.{name}: is {getattr(config, name)}; use >= 1")
    if config.n_turns < 2:
        raise SaeAtlasError(
            f"dynamics.n_turns: is {config.n_turns}; transitions need at least 2 turns"
        )
    if not 0 <= config.n_scenes <= len(SCENES):
        raise SaeAtlasError(f"dynamics.n_scenes: use 0..{len(SCENES)}")
    if config.n_prompts < 2:
        raise SaeAtlasError("dynamics.n_prompts: the wrapper scan needs at least 2 prompts")
    unknown = [name for name in config.wrappers if name not in WRAPPERS]
    if unknown or not config.wrappers:
        raise SaeAtlasError(
            f"dynamics.wrappers: {unknown or 'none'}; use some of {', '.join(WRAPPERS)}"
        )
