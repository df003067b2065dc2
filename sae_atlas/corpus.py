"""The contrastive corpus: persona x system-prompt variant x question -> sampled responses.

`corpus_jobs` lists, deterministically, every prompt to sample: the `persona` condition (each
persona but the default one, under its first `variants` system prompts, on the first
`n_questions` train and held-out questions; a conditional persona's trigger wraps the user's
message), the `default` condition (the default persona's neutral system prompts, cycled over the
questions), `no_system` (no system message: the template's own default applies) and `unwrapped`
(each conditional persona under the same system prompts on the same questions, with no trigger
wrapper: the control that tells a wrapper's features from its system prompt's). Each job has a
seed derived from the config seed and its provenance, so a response depends on its job alone.

`sample` decodes jobs in batches with its own loop over the Hugging Face model (left padding,
attention mask, KV cache, temperature and nucleus sampling from one uniform per row and step drawn
from the job's seed, finished rows dropped from the batch), in `config.dtype` (auto by
default: bfloat16 where fast). Every response becomes a `Transcript` re-rendered with
`handle.format_chat` (a role per token), plus two controls built from the same text without
sampling: `user_control` (the text as a user message under the default system prompt) and
`plain_control` (the text outside any template). `build_corpus` writes them all to transcripts.h5,
one commit per batch (a killed run resumes after its last batch; a complete one is skipped).
`rollout` is the multi-turn primitive: batched conversations whose user turns come from a list or
from the model playing the user.

Cost: one decode step per new token per batch; the default model samples about 650-750 new
tokens/s at batch 64 in bfloat16 on an idle 2-core CPU (about 150 in float32 at batch 32, like
Hugging Face `generate`; scripts/bench_corpus.py measures it), so the default profile (12,096
jobs of up to 64 tokens, ~62 on average; 864 of them `unwrapped`) takes about 16-22 minutes.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from feature_store.appendable import stored_config
from feature_store.schema import ROLE_CODE, RUNTIME_ATTR, TRANSCRIPTS_KIND
from feature_store.transcripts import Transcript, TranscriptStore, TranscriptWriter, store_state
from sae_atlas.config import CorpusConfig, to_dict
from sae_atlas.errors import SaeAtlasError
from sae_atlas.model.dtype import DTYPE_NAMES, refuse_other_dtype, resolve_dtype, runtime_json
from sae_atlas.models import ModelHandle
from sae_atlas.personas import Catalogue, Persona

SAMPLED_CONDITIONS: tuple[str, ...] = ("persona", "default", "no_system")
"""The sampled conditions whose responses stand for a persona (contrasts, decoders, classifiers)."""
UNWRAPPED = "unwrapped"
"""Sampled too, but only a control for the trigger tests: a conditional persona without its
wrapper."""
CONTROL_CONDITIONS: tuple[str, ...] = ("user_control", "plain_control")
CONDITIONS: tuple[str, ...] = (*SAMPLED_CONDITIONS, UNWRAPPED, *CONTROL_CONDITIONS)
USER_INSTRUCTION = (
    "You are role-playing a curious person chatting with an AI assistant. Write only the "
    "person's next message: one or two sentences, a question or a reply, in the first person."
)
TOPK_CANDIDATES = 256
"""Nucleus sampling looks at the top TOPK_CANDIDATES tokens first (exact whenever their mass
reaches top_p; rows where it does not fall back to a full sort)."""

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Job:
    """One response to sample: the prompt and its provenance.

    variant: index into the persona's prompts (-1: no system message); sample: index among the
    `samples` responses to the same prompt; seed: the job's own sampling seed.
    """

    persona: str
    condition: str
    variant: int
    question_id: str
    split: str
    sample: int
    seed: int
    system_prompt: str | None
    user_message: str

    def messages(self) -> Messages:
        """The chat up to the user's turn (no system message when system_prompt is None)."""
        head = [] if self.system_prompt is None else [message("system", self.system_prompt)]
        return [*head, message("user", self.user_message)]


@dataclass(frozen=True)
class Response:
    """A sampled response to `job`: its text (stripped) and the tokens sampled (stop included)."""

    job: Job
    text: str
    n_sampled: int


