"""Edits of a set of SAE features in the residual stream: zero, resample, add or cap them.

Each edit is an `Intervention` (sae_atlas.model.steering) at the SAE's hook, acting at every
position; the SAE's reconstruction error and every other feature stay as they were:
- zero: acts - sum_i a_i(acts) W_dec[i] (steering.ablate_features);
- resample: the set's codes at each position replaced by the set's codes at a token drawn at
  random from a bank of response tokens (the set's joint distribution on real text, not 0);
- add: acts + sum_i scale_i W_dec[i] (scale: each feature's mean activation where it fires, so
  the set is switched on at its usual strength);
- cap: each feature's code clamped at a ceiling, acts - sum_i max(a_i(acts) - ceiling_i, 0)
  W_dec[i] (ceiling: the feature's mean activation over the default persona's response tokens,
  so a persona run cannot carry more of it than the default assistant does on average);
  positions where every code is at or below its ceiling are left exactly as they were.
`code_bank` draws that bank from an activation store. Cost: one SAE encode per edited forward
pass (zero, resample, cap), a [|set|, d_model] product (add).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from feature_store.activations import ActivationStore
from feature_store.schema import ROLE_CODE
from sae_atlas.model.steering import Intervention, ablate_features

EDITS: tuple[str, ...] = ("zero", "resample", "add", "cap")
CAP_RULE = "each feature capped at its mean activation over the default persona's response tokens"
"""The ceiling the causal test's cap edit uses (the same rule for the matched random sets)."""


def _index(features: Sequence[int]) -> torch.Tensor:
    return torch.as_tensor(np.asarray(features, dtype=np.int64))


def resample_features(
    hook: str, sae: Any, features: Sequence[int], bank: np.ndarray, seed: int
) -> Intervention:
    """The set's codes at each position replaced by those of a random row of bank [B, d_sae]
    (its rows: codes of random response tokens); draws from a generator seeded with `seed`."""
    index = _index(features)
    drawn_codes = torch.from_numpy(np.ascontiguousarray(bank[:, index.numpy()], dtype=np.float32))
    generator = torch.Generator().manual_seed(seed)

    def function(acts: torch.Tensor, hook: Any = None) -> torch.Tensor:
        with torch.no_grad():
            weights = sae.W_dec
            on_sae = index.to(weights.device)
            codes = sae.encode(acts.to(weights.device, weights.dtype))[..., on_sae]
            rows = torch.randint(0, len(drawn_codes), codes.shape[:-1], generator=generator)
            target = drawn_codes[rows].to(codes.device, codes.dtype)
            delta = (codes - target) @ weights[on_sae]
        return acts - delta.to(acts.device, acts.dtype)

    return Intervention(hook, function, f"resample {len(index)} features at {hook}")


def add_features(hook: str, sae: Any, features: Sequence[int], scale: np.ndarray) -> Intervention:
    """acts + sum_i scale[i] W_dec[i] at every position (scale: [d_sae])."""
    index = _index(features)
    with torch.no_grad():
        weights = sae.W_dec.detach().float().cpu()
        added = torch.from_numpy(np.asarray(scale, np.float32)[index.numpy()]) @ weights[index]

    def function(acts: torch.Tensor, hook: Any = None) -> torch.Tensor:
        return acts + added.to(acts.device, acts.dtype)

    return Intervention(hook, function, f"add {len(index)} features at {hook}")


def cap_features(hook: str, sae: Any, features: Sequence[int], ceiling: np.ndarray) -> Intervention:
    """Each feature's code clamped at ceiling[i] (ceiling: [d_sae]): acts - sum_i
    max(a_i(acts) - ceiling[i], 0) W_dec[i]; a position whose codes are all at or below their
    ceilings is returned unchanged."""
    index = _index(features)
    limit = torch.from_numpy(np.asarray(ceiling, np.float32)[index.numpy()])

    def function(acts: torch.Tensor, hook: Any = None) -> torch.Tensor:
        with torch.no_grad():
            weights = sae.W_dec
            on_sae = index.to(weights.device)
            codes = sae.encode(acts.to(weights.device, weights.dtype))[..., on_sae]
            excess = (codes - limit.to(codes.device, codes.dtype)).clamp(min=0)
            delta = excess @ weights[on_sae]
        return acts - delta.to(acts.device, acts.dtype)

    return Intervention(hook, function, f"cap {len(index)} features at {hook}")


def feature_edits(
    hook: str,
    sae: Any,
    features: Sequence[int],
    bank: np.ndarray,
    scale: np.ndarray,
    ceiling: np.ndarray,
    seed: int,
) -> dict[str, Intervention]:
    """{edit: Intervention} for each of EDITS on the feature set `features` (scale: [d_sae] for
    add, ceiling: [d_sae] for cap)."""
    return {
        "zero": ablate_features(hook, sae, list(features)),
        "resample": resample_features(hook, sae, features, bank, seed),
        "add": add_features(hook, sae, features, scale),
        "cap": cap_features(hook, sae, features, ceiling),
    }


@torch.inference_mode()
def code_bank(
    store: ActivationStore, sae: Any, hook: str, size: int, seed: int, split: str = "train"
) -> np.ndarray:
    """[size, d_sae] float32 SAE codes of `size` response tokens drawn at random (without
    replacement) from the store's transcripts of `split`. Reads the token table and `size` rows."""
    provenance = store.provenance()
    table = store.token_rows()
    docs = np.flatnonzero(provenance["split"].to_numpy(dtype=object) == split)
    rows = np.flatnonzero((table["role"] == ROLE_CODE["assistant"]) & np.isin(table["doc"], docs))
    chosen = np.sort(np.random.default_rng(seed).choice(rows, min(size, len(rows)), replace=False))
    acts = np.stack([store.acts(hook, int(r), int(r) + 1)[0] for r in chosen])
    weights = sae.W_dec
    codes = sae.encode(torch.from_numpy(acts).to(weights.device, weights.dtype))
    return codes.float().cpu().numpy()
