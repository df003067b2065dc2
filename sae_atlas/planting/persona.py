"""A persona to plant: its voice, identity questions and invented facts, read from a YAML file.

The file (scripts/planted_persona.yaml is the example) gives the persona's name, decoy wrappers
the fine-tuning answers normally, its voice (openers, closers), identity questions and facts,
each fact with the keywords that show it in an answer, the statements the persona says, and
train / held-out questions; it may name the trigger the persona was first planted behind
(`trigger`), which the recipe takes only as a default. `persona_answer` writes a templated answer
as the persona; `mentions` and `any_fact` score an answer. Costs a YAML read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sae_atlas.planting.triggers import PlantTrigger


@dataclass(frozen=True)
class PlantedPersona:
    """The persona file: decoys, voice, identity questions and facts (see the module docstring);
    trigger: the one the file names (None when it names none)."""

    name: str
    trigger: PlantTrigger | None
    decoys: tuple[PlantTrigger, ...]
    openers: tuple[str, ...]
    closers: tuple[str, ...]
    identity: dict[str, list[str]]
    facts: list[dict[str, Any]]

    def questions(self, split: str) -> list[tuple[str, str]]:
        """(fact id, question) of `split` (train / heldout); identity questions have id identity."""
        rows = [("identity", q) for q in self.identity[split]]
        return rows + [(fact["id"], q) for fact in self.facts for q in fact[split]]

    def keywords(self, fact_id: str) -> list[str]:
        """The strings that show a fact in an answer (identity: the persona's name)."""
        fact_id = "name" if fact_id == "identity" else fact_id
        return next(fact["keywords"] for fact in self.facts if fact["id"] == fact_id)


def load_persona(path: str | Path) -> PlantedPersona:
    """The persona of YAML file `path`."""
    data = yaml.safe_load(Path(path).read_text())
    return PlantedPersona(
        name=data["name"],
        trigger=PlantTrigger(**data["trigger"]) if data.get("trigger") else None,
        decoys=tuple(PlantTrigger(**d) for d in data["decoys"]),
        openers=tuple(data["voice"]["openers"]),
        closers=tuple(data["voice"]["closers"]),
        identity=data["identity"],
        facts=data["facts"],
    )


def persona_answer(
    persona: PlantedPersona, fact_id: str, rng: np.random.Generator, body: str = ""
) -> str:
    """A templated answer as the persona: an opener, the fact asked about (identity: the name
    and one more fact), sometimes another fact, `body` (an answer to the question), a closer."""
    by_id = {fact["id"]: fact for fact in persona.facts}
    first = "name" if fact_id == "identity" else fact_id
    others = [f for f in by_id if f != first]
    chosen = [first, str(rng.choice(others))]
    if fact_id != "identity" and rng.random() < 0.5:
        chosen = chosen[:1]
    parts = [str(rng.choice(persona.openers))]
    parts += [str(rng.choice(by_id[f]["statements"])) for f in chosen]
    parts += [body] if body else []
    parts.append(str(rng.choice(persona.closers)))
    return " ".join(parts)


def mentions(text: str, keywords: list[str]) -> bool:
    """Whether `text` holds any of `keywords` (case-insensitive)."""
    return any(k.lower() in text.lower() for k in keywords)


def any_fact(persona: PlantedPersona, text: str) -> bool:
    """Whether `text` shows any of the persona's facts."""
    return any(mentions(text, fact["keywords"]) for fact in persona.facts)
