"""Interventions on the residual stream: add a direction, ablate SAE features, cap a projection.

Each `Intervention` turns into a TransformerLens hook at `blocks.L.hook_resid_post`; `intervene`
installs a list of them on the model handle's bridge for the duration of a `with` block and
removes them afterwards, even on error. They act on the bridge's forward passes (and
`handle.hf_model`'s, which the bridge wraps in place). KV-cached sampling runs on the plain copy
from `sampling_model`: `steered` installs the same functions there as forward hooks on
its decoder blocks, with the same guarantee. `matched_random` gives the control for an added
direction: a random direction of the same norm. Cost: one extra [batch, seq, d_model] operation
per hooked layer (an SAE encode for feature ablation). Returned activations have the input's
shape and dtype.

    with intervene(handle, [add_direction(hook, pirate_vector, 8.0)]):
        ...  # score, measure
    with steered(handle, sampling_model(handle), [ablate_features(hook, sae, [91, 141])]):
        ...  # sample
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sae_atlas.errors import SaeAtlasError
from sae_atlas.model.forward import decoder_layers
from sae_atlas.model.handle import ModelHandle

HookFunction = Callable[[torch.Tensor, Any], torch.Tensor]


@dataclass(frozen=True)
class Intervention:
    """A named hook function at one hook point; `describe` says what it does, for records."""

    hook: str
    function: HookFunction
    describe: str


def _unit(direction: np.ndarray | torch.Tensor) -> torch.Tensor:
    vector = torch.as_tensor(np.asarray(direction, dtype=np.float32)).flatten()
    norm = vector.norm()
    if not torch.isfinite(norm) or norm == 0:
        raise SaeAtlasError("a steering direction must be a finite, non-zero vector")
    return vector / norm


def add_direction(hook: str, direction: np.ndarray, strength: float) -> Intervention:
    """acts + strength * direction / |direction| at every position: [batch, seq, d_model]."""
    unit = _unit(direction)

    def function(acts: torch.Tensor, hook: Any = None) -> torch.Tensor:
        return acts + strength * unit.to(acts.device, acts.dtype)

    return Intervention(hook, function, f"add {strength:g} x unit direction at {hook}")


def cap_projection(
    hook: str, axis: np.ndarray, floor: float | None = None, ceiling: float | None = None
) -> Intervention:
    """Clamp each position's projection on the unit `axis` into [floor, ceiling].

    Only the component along the axis changes; the orthogonal part is untouched.
    """
    if floor is None and ceiling is None:
        raise SaeAtlasError("cap_projection needs a floor, a ceiling or both")
    unit = _unit(axis)

    def function(acts: torch.Tensor, hook: Any = None) -> torch.Tensor:
        direction = unit.to(acts.device, acts.dtype)
        projection = acts @ direction
        clamped = projection.clamp(min=floor, max=ceiling)
        return acts + (clamped - projection).unsqueeze(-1) * direction

    return Intervention(hook, function, f"cap projection to [{floor}, {ceiling}] at {hook}")


def ablate_features(
    hook: str,
    sae: Any,
    features: Sequence[int],
    mode: str = "zero",
    means: np.ndarray | None = None,
) -> Intervention:
    """Remove the contribution of SAE `features` (zero) or set it to their mean (mean).

    acts - sum_i (a_i(acts) - target_i) * W_dec[i]: the SAE's reconstruction error and all other
    features stay as they were. `means`: [d_sae] mean activations, needed for mode "mean".
    """
    if mode not in ("zero", "mean"):
        raise SaeAtlasError(f"unknown ablation mode {mode!r}; use zero or mean")
    if mode == "mean" and means is None:
        raise SaeAtlasError("mean ablation needs the features' mean activations")
    index = torch.as_tensor(list(features), dtype=torch.long)
    d_sae = int(sae.W_dec.shape[0])
    if len(index) == 0 or int(index.min()) < 0 or int(index.max()) >= d_sae:
        raise SaeAtlasError(f"feature indices must be in 0..{d_sae - 1}")
    target = (
        torch.zeros(len(index))
        if mode == "zero"
        else torch.as_tensor(np.array(means, dtype=np.float32))[index]
    )

    def function(acts: torch.Tensor, hook: Any = None) -> torch.Tensor:
        with torch.no_grad():
            weights = sae.W_dec
            on_sae = index.to(weights.device)
            codes = sae.encode(acts.to(weights.device, weights.dtype))[..., on_sae]
            decoder = weights[on_sae]
            delta = (codes - target.to(codes.device, codes.dtype)) @ decoder
        return acts - delta.to(acts.device, acts.dtype)

    return Intervention(hook, function, f"{mode}-ablate {len(index)} features at {hook}")


def matched_random(direction: np.ndarray, seed: int) -> np.ndarray:
    """A random direction with the norm of `direction` (the control for an added direction)."""
    vector = np.random.default_rng(seed).standard_normal(np.asarray(direction).size)
    return (vector / np.linalg.norm(vector) * np.linalg.norm(direction)).astype(np.float32)


@contextmanager
def intervene(handle: ModelHandle, interventions: Sequence[Intervention]) -> Iterator[None]:
    """Install `interventions` on the model for the block; they are removed afterwards."""
    handle.check_hooks([i.hook for i in interventions])
    with handle.bridge.hooks(fwd_hooks=[(i.hook, i.function) for i in interventions]):
        yield


@contextmanager
def steered(
    handle: ModelHandle, model: torch.nn.Module, interventions: Sequence[Intervention]
) -> Iterator[None]:
    """Install `interventions` on a plain model from `sampling_model` (forward hooks on its
    decoder blocks) for the block; removed afterwards, even on error."""
    blocks = decoder_layers(model)
    removers = []
    try:
        for layer, intervention in zip(
            handle.check_hooks([i.hook for i in interventions]), interventions, strict=True
        ):

            def hook(module: Any, args: Any, output: Any, function: Any = intervention.function):
                if isinstance(output, tuple):
                    return (function(output[0]), *output[1:])
                return function(output)

            removers.append(blocks[layer].register_forward_hook(hook))
        yield
    finally:
        for remover in removers:
            remover.remove()
