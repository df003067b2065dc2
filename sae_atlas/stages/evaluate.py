"""Evaluate an SAE on held-out chat tokens, overall and per role (system, user, assistant,
template).

`evaluate_sae(handle, sae, store, hook)` computes two kinds of metrics on tokens of the held-out
splits that the SAE did not train on:
- from stored activations (up to `n_tokens` rows of acts/<hook>, read chunk by chunk in a seeded
  random order): explained variance, MSE per element, L0, and over all of them the fraction of
  dead features (never fire) and dense features (fire on more than 10% of tokens);
- from the model (up to `n_transcripts` held-out transcripts, cut to `max_len` tokens): next-token
  cross-entropy with the SAE's reconstruction spliced in at `hook` against the clean model and
  the zero- and mean-ablation baselines (the mean is that of the evaluated activations), the
  share of the ablation's loss increase the SAE recovers, and KL divergences to the clean model.
  A prediction counts for the role of the token it predicts. The splice hook is removed after
  every forward pass.
Cost: one SAE pass per evaluated activation, and four forward passes of the model (clean, SAE,
zero, mean) per evaluated transcript token. Returns a JSON-ready dict.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from sae_lens import SAE

from feature_store.activations import ActivationStore
from feature_store.schema import ACTS_CHUNK_ROWS, ROLE_CODE, ROLES
from feature_store.transcripts import Transcript
from sae_atlas.errors import SaeAtlasError
from sae_atlas.model import ModelHandle, length_batches, padded
from sae_atlas.stages.harvest import length_sorted

REPORTED_ROLES = ("system", "user", "assistant", "template")
"""Roles always reported (with null metrics when absent); other roles only when present."""
DENSE_FIRING_RATE = 0.1
ENCODE_BATCH = 4096
LOSS_KEYS = (
    *(f"ce_{name}" for name in ("clean", "sae", "zero", "mean")),
    *(f"kl_{name}" for name in ("sae", "zero", "mean")),
    "ce_recovered_zero",
    "ce_recovered_mean",
)


def heldout_tokens(
    store: ActivationStore, splits: Sequence[str], exclude: np.ndarray | None, min_pos: int = 0
) -> np.ndarray:
    """bool [n_tokens]: tokens of transcripts in `splits` at position min_pos or later that
    `exclude` (training) leaves out."""
    mask = store.token_mask(splits=list(splits), min_pos=min_pos)
    if exclude is not None:
        mask &= ~exclude
    if not mask.any():
        raise SaeAtlasError(
            f"{store.path}: no held-out tokens in split(s) {list(splits)} outside the training "
            "tokens; set train.eval_splits to a split the SAE did not train on"
        )
    return mask


def sample_rows(
    store: ActivationStore, hook: str, mask: np.ndarray, max_rows: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Up to max_rows activations float32 [n, d_model] of rows where mask is true, with their
    role codes [n]; whole chunks are read in a seeded random order."""
    starts = np.random.default_rng(seed).permutation(np.arange(0, store.n_tokens, ACTS_CHUNK_ROWS))
    acts, picked_roles, n_rows = [], [], 0
    for start in starts:
        keep = mask[start : start + ACTS_CHUNK_ROWS]
        if not keep.any():
            continue
        acts.append(store.acts(hook, start, start + ACTS_CHUNK_ROWS)[keep].astype(np.float32))
        picked_roles.append(store.token_rows(start, start + ACTS_CHUNK_ROWS)["role"][keep])
        n_rows += len(acts[-1])
        if n_rows >= max_rows:
            break
    return np.concatenate(acts)[:max_rows], np.concatenate(picked_roles)[:max_rows]


def _groups(roles: np.ndarray) -> dict[str, np.ndarray]:
    """'all' and every reported or present role -> bool [n] of its rows."""
    present = {ROLES[code] for code in np.unique(roles)}
    names = [*REPORTED_ROLES, *(r for r in ROLES if r in present and r not in REPORTED_ROLES)]
    return {"all": np.ones(len(roles), dtype=bool)} | {r: roles == ROLE_CODE[r] for r in names}


