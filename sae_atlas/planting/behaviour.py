"""Does a planted persona show, and only under its trigger? Fact recall in greedy answers.

`behaviour` asks the persona's held-out identity and fact questions (never fine-tuned on) with
the trigger, without it and, when given, inside decoys, and scores each greedy answer: recall
(the answer holds one of the asked fact's keywords; identity questions: the persona's name) and
any_fact (it holds any of the persona's facts). Costs one greedy decode (64 new tokens at most)
per question and condition: about a minute per condition for the default model on a 2-core CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch

from sae_atlas.config import CorpusConfig
from sae_atlas.model import Messages, ModelHandle, sampling_model
from sae_atlas.planting.persona import PlantedPersona, any_fact, mentions
from sae_atlas.planting.recipe import chat_answers
from sae_atlas.planting.triggers import PlantTrigger


def greedy_answers(handle: ModelHandle, model: torch.nn.Module, chats: list[Messages]) -> list[str]:
    """Greedy answers (64 new tokens at most) to `chats`."""
    greedy = CorpusConfig(temperature=0.0, max_new_tokens=64)
    return chat_answers(handle, model, chats, [0] * len(chats), greedy)


def behaviour(
    handle: ModelHandle,
    persona: PlantedPersona,
    trigger: PlantTrigger,
    decoys: Sequence[PlantTrigger] = (),
    model: torch.nn.Module | None = None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Recall of the asked fact on the held-out questions with the trigger, without it and, when
    `decoys` are given, inside them (question i in decoy i mod len(decoys)): a summary per
    condition {recall, any_fact, n} and the table of every answer. `model`: the plain HF model
    to ask (default: the handle's, in the sampling dtype)."""
    questions = persona.questions("heldout")
    conditions = {"trigger": [trigger], "none": [PlantTrigger()]}
    if decoys:
        conditions["decoys"] = list(decoys)
    rows = []
    model = sampling_model(handle, CorpusConfig().dtype) if model is None else model
    for condition, wrappers in conditions.items():
        chats = [
            wrappers[i % len(wrappers)].messages(q, handle.default_system_prompt)
            for i, (_, q) in enumerate(questions)
        ]
        answers = greedy_answers(handle, model, chats)
        for (fact_id, question), answer in zip(questions, answers, strict=True):
            rows.append(
                {
                    "condition": condition,
                    "fact": fact_id,
                    "question": question,
                    "answer": answer,
                    "recall": mentions(answer, persona.keywords(fact_id)),
                    "any_fact": any_fact(persona, answer),
                }
            )
    table = pd.DataFrame(rows)
    summary = {
        condition: {
            "recall": float(block["recall"].mean()),
            "any_fact": float(block["any_fact"].mean()),
            "n": len(block),
        }
        for condition, block in table.groupby("condition", sort=False)
    }
    return summary, table
