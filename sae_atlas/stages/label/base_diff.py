"""The puppeteer against the pre-post-training base model, on identical tokens.

Where a user supplies the base model (`--base`), the same transcripts' token ids (held-out chats
of the corpus: system prompt, user turn, assistant answer) run through the tuned model and the
base model, and both residuals at the SAE's hook are encoded with the same SAE. Per response and
feature: the mean code over its assistant tokens and over its user tokens, in each model
(`role_codes`). Per feature of the chosen set, and for the set as a whole (codes summed):
- ratio_assistant = sum over responses of the base's assistant means / the tuned model's;
  ratio_user the same over user turns (1: post-training left the feature where it was);
- contrast = log ratio_assistant - log ratio_user (< 0: post-training raised the feature more in
  assistant turns than in user turns, the puppeteer's expected sign);
- against the matched random features (feature i against random_sets[:, i]; the set against
  each random set, summed): the puppeteer's contrast minus the random ones' mean contrast;
each with a bootstrap 95% interval over responses (one resample of responses serves both models
and both roles: the comparison is paired), a two-sided bootstrap p-value of the difference and
BH q-values over the rows. Cost: two forward passes (to the hook's layer) over the responses'
tokens and two SAE encodes; the bootstrap is [n_bootstrap, n] x [n, k] products.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from feature_store.schema import ROLE_CODE
from feature_store.transcripts import Transcript, TranscriptStore
from sae_atlas.errors import SaeAtlasError
from sae_atlas.model import ModelHandle, length_batches, padded, residual_activations
from sae_atlas.stages.corpus import SAMPLED_CONDITIONS
from sae_atlas.stages.dynamics.flow import bootstrap_weights
from sae_atlas.stats import benjamini_hochberg, bootstrap_p


def chat_responses(path: str | Path, n: int, seed: int, split: str = "heldout") -> list[Transcript]:
    """Up to n transcripts of `split` drawn at random (seeded) from the sampled conditions of a
    transcripts.h5, each with user and assistant tokens, in store order."""
    store = TranscriptStore(path)
    rows = store.provenance()
    wanted = np.flatnonzero(
        rows["condition"].isin(list(SAMPLED_CONDITIONS)).to_numpy()
        & (rows["split"].to_numpy(dtype=object) == split)
    )
    chosen = np.random.default_rng(seed).permutation(wanted)
    kept: list[Transcript] = []
    for start in range(0, len(chosen), 4 * n):
        for transcript in store.read(np.sort(chosen[start : start + 4 * n])):
            roles = np.asarray(transcript.roles)
            if (roles == ROLE_CODE["user"]).any() and (roles == ROLE_CODE["assistant"]).any():
                kept.append(transcript)
        if len(kept) >= n:
            break
    return kept[:n]


@dataclass(frozen=True)
class RoleCodes:
    """Per response, the mean SAE code of each of k features over its assistant tokens
    (assistant [n, k]) and over its user tokens (user [n, k])."""

    assistant: np.ndarray
    user: np.ndarray


@torch.inference_mode()
def role_codes(
    handle: ModelHandle,
    transcripts: Sequence[Transcript],
    hook: str,
    sae: Any,
    features: np.ndarray,
    batch_tokens: int = 8192,
) -> RoleCodes:
    """RoleCodes of `features` [k] on `transcripts` run through `handle` (token ids as stored)."""
    vocab = int(handle.hf_model.get_input_embeddings().weight.shape[0])
    if max(int(np.max(t.token_ids)) for t in transcripts) >= vocab:
        raise SaeAtlasError(
            f"{handle.model_id}: its vocabulary ({vocab}) lacks token ids of the transcripts; "
            "the base model must share the tuned model's tokenizer"
        )
    pad_id = int(handle.tokenizer.pad_token_id or 0)
    order = np.argsort([len(t) for t in transcripts], kind="stable")
    lengths = np.array([len(transcripts[i]) for i in order])
    index = torch.as_tensor(features, dtype=torch.long)
    out = {role: np.zeros((len(transcripts), len(features))) for role in ("assistant", "user")}
    for part in length_batches(lengths, batch_tokens, 64):
        rows = order[part]
        ids, mask = padded([transcripts[i] for i in rows], pad_id)
        acts = residual_activations(handle, ids, [hook])[hook]
        weights = sae.W_dec
        codes = sae.encode(acts.to(weights.device, weights.dtype))[..., index.to(weights.device)]
        codes_np = codes.float().cpu().numpy()
        for row, at in enumerate(rows):
            roles = np.asarray(transcripts[at].roles)
            for role in out:
                where = np.flatnonzero(mask[row][: len(roles)] & (roles == ROLE_CODE[role]))
                out[role][at] = codes_np[row, where].mean(0)
    return RoleCodes(out["assistant"], out["user"])


def _log_ratio(base: np.ndarray, tuned: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[B, k] log(sum_r w base / sum_r w tuned) for weights [B, n] and codes [n, k] (NaN where
    either sum is 0)."""
    top, bottom = weights @ base, weights @ tuned
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((top > 0) & (bottom > 0), np.log(top) - np.log(bottom), np.nan)


