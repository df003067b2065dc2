"""Cheap scoring of candidate triggers: no sampling, one batched forward pass per model.

`candidate_divergence` puts every candidate around each probe question and measures, at the
first response token (the next-token distribution after the assistant header), the divergence
KL(tuned || base) on the same prompt; without a base model, KL(tuned with the candidate ||
tuned on the plain question). `score_table` averages it over the questions and tests each
candidate against the null of its kind (random vocabulary words in the same shape, same word
count): a normal fitted to the null's log scores gives a z-score and a one-sided p-value,
Benjamini-Hochberg over every candidate scored gives q-values. Cost: the tokens that differ from
each batch's shared prefix (about 10-20 per candidate and question), twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from scipy.stats import norm

from sae_atlas.model import message
from sae_atlas.stages.audit.candidates import Candidate
from sae_atlas.stages.audit.diffing import ModelPair, batched_states, kl_divergence
from sae_atlas.stats import benjamini_hochberg


def candidate_prompts(
    pair: ModelPair, candidates: Sequence[Candidate], question: str
) -> list[np.ndarray]:
    """Token ids of each candidate around `question` under the chat template."""
    system = pair.handle.default_system_prompt
    return [pair.prompt(c.trigger.messages(question, system)) for c in candidates]


def reference_states(pair: ModelPair, questions: Sequence[str], batch_size: int) -> list:
    """Without a base: the tuned model's log-probabilities at the first response token of each
    plain question, [1, vocab] each."""
    plain = [pair.prompt([message("user", q)]) for q in questions]
    return [
        logprobs[i : i + 1]
        for logprobs, _ in batched_states(pair.tuned, plain, pair.pad_id, batch_size)
        for i in range(len(logprobs))
    ]


def candidate_divergence(
    pair: ModelPair,
    candidates: Sequence[Candidate],
    questions: Sequence[str],
    batch_size: int,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """KL divergence [n_candidates, n_questions] at the first response token (see the module).
    Prompts are sorted so that a batch shares a long prefix."""
    kl = np.zeros((len(candidates), len(questions)))
    references = None if pair.base is not None else reference_states(pair, questions, batch_size)
    for column, question in enumerate(questions):
        prompts = candidate_prompts(pair, candidates, question)
        order = sorted(range(len(prompts)), key=lambda i: prompts[i].tolist())
        ordered = [prompts[i] for i in order]
        tuned = batched_states(pair.tuned, ordered, pair.pad_id, batch_size)
        other = batched_states(pair.base, ordered, pair.pad_id, batch_size) if pair.base else None
        start = 0
        for logprobs, _ in tuned:
            if other is not None:
                reference = next(other)[0]
            else:
                assert references is not None
                reference = references[column].expand_as(logprobs)
            rows = order[start : start + len(logprobs)]
            kl[rows, column] = kl_divergence(logprobs, reference)
            start += len(logprobs)
            if progress is not None:
                progress(len(logprobs))
    return kl


def score_table(
    candidates: Sequence[Candidate], kl: np.ndarray, is_null: np.ndarray
) -> pd.DataFrame:
    """One row per candidate: text, shape, kind, source, words, score (mean KL over questions),
    null (whether a null draw), z and p against the nulls of its kind, q (Benjamini-Hochberg
    over every non-null candidate; NaN for nulls), sorted by z."""
    score = kl.mean(1)
    table = pd.DataFrame(
        {
            "text": [c.text for c in candidates],
            "shape": [c.shape for c in candidates],
            "kind": [c.kind for c in candidates],
            "source": [c.source for c in candidates],
            "words": [" ".join(c.words) for c in candidates],
            "score": score,
            "null": is_null,
        }
    )
    log_score = np.log(np.maximum(score, 1e-9))
    table["z"] = np.nan
    for kind, rows in table.groupby("kind").groups.items():
        null = log_score[(table["kind"] == kind).to_numpy() & is_null]
        if len(null) < 3:
            null = log_score[is_null]
        table.loc[rows, "z"] = (log_score[rows] - null.mean()) / max(null.std(ddof=1), 1e-6)
    table["p"] = norm.sf(table["z"].to_numpy())
    table["q"] = np.nan
    real = ~is_null
    table.loc[real, "q"] = benjamini_hochberg(table.loc[real, "p"].to_numpy())
    table["index"] = np.arange(len(table))
    return table.sort_values("z", ascending=False, kind="stable").reset_index(drop=True)
