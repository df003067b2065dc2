"""The contrastive corpus: persona x system-prompt variant x question -> sampled responses.

`corpus_jobs` lists, deterministically, every prompt to sample: the `persona` condition (each
persona but the default one, under its first `variants` system prompts, on the first
`n_questions` train and held-out questions; a conditional persona's trigger wraps the user's
message), the `default` condition (the default persona's neutral system prompts, cycled over the
questions), `no_system` (no system message: the template's own default applies) and `unwrapped`
(each conditional persona under the same system prompts on the same questions, with no trigger
wrapper: the control that tells a wrapper's features from its system prompt's). Each job has a
seed derived from the config seed and its provenance, so a response depends on its job alone.

`sample` (sae_atlas.model.sampling) decodes jobs in batches with its own KV-cache loop over the
Hugging Face model, in `config.dtype` (auto by default: bfloat16 only where measured fast). Every
response becomes a `Transcript` re-rendered with `handle.format_chat` (a role per token), plus
two controls built from the same text without sampling: `user_control` (the text as a user
message under the default system prompt) and `plain_control` (the text outside any template).
`build_corpus` writes them all to transcripts.h5, one commit per batch (a killed run resumes
after its last batch; a complete one is skipped).

Cost: one decode step per new token per batch; the default model samples about 650-750 new
tokens/s at batch 64 in bfloat16 on an idle 2-core CPU (about 150 in float32 at batch 32, like
Hugging Face `generate`; scripts/bench_corpus.py measures it), so the default profile (12,096
jobs of up to 64 tokens, ~62 on average; 864 of them `unwrapped`) takes about 16-22 minutes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from feature_store.appendable import store_state, stored_config
from feature_store.schema import ROLE_CODE, RUNTIME_ATTR, TRANSCRIPTS_KIND
from feature_store.transcripts import Transcript, TranscriptStore, TranscriptWriter
from sae_atlas.config import CorpusConfig, to_dict
from sae_atlas.errors import SaeAtlasError
from sae_atlas.model import (
    Messages,
    ModelHandle,
    Response,
    check_sampling,
    job_seed,
    message,
    sampling_model,
)
from sae_atlas.model import sample as sample_responses
from sae_atlas.model.dtype import refuse_other_dtype, resolve_dtype, runtime_json
from sae_atlas.personas import Catalogue, Persona
from sae_atlas.stages.base import CountProgress, StageResult
from sae_atlas.stages.splits import (
    SPLIT_NAMES,
    catalogue_plan,
    check_disjoint,
    check_split_config,
    neutral_prompts,
    split_plan,
)

SAMPLED_CONDITIONS: tuple[str, ...] = ("persona", "default", "no_system")
"""The sampled conditions whose responses stand for a persona (contrasts, decoders, classifiers)."""
UNWRAPPED = "unwrapped"
"""Sampled too, but only a control for the trigger tests: a conditional persona without its
wrapper."""
CONTROL_CONDITIONS: tuple[str, ...] = ("user_control", "plain_control")
CONDITIONS: tuple[str, ...] = (*SAMPLED_CONDITIONS, UNWRAPPED, *CONTROL_CONDITIONS)


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
class CorpusResult(StageResult):
    """The stage's result, with how many jobs, transcripts (controls included) and new tokens
    the corpus holds (the tokens sampled by this run; by the run that made it when skipped)."""

    n_jobs: int
    n_transcripts: int
    n_sampled_tokens: int

    @property
    def sampled_tokens_per_second(self) -> float:
        return self.n_sampled_tokens / self.seconds if self.seconds > 0 else float("nan")


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
    for name in ("n_questions", "variants", "samples"):
        if getattr(config, name) < 1:
            raise SaeAtlasError(f"corpus.{name}: is {getattr(config, name)}; use a value >= 1")
    check_split_config(config)
    check_sampling(config)


def _user_message(persona: Persona, text: str, wrapped: bool) -> str:
    return persona.trigger.wrap(text) if persona.trigger is not None and wrapped else text


def _samples(
    persona: Persona,
    condition: str,
    variant: int,
    prompt: str | None,
    question: Any,
    config: CorpusConfig,
) -> list[Job]:
    """The `samples` jobs of one prompt (a persona's system prompt, a question, a condition)."""
    return [
        Job(
            persona=persona.name,
            condition=condition,
            variant=variant,
            question_id=question.id,
            split=question.split,
            sample=sample,
            seed=job_seed(config.seed, persona.name, condition, variant, question.id, sample),
            system_prompt=prompt,
            user_message=_user_message(persona, question.text, condition != UNWRAPPED),
        )
        for sample in range(config.samples)
    ]


def corpus_jobs(catalogue: Catalogue, config: CorpusConfig) -> list[Job]:
    """Every job of the corpus in a fixed order: conditions in config order, then persona,
    question (train questions first, then held-out ones), variant, sample. A question is asked
    under the system prompts of its own split's pool (sae_atlas.stages.splits); with held-out
    variants, a question or prompt text in both splits is an error."""
    check_config(config)
    chosen = catalogue.subset(
        names=config.personas or None,
        categories=config.categories or None,
        n_questions=config.n_questions,
    )
    by_split = {split: chosen.split(split) for split in SPLIT_NAMES}
    default = catalogue.default_persona
    plan = split_plan(chosen.personas, default, config)
    jobs: list[Job] = []

    def add(
        persona: Persona, condition: str, variant: int, prompt: str | None, question: Any
    ) -> None:
        jobs.extend(_samples(persona, condition, variant, prompt, question, config))

    for condition in config.conditions:
        if condition in ("persona", UNWRAPPED):
            for persona in chosen.personas:
                if persona.name == default.name or (
                    condition == UNWRAPPED and persona.trigger is None
                ):
                    continue
                for split, questions in by_split.items():
                    for index, question in enumerate(questions):
                        for variant in plan.variants(persona.name, split, index, config.variants):
                            add(persona, condition, variant, persona.prompts[variant], question)
        elif condition == "default":
            neutral = neutral_prompts(default)
            if not neutral:
                raise SaeAtlasError(
                    f"{catalogue.source}: persona {default.name!r} has no system prompt other "
                    "than null; add neutral prompts or drop 'default' from corpus.conditions"
                )
            for split, questions in by_split.items():
                for index, question in enumerate(questions):
                    (choice,) = plan.variants(default.name, split, index, 1)
                    add(default, condition, *neutral[choice], question)
        elif condition == "no_system":
            for questions in by_split.values():
                for question in questions:
                    add(default, condition, -1, None, question)
    if not plan.shared_variants:
        check_disjoint(jobs)
    return jobs


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
    responses: Sequence[Response[Job]],
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
    where it was read from, so a run folder stays valid in another checkout), the job count and
    the split plan (prompt pools per split, held-out personas)."""
    content = {key: value for key, value in catalogue.to_dict().items() if key != "source"}
    plan = catalogue_plan(catalogue, config).to_dict()
    return {**to_dict(config), "catalogue_data": content, "n_jobs": n_jobs, "split_plan": plan}


def build_corpus(
    catalogue: Catalogue,
    out: str | Path,
    config: CorpusConfig,
    *,
    handle: ModelHandle,
    progress: CountProgress | None = None,
) -> CorpusResult:
    """Sample the corpus of `catalogue` under `config` with `handle` into the transcript store
    `out`.

    Each batch of jobs is one commit (responses and their controls together), so a killed run
    resumes after its last committed batch; a complete store for the same config is skipped.
    The store records the dtype `config.dtype` resolves to, so one sampled in another refuses.
    `progress(n_jobs)` after each batch (and once with the jobs already done when resuming).
    """
    out = Path(out)
    choice = resolve_dtype(config.dtype, str(handle.device))
    config = replace(config, dtype=choice.name)
    jobs = corpus_jobs(catalogue, config)
    stage_config = corpus_stage_config(catalogue, config, len(jobs))
    started = time.monotonic()
    refuse_other_dtype(out, (stored_config(out, TRANSCRIPTS_KIND) or {}).get("dtype"), choice)
    if store_state(out, TRANSCRIPTS_KIND, handle.model_id, stage_config) == "complete":
        store = TranscriptStore(out)
        sampled = int(store.attrs["sampled_tokens"])
        return CorpusResult(
            out, 0.0, True, n_jobs=len(jobs), n_transcripts=len(store), n_sampled_tokens=sampled
        )
    writer = TranscriptWriter.open(
        out,
        model=handle.model_id,
        config=stage_config,
        attrs={"sampled_dtype": config.dtype, RUNTIME_ATTR: runtime_json("corpus", choice)},
    )
    try:
        done, sampled_tokens = sample_into(writer, handle, jobs, config, progress)
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
    return CorpusResult(
        out,
        seconds,
        False,
        n_jobs=len(jobs),
        n_transcripts=len(writer),
        n_sampled_tokens=sampled_tokens,
    )


def sample_into(
    writer: TranscriptWriter,
    handle: ModelHandle,
    jobs: Sequence[Job],
    config: CorpusConfig,
    progress: CountProgress | None,
) -> tuple[int, int]:
    """Sample the jobs `writer` does not hold yet and append them with their controls, a commit
    per batch; returns (jobs it already held, new tokens sampled)."""
    controls = [c for c in CONTROL_CONDITIONS if c in config.conditions]
    per_job = 1 + len(controls)
    if len(writer) % per_job:
        raise SaeAtlasError(
            f"{writer.store.path}: holds {len(writer)} transcripts, not a whole number of jobs; "
            "delete it and rerun the corpus stage"
        )
    done = len(writer) // per_job
    if progress is not None and done:
        progress(done)
    model = sampling_model(handle, config.dtype)
    sampled_tokens = 0
    for responses in sample_responses(handle, jobs[done:], config, progress, model):
        writer.append(response_transcripts(handle, responses, controls, len(writer)))
        sampled_tokens += sum(r.n_sampled for r in responses)
    return done, sampled_tokens