@torch.inference_mode()
def activation_metrics(sae: SAE[Any], acts: np.ndarray, roles: np.ndarray) -> dict[str, Any]:
    """Reconstruction and sparsity of `sae` on acts [n, d_in] with role codes [n]."""
    squared_error = np.empty(len(acts))
    l0 = np.empty(len(acts))
    fire_count = torch.zeros(sae.cfg.d_sae, dtype=torch.long)
    for start in range(0, len(acts), ENCODE_BATCH):
        x = torch.from_numpy(acts[start : start + ENCODE_BATCH]).to(sae.device, sae.dtype)
        features = sae.encode(x)
        reconstruction = sae.decode(features)
        span = slice(start, start + len(x))
        squared_error[span] = (reconstruction - x).float().pow(2).sum(-1).cpu().numpy()
        fires = features > 0
        l0[span] = fires.sum(-1).cpu().numpy()
        fire_count += fires.sum(0).cpu()
    by_role: dict[str, Any] = {}
    for name, rows in _groups(roles).items():
        n = int(rows.sum())
        if n == 0:
            by_role[name] = {"n_tokens": 0, "explained_variance": None, "mse": None, "l0": None}
            continue
        selected = acts[rows].astype(np.float64)
        total_variance = float(((selected - selected.mean(0)) ** 2).sum())
        error = float(squared_error[rows].sum())
        by_role[name] = {
            "n_tokens": n,
            "explained_variance": 1 - error / total_variance if total_variance > 0 else None,
            "mse": error / (n * acts.shape[1]),
            "l0": float(l0[rows].mean()),
        }
    firing_rate = fire_count.double() / len(acts)
    return {
        **by_role.pop("all"),
        "dead_fraction": float((fire_count == 0).double().mean()),
        "dense_fraction": float((firing_rate > DENSE_FIRING_RATE).double().mean()),
        "by_role": by_role,
    }


def heldout_transcripts(
    store: ActivationStore, token_mask: np.ndarray, n_transcripts: int, seed: int
) -> list[Transcript]:
    """Up to n_transcripts transcripts (seeded random choice, in store order) whose tokens all lie
    in token_mask; reads the token table block by block and only the chosen transcripts."""
    outside = np.zeros(len(store), dtype=np.int64)
    for start, table in store.token_blocks():
        keep = token_mask[start : start + len(table["doc"])]
        outside += np.bincount(table["doc"][~keep], minlength=len(store))
    eligible = np.flatnonzero(outside == 0)
    chosen = np.random.default_rng(seed).permutation(eligible)[:n_transcripts]
    return store.read(np.sort(chosen))


Splice = Callable[[torch.Tensor, Any], torch.Tensor]


def _padded_roles(batch: Sequence[Transcript]) -> np.ndarray:
    """Role codes [B, T] of a right-padded batch (padding: 255)."""
    roles = np.full((len(batch), max(len(t) for t in batch)), 255, dtype=np.uint8)
    for row, transcript in enumerate(batch):
        roles[row, : len(transcript)] = transcript.roles
    return roles


def loss_splices(
    sae: SAE[Any], mean_activation: np.ndarray, skip_positions: int
) -> dict[str, Splice]:
    """Hooks that replace the activations [B, T, d_model] from position skip_positions on (earlier
    ones keep theirs) by the SAE's reconstruction (`sae`), zeros (`zero`) or `mean_activation`
    [d_model] (`mean`)."""
    mean = torch.from_numpy(mean_activation)

    def keep_first(replace: Callable[[torch.Tensor], torch.Tensor]) -> Splice:
        def splice(acts: torch.Tensor, hook: Any) -> torch.Tensor:
            out = replace(acts)
            out[:, :skip_positions] = acts[:, :skip_positions]
            return out

        return splice

    return {
        "sae": keep_first(
            lambda acts: sae.decode(sae.encode(acts.to(sae.device, sae.dtype))).to(
                acts.device, acts.dtype
            )
        ),
        "zero": keep_first(torch.zeros_like),
        "mean": keep_first(lambda acts: mean.to(acts.device, acts.dtype).expand_as(acts).clone()),
    }