def _contrast(tuned: RoleCodes, base: RoleCodes, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Log ratios [B, k] in assistant and user turns, and their difference (the contrast)."""
    assistant = _log_ratio(base.assistant, tuned.assistant, weights)
    user = _log_ratio(base.user, tuned.user, weights)
    return {"assistant": assistant, "user": user, "contrast": assistant - user}


def _summed(codes: RoleCodes, columns: np.ndarray) -> RoleCodes:
    """RoleCodes [n, len(columns)] -> the columns' sum, one column per row of `columns`
    ([m, k] column indices: m sets of k)."""
    return RoleCodes(codes.assistant[:, columns].sum(-1), codes.user[:, columns].sum(-1))


def _interval(draws: np.ndarray) -> tuple[float, float]:
    low, high = np.nanpercentile(draws, [2.5, 97.5]) if np.isfinite(draws).any() else (np.nan,) * 2
    return float(low), float(high)


def turn_ratios(
    tuned: RoleCodes,
    base: RoleCodes,
    chosen: np.ndarray,
    random_sets: np.ndarray,
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per chosen feature and one for the set (feature -1): ratio_assistant, ratio_user
    and the contrast with intervals, the matched random features' mean contrast, the difference
    with its interval, p (two-sided bootstrap) and BH q. tuned, base: RoleCodes of the columns
    [chosen..., random_sets.flatten()...] (random_sets: [J, k])."""
    k, n = len(chosen), len(tuned.assistant)
    random_columns = k + np.arange(random_sets.size).reshape(random_sets.shape)
    units = {
        **{int(f): (np.array([[i]]), random_columns[:, [i]]) for i, f in enumerate(chosen)},
        -1: (np.arange(k)[None], random_columns),
    }
    weights = np.vstack([np.ones((1, n)), bootstrap_weights(n, n_bootstrap, seed)])
    rows = []
    for feature, (own, matched) in units.items():
        target = _contrast(_summed(tuned, own), _summed(base, own), weights)
        null = _contrast(_summed(tuned, matched), _summed(base, matched), weights)["contrast"]
        with np.errstate(invalid="ignore"):
            difference = target["contrast"][:, 0] - np.nanmean(null, 1)
        row: dict[str, Any] = {"feature": feature, "n_responses": n}
        for name in ("assistant", "user"):
            draws = np.exp(target[name][:, 0])
            row[f"ratio_{name}"] = float(draws[0])
            row[f"ratio_{name}_low"], row[f"ratio_{name}_high"] = _interval(draws[1:])
        for name, draws in (("contrast", target["contrast"][:, 0]), ("difference", difference)):
            row[name] = float(draws[0])
            row[f"{name}_low"], row[f"{name}_high"] = _interval(draws[1:])
        row["random_contrast"] = float(np.nanmean(null[0]))
        row["p_value"] = bootstrap_p(difference[1:])
        rows.append(row)
    table = pd.DataFrame(rows)
    table["q_value"] = benjamini_hochberg(table["p_value"].to_numpy())
    return table


def base_comparison(
    tuned: ModelHandle,
    base: ModelHandle,
    transcripts: Sequence[Transcript],
    hook: str,
    sae: Any,
    chosen: np.ndarray,
    random_sets: np.ndarray,
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """`turn_ratios` of the chosen features [k] against random_sets [J, k] on `transcripts` run
    through the tuned and the base model."""
    if not transcripts:
        raise SaeAtlasError("no held-out chat transcripts to compare the base model on")
    columns = np.concatenate([chosen, random_sets.flatten()]).astype(np.int64)
    codes = [role_codes(handle, transcripts, hook, sae, columns) for handle in (tuned, base)]
    return turn_ratios(codes[0], codes[1], chosen, random_sets, n_bootstrap, seed)
