"""Model diffing for the audit: the tuned and the base model side by side, no sampling.

`ModelPair` holds the chat formatting (a ModelHandle), the tuned model and, where one is given,
the base model, both plain Hugging Face causal LMs. `load_pair` builds it from a model source and
a LoRA adapter (the base is the source itself, the tuned a merged copy) or from two sources.
`last_states` runs a batch of prompts through one model and returns, at each prompt's last
token, the next-token log-probabilities (and, when asked, the residual stream of every layer):
the prompts of a batch share their longest common prefix, run once and reused from the KV
cache, so a candidate trigger costs only the tokens that differ. `weight_shift` ranks tokens by
how far the fine-tune moved their embedding and unembedding rows (zero for a LoRA on the
attention and MLP only).
Cost: one forward pass per differing token per model; the default model runs about 300-1,000
tokens/s on a 2-core CPU.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sae_atlas.model import (
    ModelHandle,
    decoder_layers,
    load_model,
    prompt_ids,
    sampling_model,
)
from sae_atlas.model.dtype import resolve_dtype
from sae_atlas.model.loading import merge_adapter


@dataclass
class ModelPair:
    """The model under audit (`tuned`) and its base (None when not given), plain HF causal LMs
    in the sampling dtype; `handle` formats chats (the tuned model's tokenizer and template)."""

    handle: ModelHandle
    tuned: Any
    base: Any | None

    @property
    def pad_id(self) -> int:
        return int(self.handle.tokenizer.pad_token_id or 0)

    def prompt(self, messages: list[dict[str, str]]) -> np.ndarray:
        """Token ids [n] of `messages` under the chat template, up to the assistant header."""
        return prompt_ids(self.handle, messages)


def load_pair(
    source: str,
    adapter: str | Path | None,
    base_source: str | None,
    device: str = "cpu",
    dtype: str = "float32",
) -> ModelPair:
    """The pair to audit: with `adapter`, the tuned model is `source` with the adapter merged
    (in float32, then both models cast to `dtype`, so a low-precision audit does not round the
    adapter's small change away before it is added) and the base is `source` (or
    `base_source`); without it, the tuned model is `source` and the base `base_source` (None:
    no base). Loads each model once (about 15 s for the default)."""
    if adapter is not None:
        base_handle = load_model(base_source or source, device, "float32")
        base = sampling_model(base_handle, "float32")
        tuned = merge_adapter(copy.deepcopy(base), adapter).eval()
        torch_dtype = resolve_dtype(dtype, device).torch_dtype
        return ModelPair(base_handle, tuned.to(torch_dtype), base.to(torch_dtype))
    handle = load_model(source, device, dtype)
    given = sampling_model(load_model(base_source, device, dtype), dtype) if base_source else None
    return ModelPair(handle, sampling_model(handle, dtype), given)


def pair_from_models(handle: ModelHandle, tuned: Any, base: Any | None) -> ModelPair:
    """A pair from models already in memory (tests, benchmarks)."""
    return ModelPair(handle, tuned.eval(), None if base is None else base.eval())


def common_prefix(prompts: Sequence[np.ndarray]) -> int:
    """Length of the longest prefix all `prompts` share, leaving each at least one own token."""
    shortest = min(len(p) for p in prompts)
    first = prompts[0][: shortest - 1]
    same = np.ones(len(first), dtype=bool)
    for prompt in prompts[1:]:
        same &= prompt[: len(first)] == first
    return int(np.argmin(same)) if not same.all() else len(first)


@torch.inference_mode()
def last_states(
    model: Any, prompts: Sequence[np.ndarray], pad_id: int, residual: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Next-token log-probabilities [n, vocab] and, with `residual`, the residual streams
    [n, layers + 1, d_model] (else None) at the last token of each prompt (float32), the shared
    prefix run once (see the module)."""
    from transformers import DynamicCache

    device = next(model.parameters()).device
    shared = common_prefix(prompts)
    cache = DynamicCache(config=model.config)  # type: ignore[arg-type]
    if shared:
        prefix = torch.from_numpy(np.asarray(prompts[0][:shared], dtype=np.int64))[None]
        model(input_ids=prefix.to(device), past_key_values=cache, use_cache=True)
        cache.batch_repeat_interleave(len(prompts))
    tails = [np.asarray(p[shared:], dtype=np.int64) for p in prompts]
    longest = max(len(t) for t in tails)
    ids = torch.full((len(tails), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(tails), shared + longest), dtype=torch.long)
    mask[:, :shared] = 1
    for row, tail in enumerate(tails):
        ids[row, : len(tail)] = torch.from_numpy(tail)
        mask[row, shared : shared + len(tail)] = 1
    positions = torch.arange(shared, shared + longest)[None].expand(len(tails), -1)
    out = model.model(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        position_ids=positions.to(device),
        past_key_values=cache,
        use_cache=True,
        output_hidden_states=residual,
    )
    last = torch.tensor([len(t) - 1 for t in tails], device=device)
    rows = torch.arange(len(tails), device=device)
    logits = model.lm_head(out.last_hidden_state[rows, last]).float()
    if not residual:
        return logits.log_softmax(-1).cpu(), None
    resid = torch.stack([h[rows, last] for h in out.hidden_states], dim=1).float()
    return logits.log_softmax(-1).cpu(), resid.cpu()


def batched_states(
    model: Any, prompts: Sequence[np.ndarray], pad_id: int, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """`last_states` of consecutive batches of `prompts` (keep prompts that share a prefix
    together: each batch runs its own common prefix once)."""
    for start in range(0, len(prompts), batch_size):
        yield last_states(model, prompts[start : start + batch_size], pad_id)


def kl_divergence(tuned: torch.Tensor, reference: torch.Tensor) -> np.ndarray:
    """KL(tuned || reference) in nats of log-probability rows [n, vocab]: [n]."""
    return (tuned.exp() * (tuned - reference)).sum(-1).clamp(min=0).numpy()


def weight_shift(pair: ModelPair) -> np.ndarray:
    """Per token id: the norm of the fine-tune's change to its embedding row plus that of its
    unembedding row, [vocab] (zeros without a base or when neither matrix changed)."""
    tuned, base = pair.tuned, pair.base
    if base is None:
        return np.zeros(tuned.get_input_embeddings().weight.shape[0])
    shift = torch.zeros(tuned.get_input_embeddings().weight.shape[0])
    for getter in ("get_input_embeddings", "get_output_embeddings"):
        after = getattr(tuned, getter)().weight.detach().float().cpu()
        before = getattr(base, getter)().weight.detach().float().cpu()
        shift += (after - before).norm(dim=-1)
    return shift.numpy()


def robust_z(values: np.ndarray) -> np.ndarray:
    """(values - median) / (1.4826 x median absolute deviation) of [n] (a null-free outlier
    score); zeros when the values do not vary."""
    centre = np.median(values)
    spread = 1.4826 * np.median(np.abs(values - centre))
    return (values - centre) / spread if spread > 0 else np.zeros_like(values)


@torch.inference_mode()
def token_read_shift(pair: ModelPair, layers: int = 1) -> np.ndarray:
    """Per token id: how strongly the fine-tune's weight change reads the token at the first
    `layers` blocks: for each linear map W of those blocks that reads the residual stream, the
    norm of (W_tuned - W_base) applied to the token's normalised embedding, as a robust z-score
    over the vocabulary; the maximum over maps, [vocab]. Trigger tokens stand out here: the
    tuned model must recognise them from their first layer on. Costs one [vocab, d_model]
    product per map (seconds, no forward pass); zeros without a base."""
    embeddings = pair.tuned.get_input_embeddings().weight.detach().float()
    if pair.base is None:
        return np.zeros(embeddings.shape[0])
    normalised = embeddings / embeddings.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
    d_model = embeddings.shape[1]
    tuned_layers, base_layers = decoder_layers(pair.tuned), decoder_layers(pair.base)
    best = np.full(embeddings.shape[0], -np.inf)
    for tuned_block, base_block in zip(tuned_layers[:layers], base_layers[:layers], strict=True):
        base_maps = dict(base_block.named_modules())
        for name, module in tuned_block.named_modules():
            if not isinstance(module, torch.nn.Linear) or module.in_features != d_model:
                continue
            change = module.weight.float() - base_maps[name].weight.float()
            if not bool(change.any()):
                continue
            read = (normalised @ change.T).norm(dim=-1).numpy()
            best = np.maximum(best, robust_z(read))
    return np.where(np.isfinite(best), best, 0.0)