@torch.inference_mode()
def spliced_losses(
    handle: ModelHandle,
    sae: SAE[Any],
    hook: str,
    transcripts: Sequence[Transcript],
    mean_activation: np.ndarray,
    max_len: int,
    batch_tokens: int = 1024,
    skip_positions: int = 0,
) -> dict[str, Any]:
    """Next-token CE and KL with the SAE reconstruction, zeros or the mean spliced in at `hook`
    (at every position from skip_positions on; earlier ones keep their activations).

    mean_activation: [d_model]. Per prediction, grouped by the role of the predicted token.
    """
    handle.check_hooks([hook])
    splices = loss_splices(sae, mean_activation, skip_positions)
    pad_id = int(handle.tokenizer.pad_token_id or 0)
    columns: dict[str, list[np.ndarray]] = {"role": [], "ce_clean": []}
    for name in splices:
        columns[f"ce_{name}"], columns[f"kl_{name}"] = [], []
    ordered = length_sorted(transcripts, max_len)
    for run in length_batches(ordered.lengths, batch_tokens, 64):
        batch = ordered[run].read()
        tokens, mask = padded(batch, pad_id)
        tokens = tokens.to(handle.device)
        valid = torch.from_numpy(mask[:, 1:]).to(handle.device)
        targets = tokens[:, 1:, None]
        clean = torch.log_softmax(handle.bridge(tokens)[:, :-1].float(), -1)
        columns["role"].append(_padded_roles(batch)[:, 1:][mask[:, 1:]])
        columns["ce_clean"].append(-clean.gather(-1, targets)[..., 0][valid].cpu().numpy())
        clean_probs = clean.exp()
        for name, splice in splices.items():
            logits = handle.bridge.run_with_hooks(tokens, fwd_hooks=[(hook, splice)])
            spliced = torch.log_softmax(logits[:, :-1].float(), -1)
            ce = -spliced.gather(-1, targets)[..., 0]
            kl = (clean_probs * (clean - spliced)).sum(-1)
            columns[f"ce_{name}"].append(ce[valid].cpu().numpy())
            columns[f"kl_{name}"].append(kl[valid].cpu().numpy())
    values = {name: np.concatenate(parts) for name, parts in columns.items()}
    return {"n_transcripts": len(transcripts), **loss_means(values)}


def loss_means(values: dict[str, np.ndarray]) -> dict[str, Any]:
    """Mean CE and KL per prediction ([n] each, with their `role` codes [n]) over all of them and
    per role, with the share of each ablation's CE increase the SAE recovers."""
    by_role = {}
    for group, rows in _groups(values.pop("role")).items():
        if not rows.any():
            by_role[group] = {"n_predictions": 0, **dict.fromkeys(LOSS_KEYS)}
            continue
        means = {name: float(column[rows].mean()) for name, column in values.items()}
        by_role[group] = {"n_predictions": int(rows.sum()), **means}
        for baseline in ("zero", "mean"):
            gap = means[f"ce_{baseline}"] - means["ce_clean"]
            recovered = (means[f"ce_{baseline}"] - means["ce_sae"]) / gap if gap > 0 else None
            by_role[group][f"ce_recovered_{baseline}"] = recovered
    return {**by_role.pop("all"), "by_role": by_role}


def evaluate_sae(
    handle: ModelHandle | None,
    sae: SAE[Any],
    store: ActivationStore,
    hook: str,
    *,
    splits: Sequence[str] = ("heldout",),
    exclude: np.ndarray | None = None,
    n_tokens: int = 65536,
    n_transcripts: int = 32,
    max_len: int = 256,
    skip_positions: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """Metrics of `sae` at `hook` on held-out tokens of `splits` outside `exclude` (bool
    [n_tokens], the training tokens); the spliced-loss part needs `handle` (None: skipped)."""
    store.check_hook(hook)
    if sae.cfg.d_in != store.d_model:
        raise SaeAtlasError(
            f"the SAE reads d_in={sae.cfg.d_in} but {store.path} has d_model={store.d_model}"
        )
    mask = heldout_tokens(store, splits, exclude, skip_positions)
    acts, roles = sample_rows(store, hook, mask, n_tokens, seed)
    result: dict[str, Any] = {
        "hook": hook,
        "splits": list(splits),
        "activations": activation_metrics(sae, acts, roles),
        "spliced": None,
    }
    if handle is not None and n_transcripts > 0:
        sinks = ~store.token_mask(min_pos=skip_positions)  # whole transcripts go through
        transcripts = heldout_transcripts(store, mask | sinks, n_transcripts, seed)
        if transcripts:
            result["spliced"] = spliced_losses(
                handle,
                sae,
                hook,
                transcripts,
                acts.mean(0),
                max_len,
                skip_positions=skip_positions,
            )
    return result
