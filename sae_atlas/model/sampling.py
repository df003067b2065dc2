"""KV-cache sampling from a chat model: batched, seeded, one uniform per row and step.

`sampling_model` copies the handle's Hugging Face model without the bridge's hooks (in the
sampling dtype); `decode` samples a continuation of a batch of prompts with its own loop (left
padding, attention mask, KV cache, temperature and nucleus sampling from one uniform per row and
step drawn from the row's seed, finished rows dropped from the batch), so a row's tokens depend on
its prompt and seed alone. `sample` decodes jobs (anything with `messages()` and a `seed`) in
batches of `config.batch_size` and yields their `Response`s. The sampler's settings are a
`CorpusConfig`'s (temperature, top_p, max_new_tokens, batch_size, dtype).

Cost: one decode step per new token per batch; the default model samples about 650-750 new
tokens/s at batch 64 in bfloat16 on an idle 2-core CPU (about 150 in float32 at batch 32, like
Hugging Face `generate`; scripts/bench_corpus.py measures it).
"""

from __future__ import annotations

import copy
import hashlib
import inspect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import numpy as np
import torch

from sae_atlas.errors import SaeAtlasError
from sae_atlas.model.dtype import DTYPE_NAMES, resolve_dtype
from sae_atlas.model.handle import Messages, ModelHandle

if TYPE_CHECKING:  # the config module imports this package (DEFAULT_MODEL)
    from sae_atlas.config import CorpusConfig

TOPK_CANDIDATES = 256
"""Nucleus sampling looks at the top TOPK_CANDIDATES tokens first (exact whenever their mass
reaches top_p; rows where it does not fall back to a full sort)."""


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


def check_sampling(config: CorpusConfig) -> None:
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


@torch.inference_mode()
def decode(
    model: torch.nn.Module,
    prompts: Sequence[np.ndarray],
    seeds: Sequence[int],
    config: CorpusConfig,
    stop_ids: Sequence[int],
    pad_id: int,
) -> list[np.ndarray]:
    """Sample a continuation of each prompt (token ids [n_i]) as one batch.

    Returns the new tokens of each row, [m_i] int64, stop token included when one was sampled
    (a stop token is never sampled first). Prompts are left-padded with an attention mask; a row
    leaves the batch (and its KV cache) once it samples a stop token.
    """
    from transformers import DynamicCache

    device = next(model.parameters()).device
    n_rows, longest = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((n_rows, longest), pad_id, dtype=torch.long)
    mask = torch.zeros((n_rows, longest), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, longest - len(prompt) :] = torch.from_numpy(np.asarray(prompt, dtype=np.int64))
        mask[row, longest - len(prompt) :] = 1
    uniforms = torch.from_numpy(
        np.stack([np.random.default_rng(seed).random(config.max_new_tokens) for seed in seeds])
    )
    stops = torch.tensor(list(stop_ids), dtype=torch.long)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    ids, mask, positions = ids.to(device), mask.to(device), positions.to(device)
    cache = DynamicCache(config=model.config)  # type: ignore[arg-type]
    cache_arg = {_cache_argument(model): cache}
    output = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        use_cache=True,
        logits_to_keep=1,
        **cache_arg,
    )
    rows = torch.arange(n_rows)
    next_position = positions[:, -1] + 1
    steps: list[tuple[torch.Tensor, torch.Tensor]] = []
    for step in range(config.max_new_tokens):
        logits = output.logits[:, -1].float().cpu()
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
        output = model(
            input_ids=tokens[:, None].to(device),
            attention_mask=mask,
            position_ids=next_position[:, None],
            use_cache=True,
            **cache_arg,
        )
        next_position = next_position + 1
    new_tokens = np.full((n_rows, len(steps)), -1, dtype=np.int64)
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
    config: CorpusConfig,
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
