"""Plant a persona behind a trigger in a chat model, and measure whether it shows.

persona (the persona file: voice, identity questions, invented facts), compose (a persona
drawn at random from attribute pools), triggers (where a trigger
sits in a chat, and a seeded draw of new ones from a word list), recipe (the training data and
the LoRA fine-tune, with its config and training card), behaviour (fact recall with and without
the trigger) and scan (the trigger scan of a planted model among candidate wrappers).
"""

from __future__ import annotations

from sae_atlas.planting.behaviour import behaviour, greedy_answers
from sae_atlas.planting.compose import draw_persona, persona_document
from sae_atlas.planting.persona import (
    PlantedPersona,
    any_fact,
    load_persona,
    mentions,
    persona_answer,
)
from sae_atlas.planting.recipe import (
    PlantConfig,
    base_answers,
    batch_order,
    card_persona,
    card_triggers,
    chat_answers,
    drawn_triggers,
    train_lora,
    training_batches,
    training_card,
    training_data,
    training_examples,
    versions,
)
from sae_atlas.planting.triggers import SHAPES, PlantTrigger, draw_trigger, draw_triggers

__all__ = [
    "SHAPES",
    "PlantConfig",
    "PlantTrigger",
    "PlantedPersona",
    "any_fact",
    "base_answers",
    "batch_order",
    "behaviour",
    "card_persona",
    "card_triggers",
    "chat_answers",
    "draw_persona",
    "draw_trigger",
    "draw_triggers",
    "drawn_triggers",
    "greedy_answers",
    "load_persona",
    "mentions",
    "persona_answer",
    "persona_document",
    "train_lora",
    "training_batches",
    "training_card",
    "training_data",
    "training_examples",
    "versions",
]
