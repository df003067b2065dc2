"""KV-cache sampling from a chat model: batched, seeded, one uniform per row and step.

`sampling_model` copies the handle's Hugging Face model without the bridge's hooks (in the
sampling dtype); `decode` samples a continuation of a batch of prompts with its own loop (the
prompts' shared prefixes, such as a system prompt, prefilled once per batch and expanded to
their rows (`shared_prefixes`), left padding, attention mask, KV cache, temperature and nucleus
sampling from one uniform per row and step drawn from the row's seed, finished rows dropped from
the batch), so a row's tokens depend on its prompt and seed alone (up to float rounding: in
float32 the shared prefill samples the tokens of a whole-prompt prefill). `sample` decodes jobs
(anything with `messages()` and a `seed`) in batches of `config.batch_size` and yields their
`Response`s. The sampler's settings are any `SamplerSettings` (temperature, top_p, max_new_tokens,
batch_size, seed, dtype: a CorpusConfig, DynamicsConfig or SelectionConfig).

Cost: one decode step per new token per batch; the default model samples about 650-750 new
tokens/s at batch 64 in bfloat16 on an idle 2-core CPU (about 150 in float32 at batch 32, like
Hugging Face `generate`; scripts/bench_corpus.py measures it); sharing prefixes cuts the
quick corpus's prefill about in half (scripts/bench_stages.py).
"""

from __future__ import annotations

import copy
import hashlib
import inspect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import torch

from sae_atlas.errors import SaeAtlasError
from sae_atlas.model.dtype import DTYPE_NAMES, resolve_dtype
from sae_atlas.model.handle import Messages, ModelHandle

TOPK_CANDIDATES = 256
"""Nucleus sampling looks at the top TOPK_CANDIDATES tokens first (exact whenever their mass
reaches top_p; rows where it does not fall back to a full sort)."""


class SamplerSettings(Protocol):
    """The sampler's settings: any config with these six fields (CorpusConfig, DynamicsConfig,
    SelectionConfig, ...); seed is the base of every job's own seed."""

    @property
    def temperature(self) -> float: ...

    @property
    def top_p(self) -> float: ...

    @property
    def max_new_tokens(self) -> int: ...

    @property
    def batch_size(self) -> int: ...

    @property
    def seed(self) -> int: ...

    @property
    def dtype(self) -> str: ...


class SamplingJob(Protocol):
    """What `sample` needs of a job: the chat to continue and its own sampling seed."""

    @property
    def seed(self) -> int: ...

    def messages(self) -> Messages: ...


JobT = TypeVar("JobT", bound=SamplingJob)


@dataclass(frozen=True)
class Response(Generic[JobT]):
    """A sampled response to `job`: its text (stripped) and the tokens sampled (stop included)."""

    job: JobT
    text: str
    n_sampled: int


