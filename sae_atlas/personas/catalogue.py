"""The persona catalogue: the validated personas and questions a corpus is sampled from, and the
shipped one's files.

`Catalogue` holds personas (name, category, one-line description, system-prompt variants,
optional trigger wrapper), everyday questions with a fixed train / held-out split, and identity
questions; it looks them up, takes deterministic subsets, and goes to and from a JSON-ready dict
(what a corpus store records). Loading the shipped questions reads one small YAML file.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from feature_store.schema import DEFAULT_PERSONA_NAME
from sae_atlas.personas.entries import (
    CATEGORIES,
    QUESTION_SPLITS,
    SPLITS,
    CatalogueError,
    Persona,
    Question,
)
from sae_atlas.personas.validation import (
    DOCUMENT_FIELDS,
    check_document,
    parse_identity,
    parse_personas,
    parse_questions,
    read_questions,
)


@dataclass(frozen=True)
class Catalogue:
    """Personas and questions, validated; `source` says where they were read from."""

    personas: tuple[Persona, ...]
    questions: tuple[Question, ...]
    identity: tuple[Question, ...]
    source: str
    _index: dict[str, Persona] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {persona.name: persona for persona in self.personas})

    @property
    def names(self) -> tuple[str, ...]:
        """Persona names in catalogue order."""
        return tuple(persona.name for persona in self.personas)

    @property
    def categories(self) -> tuple[str, ...]:
        """Categories present, in order of first appearance."""
        return tuple(dict.fromkeys(persona.category for persona in self.personas))

    def persona(self, name: str) -> Persona:
        """The persona called `name`; CatalogueError listing close names if there is none."""
        if name in self._index:
            return self._index[name]
        close = difflib.get_close_matches(name, self.names, n=5, cutoff=0.5)
        hint = f"close names: {', '.join(repr(n) for n in close)}" if close else "no close names"
        raise CatalogueError(
            f"{self.source}: personas (name={name!r}): field 'name' matches no persona; {hint}; "
            "use a name from Catalogue.names"
        )

    def by_category(self, category: str) -> tuple[Persona, ...]:
        """Personas of one category, in catalogue order (empty if none)."""
        return tuple(persona for persona in self.personas if persona.category == category)

    def split(self, name: str) -> tuple[Question, ...]:
        """Questions of split "train", "heldout" or "identity", in file order."""
        if name == "identity":
            return self.identity
        if name not in QUESTION_SPLITS:
            raise CatalogueError(
                f"{self.source}: questions (split={name!r}): field 'split' is unknown; "
                f"use one of {', '.join(SPLITS)}"
            )
        return tuple(question for question in self.questions if question.split == name)

    @property
    def default_persona(self) -> Persona:
        """The persona named "assistant" of category "default", else the first "default" one."""
        defaults = self.by_category("default")
        for persona in defaults:
            if persona.name == DEFAULT_PERSONA_NAME:
                return persona
        if not defaults:
            raise CatalogueError(
                f"{self.source}: personas: field 'category' is never 'default'; add a persona "
                f"named {DEFAULT_PERSONA_NAME!r} with category 'default'"
            )
        return defaults[0]

    def subset(
        self,
        names: Sequence[str] | None = None,
        categories: Sequence[str] | None = None,
        n_questions: int | None = None,
    ) -> Catalogue:
        """A smaller catalogue, deterministically.

        Keeps the personas named in `names` or belonging to one of `categories` (all personas
        when both are None), in catalogue order, and the first `n_questions` questions of each
        split (train, heldout, identity) in file order (all when None).
        """
        for name in names or ():
            self.persona(name)
        for category in categories or ():
            if category not in CATEGORIES:
                raise CatalogueError(
                    f"{self.source}: personas (category={category!r}): field 'category' is "
                    f"unknown; use one of {', '.join(CATEGORIES)}"
                )
        if n_questions is not None and n_questions < 0:
            raise CatalogueError(
                f"{self.source}: questions: argument 'n_questions' is {n_questions}; "
                "pass a count >= 0 or None"
            )
        if names is None and categories is None:
            personas = self.personas
        else:
            wanted_names = set(names or ())
            wanted_categories = set(categories or ())
            personas = tuple(
                p
                for p in self.personas
                if p.name in wanted_names or p.category in wanted_categories
            )
        questions = tuple(
            question for split in QUESTION_SPLITS for question in self.split(split)[:n_questions]
        )
        order = {question.id: i for i, question in enumerate(self.questions)}
        questions = tuple(sorted(questions, key=lambda question: order[question.id]))
        return Catalogue(
            personas=personas,
            questions=questions,
            identity=self.identity[:n_questions],
            source=self.source,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (for HDF5 attributes); `from_dict` reverses it."""
        return {
            "source": self.source,
            "personas": [_persona_to_dict(persona) for persona in self.personas],
            "questions": [{"id": q.id, "text": q.text, "split": q.split} for q in self.questions],
            "identity": [{"id": q.id, "text": q.text} for q in self.identity],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, min_prompts: int = 1) -> Catalogue:
        """Rebuild (and validate) a catalogue from `to_dict` output."""
        if not isinstance(data, Mapping):
            raise CatalogueError(
                f"<dict>: top level: field 'personas' missing, got a {type(data).__name__}; "
                "pass the dict returned by Catalogue.to_dict()"
            )
        where = str(data.get("source", "<dict>"))
        body = {key: value for key, value in data.items() if key != "source"}
        document = check_document(body, where, DOCUMENT_FIELDS, required=("personas", "questions"))
        return Catalogue(
            personas=parse_personas(document["personas"], where, min_prompts),
            questions=parse_questions(document["questions"], where),
            identity=parse_identity(document.get("identity", []), where),
            source=where,
        )


def _persona_to_dict(persona: Persona) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": persona.name,
        "category": persona.category,
        "description": persona.description,
        "prompts": list(persona.prompts),
    }
    if persona.trigger is not None:
        entry["trigger"] = {"open": persona.trigger.open, "close": persona.trigger.close}
    return entry


def shipped_data_dir() -> Path:
    """The folder holding the shipped personas.yaml and questions.yaml."""
    return Path(str(resources.files("sae_atlas.personas") / "data"))


def shipped_questions() -> tuple[tuple[Question, ...], tuple[Question, ...]]:
    """The shipped questions and identity questions (questions.yaml)."""
    questions, identity = read_questions(shipped_data_dir() / "questions.yaml")
    return questions, identity or ()