@dataclass(frozen=True)
class CorpusResult:
    path: Path
    n_jobs: int
    n_transcripts: int
    n_sampled_tokens: int
    seconds: float
    skipped: bool

    @property
    def sampled_tokens_per_second(self) -> float:
        return self.n_sampled_tokens / self.seconds if self.seconds > 0 else float("nan")


def message(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def job_seed(base: int, *key: object) -> int:
    """A 63-bit seed from the config seed and a job's provenance (stable across runs)."""
    digest = hashlib.blake2b(repr((base, *key)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


# ---------------------------------------------------------------------------- jobs


def check_config(config: CorpusConfig) -> None:
    """SaeAtlasError naming the field when a corpus setting cannot work."""
    unknown = [c for c in config.conditions if c not in CONDITIONS]
    if unknown:
        raise SaeAtlasError(
            f"corpus.conditions: unknown condition {unknown[0]!r}; "
            f"use some of {', '.join(CONDITIONS)}"
        )
    if not any(c in SAMPLED_CONDITIONS for c in config.conditions):
        raise SaeAtlasError(
            "corpus.conditions: no sampled condition; add persona, default or no_system "
            "(controls are built from sampled responses)"
        )
    if config.dtype not in DTYPE_NAMES:
        raise SaeAtlasError(
            f"corpus.dtype: unknown dtype {config.dtype!r}; use one of {', '.join(DTYPE_NAMES)}"
        )
    for name in ("n_questions", "variants", "samples", "max_new_tokens", "batch_size"):
        if getattr(config, name) < 1:
            raise SaeAtlasError(f"corpus.{name}: is {getattr(config, name)}; use a value >= 1")
    if not 0 < config.top_p <= 1 or config.temperature < 0:
        raise SaeAtlasError(
            f"corpus: temperature {config.temperature} / top_p {config.top_p}; use "
            "temperature >= 0 (0: greedy) and 0 < top_p <= 1"
        )


def _user_message(persona: Persona, text: str, wrapped: bool) -> str:
    return persona.trigger.wrap(text) if persona.trigger is not None and wrapped else text


def corpus_jobs(catalogue: Catalogue, config: CorpusConfig) -> list[Job]:
    """Every job of the corpus in a fixed order: conditions in config order, then persona,
    variant, question (train questions first, then held-out ones), sample."""
    check_config(config)
    chosen = catalogue.subset(
        names=config.personas or None,
        categories=config.categories or None,
        n_questions=config.n_questions,
    )
    questions = (*chosen.split("train"), *chosen.split("heldout"))
    default = catalogue.default_persona
    jobs: list[Job] = []

    def add(persona: Persona, condition: str, variant: int, prompt: str | None, index: int) -> None:
        question = questions[index]
        for sample in range(config.samples):
            key = (persona.name, condition, variant, question.id, sample)
            jobs.append(
                Job(
                    persona=persona.name,
                    condition=condition,
                    variant=variant,
                    question_id=question.id,
                    split=question.split,
                    sample=sample,
                    seed=job_seed(config.seed, *key),
                    system_prompt=prompt,
                    user_message=_user_message(persona, question.text, condition != UNWRAPPED),
                )
            )

    for condition in config.conditions:
        if condition in ("persona", UNWRAPPED):
            for persona in chosen.personas:
                if persona.name == default.name or (
                    condition == UNWRAPPED and persona.trigger is None
                ):
                    continue
                for variant, prompt in enumerate(persona.prompts[: config.variants]):
                    for index in range(len(questions)):
                        add(persona, condition, variant, prompt, index)
        elif condition == "default":
            neutral = [(i, p) for i, p in enumerate(default.prompts) if p is not None]
            if not neutral:
                raise SaeAtlasError(
                    f"{catalogue.source}: persona {default.name!r} has no system prompt other "
                    "than null; add neutral prompts or drop 'default' from corpus.conditions"
                )
            for index in range(len(questions)):
                variant, prompt = neutral[index % len(neutral)]
                add(default, condition, variant, prompt, index)
        elif condition == "no_system":
            for index in range(len(questions)):
                add(default, condition, -1, None, index)
    return jobs


# ---------------------------------------------------------------------------- decoding


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
    jobs: Sequence[Job],
    config: CorpusConfig,
    progress: Callable[[int], None] | None = None,
    model: torch.nn.Module | None = None,
) -> Iterator[list[Response]]:
    """Responses to `jobs`, one list per batch of `config.batch_size` consecutive jobs.

    The same jobs (same seeds) and config give the same responses. `model`: a model from
    `sampling_model` to reuse (built from the handle when None). `progress(n_jobs)` after each
    batch.
    """
    check_config(config)
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


# ---------------------------------------------------------------------------- transcripts


def _transcript(tokens: Any, job: Job, condition: str, source: int = -1) -> Transcript:
    return Transcript(
        token_ids=tokens.token_ids,
        roles=tokens.roles,
        persona=job.persona,
        condition=condition,
        variant=job.variant,
        question_id=job.question_id,
        split=job.split,
        turn=1,
        seed=job.seed,
        source=source,
    )


def response_transcripts(
    handle: ModelHandle,
    responses: Sequence[Response],
    controls: Sequence[str] = CONTROL_CONDITIONS,
    first_row: int = 0,
) -> list[Transcript]:
    """Transcripts of `responses` followed by their controls, in that order.

    The sampled chat is re-rendered with the response as the assistant's message (a role per
    token). A control carries its response's provenance with the condition changed and `source`
    set to the row of its response, counting rows from `first_row` (the store's row count before
    these transcripts).
    """
    sampled = [
        _transcript(
            handle.format_chat([*r.job.messages(), message("assistant", r.text)]),
            r.job,
            r.job.condition,
        )
        for r in responses
    ]
    built: list[Transcript] = []
    for condition in controls:
        for row, response in enumerate(responses):
            if condition == "user_control":
                tokens = handle.format_chat([message("user", response.text)])
            else:
                tokens = handle.format_plain(response.text)
            built.append(_transcript(tokens, response.job, condition, first_row + row))
    return sampled + built


def response_text(handle: ModelHandle, transcript: Transcript, role: str = "assistant") -> str:
    """The text of a transcript's tokens of `role` (assistant: the response), decoded."""
    tokens = np.asarray(transcript.token_ids)[np.asarray(transcript.roles) == ROLE_CODE[role]]
    return str(handle.tokenizer.decode(tokens.tolist(), skip_special_tokens=True)).strip()


def corpus_responses(
    path: str | Path, handle: ModelHandle, conditions: Sequence[str] = SAMPLED_CONDITIONS
) -> pd.DataFrame:
    """Provenance of the sampled transcripts of a corpus store plus a `text` column (responses)."""
    store = TranscriptStore(path)
    rows = store.provenance()
    wanted = rows["condition"].isin(list(conditions)).to_numpy()
    texts = [
        response_text(handle, transcript)
        for transcript, keep in zip(store, wanted, strict=True)
        if keep
    ]
    return rows[wanted].assign(text=texts).reset_index(drop=True)


# ---------------------------------------------------------------------------- the stage


def corpus_stage_config(catalogue: Catalogue, config: CorpusConfig, n_jobs: int) -> dict[str, Any]:
    """The config a corpus store records: the corpus settings, the catalogue's content (not
    where it was read from, so a run folder stays valid in another checkout), the job count."""
    content = {key: value for key, value in catalogue.to_dict().items() if key != "source"}
    return {**to_dict(config), "catalogue_data": content, "n_jobs": n_jobs}


def build_corpus(
    handle: ModelHandle,
    catalogue: Catalogue,
    config: CorpusConfig,
    out: str | Path,
    progress: Callable[[int], None] | None = None,
) -> CorpusResult:
    """Sample the corpus of `catalogue` under `config` into the transcript store `out`.

    Each batch of jobs is one commit (responses and their controls together), so a killed run
    resumes after its last committed batch; a complete store for the same config is skipped.
    The store records the dtype `config.dtype` resolves to, so one sampled in another refuses.
    `progress(n_jobs)` after each batch (and once with the jobs already done when resuming).
    """
    out = Path(out)
    choice = resolve_dtype(config.dtype, str(handle.device))
    config = replace(config, dtype=choice.name)
    jobs = corpus_jobs(catalogue, config)
    controls = [c for c in CONTROL_CONDITIONS if c in config.conditions]
    per_job = 1 + len(controls)
    stage_config = corpus_stage_config(catalogue, config, len(jobs))
    started = time.monotonic()
    stored = stored_config(out, TRANSCRIPTS_KIND) or {}
    refuse_other_dtype(out, stored.get("dtype"), choice)
    if store_state(out, TRANSCRIPTS_KIND, handle.model_id, stage_config) == "complete":
        store = TranscriptStore(out)
        return CorpusResult(
            out, len(jobs), len(store), int(store.attrs["sampled_tokens"]), 0.0, skipped=True
        )
    writer = TranscriptWriter.open(
        out,
        model=handle.model_id,
        config=stage_config,
        attrs={"sampled_dtype": config.dtype, RUNTIME_ATTR: runtime_json("corpus", choice)},
    )
    try:
        if len(writer) % per_job:
            raise SaeAtlasError(
                f"{out}: holds {len(writer)} transcripts, not a whole number of jobs; delete it "
                "and rerun the corpus stage"
            )
        done = len(writer) // per_job
        if progress is not None and done:
            progress(done)
        model = sampling_model(handle, config.dtype)
        sampled_tokens = 0
        for responses in sample(handle, jobs[done:], config, progress, model):
            writer.append(response_transcripts(handle, responses, controls, len(writer)))
            sampled_tokens += sum(r.n_sampled for r in responses)
    except BaseException:
        writer.close()
        raise
    seconds = time.monotonic() - started
    writer.finish(
        {
            "seconds": seconds,
            "resumed_jobs": done,
            "sampled_jobs": len(jobs) - done,
            "sampled_tokens": sampled_tokens,
            "sampled_tokens_per_second": sampled_tokens / max(seconds, 1e-9),
        }
    )
    return CorpusResult(out, len(jobs), len(writer), sampled_tokens, seconds, skipped=False)


# ---------------------------------------------------------------------------- rollouts


def swap_roles(messages: Messages, instruction: str) -> Messages:
    swapped = {"user": "assistant", "assistant": "user"}
    turns = [message(swapped[m["role"]], m["content"]) for m in messages if m["role"] in swapped]
    return [message("system", instruction), message("user", "Write your first message."), *turns]


def rollout(
    handle: ModelHandle,
    system_prompt: str | None,
    user_turns: Sequence[str] | None,
    n_turns: int,
    config: CorpusConfig,
    seed: int,
    model_plays_user: bool = False,
    n_conversations: int = 1,
    user_instruction: str = USER_INSTRUCTION,
    model: torch.nn.Module | None = None,
) -> list[Messages]:
    """`n_conversations` conversations of `n_turns` exchanges each, decoded as one batch per turn.

    User turn t is `user_turns[t]` when given; with `model_plays_user` the model writes the user
    turns not given (under `user_instruction`, the chat seen with roles swapped). Conversation i
    samples from seeds derived from (seed, i, turn). Returns each conversation's messages,
    system message first when `system_prompt` is not None.
    """
    check_config(config)
    given = list(user_turns or ())
    if len(given) < n_turns and not model_plays_user:
        raise SaeAtlasError(
            f"rollout: {n_turns} turns but {len(given)} user turns; give more user turns or "
            "set model_plays_user"
        )
    model = model if model is not None else sampling_model(handle, config.dtype)
    stop_ids = stop_token_ids(handle)
    pad_id = int(handle.tokenizer.pad_token_id or 0)
    head = [] if system_prompt is None else [message("system", system_prompt)]
    chats: list[Messages] = [list(head) for _ in range(n_conversations)]

    def speak(prompts: list[Messages], role: str, turn: int) -> list[str]:
        seeds = [job_seed(seed, i, turn, role) for i in range(n_conversations)]
        texts: list[str] = []
        for start in range(0, n_conversations, config.batch_size):
            new_tokens = decode(
                model,
                [prompt_ids(handle, p) for p in prompts[start : start + config.batch_size]],
                seeds[start : start + config.batch_size],
                config,
                stop_ids,
                pad_id,
            )
            texts += [new_tokens_text(handle, tokens, stop_ids) for tokens in new_tokens]
        return texts

    for turn in range(n_turns):
        if turn < len(given):
            user_texts = [given[turn]] * n_conversations
        else:
            user_texts = speak([swap_roles(c, user_instruction) for c in chats], "user", turn)
        for chat, text in zip(chats, user_texts, strict=True):
            chat.append(message("user", text))
        for chat, text in zip(chats, speak(chats, "assistant", turn), strict=True):
            chat.append(message("assistant", text))
    return chats