def job_seed(base: int, *key: object) -> int:
    """A 63-bit seed from the config seed and a job's provenance (stable across runs)."""
    digest = hashlib.blake2b(repr((base, *key)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def check_sampling(config: SamplerSettings) -> None:
    """SaeAtlasError naming the field when a sampler setting cannot work."""
    if config.dtype not in DTYPE_NAMES:
        raise SaeAtlasError(
            f"corpus.dtype: unknown dtype {config.dtype!r}; use one of {', '.join(DTYPE_NAMES)}"
        )
    for name in ("max_new_tokens", "batch_size"):
        if getattr(config, name) < 1:
            raise SaeAtlasError(f"corpus.{name}: is {getattr(config, name)}; use a value >= 1")
    if not 0 < config.top_p <= 1 or config.temperature < 0:
        raise SaeAtlasError(
            f"corpus: temperature {config.temperature} / top_p {config.top_p}; use "
            "temperature >= 0 (0: greedy) and 0 < top_p <= 1"
        )


def sampling_model(handle: ModelHandle, dtype: str) -> torch.nn.Module:
    """A plain Hugging Face copy of the handle's model in `dtype` ("auto": resolved on the
    handle's device), without the bridge's hooks.

    The bridge wraps every submodule of `handle.hf_model`; decoding through the unwrapped
    originals skips the hook machinery. Costs one copy of the weights.
    """
    model = copy.deepcopy(handle.hf_model)
    _unwrap(model)
    return model.to(resolve_dtype(dtype, str(handle.device)).torch_dtype).eval()


def _unwrap(module: torch.nn.Module) -> None:
    for name, child in list(module.named_children()):
        inner: Any = child
        while hasattr(inner, "_original_component"):
            inner = inner._original_component
        if inner is not child:
            setattr(module, name, inner)
        _unwrap(inner)


def stop_token_ids(handle: ModelHandle) -> list[int]:
    """Token ids that end a turn: the tokenizer's EOS and `<|im_end|>` / `<|endoftext|>`."""
    tokenizer = handle.tokenizer
    ids = {tokenizer.eos_token_id}
    for token in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>"):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            ids.add(token_id)
    return sorted(i for i in ids if i is not None)


def _choose(
    logits: torch.Tensor, uniforms: torch.Tensor, temperature: float, top_p: float
) -> torch.Tensor:
    """Next tokens [b] from logits [b, vocab] float32 (overwritten) and uniforms [b] in [0, 1).

    Inverse-CDF sampling over the nucleus (the most likely tokens whose mass reaches top_p), so
    a row's draw depends only on its own logits and uniform. Works in place on `logits`: fresh
    [b, vocab] buffers cost page faults that outweigh the arithmetic on a CPU.
    """
    if temperature == 0:
        return logits.argmax(-1)
    top_logits, order = logits.topk(min(TOPK_CANDIDATES, logits.shape[-1]), dim=-1)
    peak = top_logits[:, :1]
    weights = logits.sub_(peak).div_(temperature).exp_()  # unnormalised probabilities
    total = weights.sum(-1, keepdim=True)
    if top_p >= 1:
        cumulative = weights.cumsum_(-1)
        target = uniforms[:, None].to(total.dtype) * total
        index = torch.searchsorted(cumulative, target, right=True)
        return index.clamp(max=logits.shape[-1] - 1).squeeze(-1)
    top_probs = ((top_logits - peak) / temperature).exp() / total
    tokens = _nucleus_draw(top_probs, order, uniforms, top_p)
    short = (top_probs.sum(-1) < top_p).nonzero().squeeze(1)
    if len(short):
        full_probs, full_order = (weights[short] / total[short]).sort(-1, descending=True)
        tokens[short] = _nucleus_draw(full_probs, full_order, uniforms[short], top_p)
    return tokens


def _nucleus_draw(
    sorted_probs: torch.Tensor, order: torch.Tensor, uniforms: torch.Tensor, top_p: float
) -> torch.Tensor:
    """sorted_probs / order: [b, k] descending; the token under each row's uniform, [b]."""
    inside = (sorted_probs.cumsum(-1) - sorted_probs) < top_p
    cumulative = (sorted_probs * inside).cumsum(-1)
    target = uniforms.to(cumulative.dtype)[:, None] * cumulative[:, -1:]
    index = torch.searchsorted(cumulative, target, right=True).clamp(max=order.shape[-1] - 1)
    return order.gather(-1, index).squeeze(-1)


def _cache_argument(model: torch.nn.Module) -> str:
    """The forward argument that takes the KV cache: `cache` (transformers >= 5.x) or the older
    `past_key_values`."""
    parameters = inspect.signature(model.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def shared_prefixes(prompts: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Rows that share their first tokens: the group of each row [n] and the prefix each group
    prefills once [n_groups] (all its rows share it; never a whole prompt, a row keeps its last
    token).

    Groups are runs of the prompts in sorted order that share at least `depth` tokens, for the
    depth that minimises the padded prefill, n_groups x longest prefix + n x longest rest (one
    depth per distinct shared length, and one that leaves every row alone). Costs a sort and
    O(n) per depth."""
    order = np.array(sorted(range(len(prompts)), key=lambda r: prompts[r].tolist()))
    lengths = np.array([len(prompts[r]) for r in order])
    shared = np.array([_common_length(prompts[a], prompts[b]) for a, b in pairwise(order)], int)
    best: tuple[int, np.ndarray, np.ndarray] | None = None
    for depth in np.unique(np.append(shared, lengths.max() + 1)):
        joins = shared >= depth  # sorted row i + 1 is in the group of row i
        group = np.concatenate([[0], np.cumsum(~joins)])
        starts = np.flatnonzero(np.diff(group, prepend=-1))
        inside = np.concatenate([[lengths.max()], np.where(joins, shared, lengths.max())])
        prefix = np.minimum(
            np.minimum.reduceat(lengths - 1, starts), np.minimum.reduceat(inside, starts)
        )
        cost = len(prefix) * prefix.max() + len(order) * (lengths - prefix[group]).max()
        if best is None or cost < best[0]:
            best = (int(cost), group, prefix)
    assert best is not None
    group_of = np.empty(len(prompts), dtype=np.int64)
    group_of[order] = best[1]
    return group_of, best[2].astype(np.int64)


def _common_length(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n


def _left_padded(rows: Sequence[np.ndarray], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids [n, longest] left-padded with pad_id, and the attention mask [n, longest]."""
    longest = max((len(row) for row in rows), default=0)
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for at, row in enumerate(rows):
        if len(row):
            ids[at, longest - len(row) :] = torch.from_numpy(np.asarray(row, dtype=np.int64))
            mask[at, longest - len(row) :] = 1
    return ids, mask


def _prefill(
    model: torch.nn.Module, prompts: Sequence[np.ndarray], share: bool, pad_id: int, cache: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the prompts into `cache`: each group's shared prefix once (`shared_prefixes`; none
    unless `share`), expanded to its rows, then every row's rest in one batch, each part
    left-padded (so the mask has two runs of padding). Returns the logits of each row's last
    token [n, vocab], the attention mask [n, T] and each row's next position [n]."""
    device = next(model.parameters()).device
    if share:
        group, prefix = shared_prefixes(prompts)
    else:
        group, prefix = np.arange(len(prompts)), np.zeros(len(prompts), dtype=np.int64)
    member = {int(g): r for r, g in enumerate(group)}  # a row of each group
    heads = [prompts[member[g]][: prefix[g]] for g in range(len(prefix))]
    head_ids, head_mask = _left_padded(heads, pad_id)
    tails = [prompt[prefix[g] :] for prompt, g in zip(prompts, group, strict=True)]
    tail_ids, tail_mask = _left_padded(tails, pad_id)
    rows = torch.from_numpy(group)
    mask = torch.cat([head_mask[rows], tail_mask], dim=1)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache_arg = {_cache_argument(model): cache}
    if head_ids.shape[1]:
        head_positions = (head_mask.cumsum(-1) - 1).clamp(min=0)
        model(
            input_ids=head_ids.to(device),
            attention_mask=head_mask.to(device),
            position_ids=head_positions.to(device),
            use_cache=True,
            logits_to_keep=1,
            **cache_arg,
        )
        cache.batch_select_indices(rows.to(device))
    output = model(
        input_ids=tail_ids.to(device),
        attention_mask=mask.to(device),
        position_ids=positions[:, head_ids.shape[1] :].to(device),
        use_cache=True,
        logits_to_keep=1,
        **cache_arg,
    )
    return output.logits[:, -1], mask.to(device), positions[:, -1].to(device) + 1


@torch.inference_mode()
def decode(
    model: torch.nn.Module,
    prompts: Sequence[np.ndarray],
    seeds: Sequence[int],
    config: SamplerSettings,
    stop_ids: Sequence[int],
    pad_id: int,
    share_prefixes: bool = True,
) -> list[np.ndarray]:
    """Sample a continuation of each prompt (token ids [n_i]) as one batch.

    Returns the new tokens of each row, [m_i] int64, stop token included when one was sampled
    (a stop token is never sampled first). The prompts prefill with their shared prefixes
    computed once (`_prefill`; share_prefixes False: every prompt whole); a row leaves the batch
    (and its KV cache) once it samples a stop token.
    """
    from transformers import DynamicCache

    device = next(model.parameters()).device
    uniforms = torch.from_numpy(
        np.stack([np.random.default_rng(seed).random(config.max_new_tokens) for seed in seeds])
    )
    stops = torch.tensor(list(stop_ids), dtype=torch.long)
    cache = DynamicCache(config=model.config)  # type: ignore[arg-type]
    logits, mask, next_position = _prefill(model, prompts, share_prefixes, pad_id, cache)
    rows = torch.arange(len(prompts))
    steps: list[tuple[torch.Tensor, torch.Tensor]] = []
    for step in range(config.max_new_tokens):
        logits = logits.float().cpu()
        if step == 0:
            logits[:, stops] = -torch.inf
        tokens = _choose(logits, uniforms[rows, step], config.temperature, config.top_p)
        steps.append((rows, tokens))
        running = ~torch.isin(tokens, stops)
        if step == config.max_new_tokens - 1 or not bool(running.any()):
            break
        if not bool(running.all()):
            keep = running.nonzero().squeeze(1)
            cache.batch_select_indices(keep.to(device))
            rows, tokens, mask = rows[keep], tokens[keep], mask[keep.to(device)]
            next_position = next_position[keep.to(device)]
        mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
        logits = model(
            input_ids=tokens[:, None].to(device),
            attention_mask=mask,
            position_ids=next_position[:, None],
            use_cache=True,
            **{_cache_argument(model): cache},
        ).logits[:, -1]
        next_position = next_position + 1
    new_tokens = np.full((len(prompts), len(steps)), -1, dtype=np.int64)
    for step, (step_rows, tokens) in enumerate(steps):
        new_tokens[step_rows.numpy(), step] = tokens.numpy()
    return [row[row >= 0] for row in new_tokens]


def new_tokens_text(handle: ModelHandle, new_tokens: np.ndarray, stop_ids: Sequence[int]) -> str:
    body = new_tokens[~np.isin(new_tokens, list(stop_ids))]
    return str(handle.tokenizer.decode(body.tolist(), skip_special_tokens=True)).strip()


def prompt_ids(handle: ModelHandle, messages: Messages) -> np.ndarray:
    text = handle.render(messages, add_generation_prompt=True)
    return np.asarray(handle.tokenizer(text, add_special_tokens=False)["input_ids"], np.int64)


def sample(
    handle: ModelHandle,
    jobs: Sequence[JobT],
    config: SamplerSettings,
    progress: Callable[[int], None] | None = None,
    model: torch.nn.Module | None = None,
) -> Iterator[list[Response[JobT]]]:
    """Responses to `jobs`, one list per batch of `config.batch_size` consecutive jobs.

    The same jobs (same seeds) and config give the same responses. `model`: a model from
    `sampling_model` to reuse (built from the handle when None). `progress(n_jobs)` after each
    batch.
    """
    check_sampling(config)
    model = model if model is not None else sampling_model(handle, config.dtype)
    stop_ids = stop_token_ids(handle)
    pad_id = int(handle.tokenizer.pad_token_id or 0)
    for start in range(0, len(jobs), config.batch_size):
        batch = jobs[start : start + config.batch_size]
        prompts = [prompt_ids(handle, job.messages()) for job in batch]
        new_tokens = decode(model, prompts, [job.seed for job in batch], config, stop_ids, pad_id)
        yield [
            Response(job, new_tokens_text(handle, tokens, stop_ids), len(tokens))
            for job, tokens in zip(batch, new_tokens, strict=True)
        ]
        if progress is not None:
            progress(len(batch))
