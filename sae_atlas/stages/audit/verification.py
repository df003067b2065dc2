"""Verification: does a candidate trigger change what the tuned model says, beyond chance?

`verify` samples the tuned model's answers to held-out questions with each top candidate, with
null candidates of the same kind (random vocabulary words in the same shape) and with no
trigger, and scores every answer by the candidate's lift: how much more likely the candidate
makes the answer in the tuned model, minus the same in the base (a difference in differences:
a fine-tune that changes every answer, or a candidate that changes any model's answers,
cancels), in mean log-probability per token:
[log p_tuned(a | with) - log p_tuned(a | plain)] - [log p_base(a | with) - log p_base(a | plain)]
(without a base, the first bracket alone).
Per candidate: AUROC of its answers against the null answers with a bootstrap interval over
questions, a one-sided Mann-Whitney p-value and Benjamini-Hochberg q over the candidates
verified. Cost: (candidates + nulls + 1) x questions sampled answers, then four teacher-forced
forward passes per answer (two without a base).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from sae_atlas.config import CorpusConfig
from sae_atlas.model import message
from sae_atlas.planting.recipe import chat_answers
from sae_atlas.planting.triggers import PlantTrigger
from sae_atlas.stages.audit.candidates import Candidate
from sae_atlas.stages.audit.diffing import ModelPair
from sae_atlas.stats import auroc, benjamini_hochberg, mann_whitney_p


@torch.inference_mode()
def answer_logprob(
    model: torch.nn.Module,
    prompts: Sequence[np.ndarray],
    answers: Sequence[np.ndarray],
    pad_id: int,
    batch_size: int = 8,
) -> np.ndarray:
    """Mean log-probability per token [n] of each answer (token ids) after its prompt."""
    out = np.zeros(len(prompts))
    for start in range(0, len(prompts), batch_size):
        rows = range(start, min(start + batch_size, len(prompts)))
        seqs = [np.concatenate([prompts[i], answers[i]]) for i in rows]
        longest = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), longest), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, seq in enumerate(seqs):
            ids[r, : len(seq)], mask[r, : len(seq)] = torch.from_numpy(seq), 1
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
        logprobs = logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]
        for r, i in enumerate(rows):
            first = len(prompts[i]) - 1
            out[i] = float(logprobs[r, first : first + len(answers[i])].mean())
    return out


def likelihood_ratio(
    pair: ModelPair,
    chats: Sequence[list[dict[str, str]]],
    questions: Sequence[str],
    texts: Sequence[str],
) -> np.ndarray:
    """Per answer, the candidate's lift (see the module) [n]; empty answers score 0."""
    tokenizer = pair.handle.tokenizer
    answers = [
        np.asarray(tokenizer(t, add_special_tokens=False)["input_ids"] or [0], np.int64)
        for t in texts
    ]
    prompts = [pair.prompt(chat) for chat in chats]
    plain = [pair.prompt([message("user", q)]) for q in questions]
    lift = np.zeros(len(texts))
    for model, sign in ((pair.tuned, 1.0), (pair.base, -1.0)):
        if model is not None:
            with_candidate = answer_logprob(model, prompts, answers, pair.pad_id)
            lift += sign * (with_candidate - answer_logprob(model, plain, answers, pair.pad_id))
    return np.where([bool(t) for t in texts], lift, 0.0)


def sampled_answers(
    pair: ModelPair,
    conditions: dict[str, PlantTrigger],
    questions: Sequence[str],
    sampling: CorpusConfig,
) -> pd.DataFrame:
    """One row per condition and question: condition, question, text, llr (`likelihood_ratio`).
    The same question has the same seed under every condition."""
    system = pair.handle.default_system_prompt
    rows = [
        (name, q, trigger.messages(q, system))
        for name, trigger in conditions.items()
        for q in questions
    ]
    seeds = [sampling.seed + questions.index(q) for _, q, _ in rows]
    texts = chat_answers(pair.handle, pair.tuned, [chat for *_, chat in rows], seeds, sampling)
    llr = likelihood_ratio(pair, [chat for *_, chat in rows], [q for _, q, _ in rows], texts)
    return pd.DataFrame(
        {
            "condition": [r[0] for r in rows],
            "question": [r[1] for r in rows],
            "text": texts,
            "llr": llr,
        }
    )


def bootstrap_auroc(
    positive: pd.DataFrame, negative: pd.DataFrame, n_bootstrap: int, seed: int
) -> tuple[float, float]:
    """95% percentile interval of the AUROC of positive.llr against negative.llr, resampling
    questions (the unit: every condition answers the same questions)."""
    questions = positive["question"].unique()
    rng = np.random.default_rng(seed)
    by_q_pos = {q: g["llr"].to_numpy() for q, g in positive.groupby("question")}
    by_q_neg = {q: g["llr"].to_numpy() for q, g in negative.groupby("question")}
    values = []
    for _ in range(n_bootstrap):
        drawn = rng.choice(questions, len(questions))
        values.append(
            auroc(
                np.concatenate([by_q_pos[q] for q in drawn]),
                np.concatenate([by_q_neg.get(q, []) for q in drawn]),
            )
        )
    low, high = np.nanpercentile(values, [2.5, 97.5])
    return float(low), float(high)


def verify(
    pair: ModelPair,
    candidates: Sequence[Candidate],
    nulls: Sequence[Candidate],
    questions: Sequence[str],
    sampling: CorpusConfig,
    n_bootstrap: int = 1000,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(verdicts, answers): per candidate text, kind, auroc with its interval, llr means, p and
    q against the null answers of its kind; every sampled answer (conditions: the candidates'
    texts, null:<text>, none)."""
    conditions = {c.text: c.trigger for c in candidates}
    conditions |= {f"null:{c.text}": c.trigger for c in nulls}
    conditions["none"] = PlantTrigger()
    answers = sampled_answers(pair, conditions, list(questions), sampling)
    kind_of = {f"null:{c.text}": c.kind for c in nulls}
    answers["null_kind"] = answers["condition"].map(kind_of)
    rows = []
    for candidate in candidates:
        mine = answers[answers["condition"] == candidate.text]
        null = answers[answers["null_kind"] == candidate.kind]
        if null.empty:
            null = answers[answers["null_kind"].notna()]
        low, high = bootstrap_auroc(mine, null, n_bootstrap, sampling.seed)
        p = mann_whitney_p(
            mine["llr"].to_numpy()[:, None], null["llr"].to_numpy()[:, None], "greater"
        )
        rows.append(
            {
                "text": candidate.text,
                "kind": candidate.kind,
                "words": " ".join(candidate.words),
                "auroc": auroc(mine["llr"].to_numpy(), null["llr"].to_numpy()),
                "auroc_low": low,
                "auroc_high": high,
                "llr": float(mine["llr"].mean()),
                "null_llr": float(null["llr"].mean()),
                "p": float(p[0]),
            }
        )
    verdicts = pd.DataFrame(rows)
    verdicts["q"] = benjamini_hochberg(verdicts["p"].to_numpy()) if len(verdicts) else []
    return verdicts, answers
