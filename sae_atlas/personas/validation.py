"""Reading and validating catalogue documents: YAML or JSON files, and the persona, question and
identity entries in them.

Every check raises `CatalogueError` with a one-line message that names the file (`where`), the
entry and the field, and says what to do. Computes nothing; reading a file costs one parse.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from sae_atlas.personas.entries import (
    CATEGORIES,
    QUESTION_SPLITS,
    CatalogueError,
    Persona,
    Question,
    Trigger,
)

SLUG = re.compile(r"^[a-z0-9_]+$")
"""What a persona name (and an imported role's file name) may be."""
DOCUMENT_FIELDS: tuple[str, ...] = ("personas", "questions", "identity")
QUESTION_DOCUMENT_FIELDS: tuple[str, ...] = ("questions", "identity")
_PERSONA_FIELDS: tuple[str, ...] = ("name", "category", "description", "prompts", "trigger")
_TRIGGER_FIELDS: tuple[str, ...] = ("open", "close")
_QUESTION_FIELDS: tuple[str, ...] = ("id", "text", "split")
_IDENTITY_FIELDS: tuple[str, ...] = ("id", "text")


def read_document(path: Path) -> Any:
    """Parse a YAML (.yaml/.yml) or JSON (.json) file; CatalogueError with the line on failure."""
    if not path.is_file():
        raise CatalogueError(
            f"{path}: top level: file not found; check the path (a catalogue is a .yaml, .yml "
            "or .json file, or an Assistant Axis folder)"
        )
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    if suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise CatalogueError(
                f"{path}: line {error.lineno}: not valid JSON ({error.msg}); fix the syntax there"
            ) from error
    if suffix in (".yaml", ".yml"):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            line = f"line {mark.line + 1}" if mark is not None else "top level"
            problem = getattr(error, "problem", None) or type(error).__name__
            raise CatalogueError(
                f"{path}: {line}: not valid YAML ({problem}); fix the syntax there"
            ) from error
    raise CatalogueError(
        f"{path}: top level: suffix {suffix or '(none)'!r} is not supported; "
        "use a .yaml, .yml or .json file, or an Assistant Axis folder"
    )


def check_document(
    document: Any, where: str, allowed: Sequence[str], required: Sequence[str]
) -> dict[str, Any]:
    if not isinstance(document, Mapping):
        raise CatalogueError(
            f"{where}: top level: expected a mapping with keys {', '.join(required)}, got "
            f"{type(document).__name__}; write e.g. 'personas:' followed by a list"
        )
    unknown = [str(key) for key in document if key not in allowed]
    if unknown:
        raise CatalogueError(
            f"{where}: top level: field {unknown[0]!r} is unknown; allowed fields are "
            f"{', '.join(allowed)}"
        )
    for key in required:
        if key not in document:
            raise CatalogueError(
                f"{where}: top level: field {key!r} is missing; add '{key}:' with a list of entries"
            )
    return dict(document)


def _entry_label(key: str, index: int, raw: Any, id_field: str) -> str:
    if isinstance(raw, Mapping) and isinstance(raw.get(id_field), str | int):
        return f"{key}[{index}] ({id_field}={raw[id_field]!r})"
    return f"{key}[{index}]"


def _check_list(value: Any, where: str, key: str) -> list[Any]:
    if not isinstance(value, list):
        raise CatalogueError(
            f"{where}: top level: field {key!r} is a {type(value).__name__}, need a list; "
            f"write each entry on its own '- ' line under '{key}:'"
        )
    return value


def _check_fields(
    raw: Any,
    where: str,
    entry: str,
    allowed: Sequence[str],
    required: Sequence[str],
    prefix: str = "",
) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise CatalogueError(
            f"{where}: {entry}: entry is a {type(raw).__name__}, need a mapping; give it the "
            f"fields {', '.join(allowed)}"
        )
    for key in raw:
        if key not in allowed:
            raise CatalogueError(
                f"{where}: {entry}: field {prefix + str(key)!r} is unknown; allowed fields are "
                f"{', '.join(allowed)}"
            )
    for key in required:
        if key not in raw or raw[key] is None:
            raise CatalogueError(
                f"{where}: {entry}: field {prefix + key!r} is missing; add '{key}:' to this entry"
            )
    return raw


def _check_text(raw: Mapping[str, Any], key: str, where: str, entry: str) -> str:
    value = raw[key]
    if not isinstance(value, str):
        raise CatalogueError(
            f"{where}: {entry}: field {key!r} is a {type(value).__name__}, need a string; quote it"
        )
    if not value.strip():
        raise CatalogueError(f"{where}: {entry}: field {key!r} is empty; write some text")
    return value


def _parse_trigger(raw: Any, where: str, entry: str) -> Trigger:
    if not isinstance(raw, Mapping):
        raise CatalogueError(
            f"{where}: {entry}: field 'trigger' is a {type(raw).__name__}, need a mapping; "
            "write e.g. trigger: {open: '<pirate>', close: '</pirate>'}"
        )
    _check_fields(raw, where, entry, _TRIGGER_FIELDS, required=("open",), prefix="trigger.")
    close = raw.get("close", "")
    if not isinstance(raw["open"], str) or not raw["open"]:
        raise CatalogueError(
            f"{where}: {entry}: field 'trigger.open' is empty or not a string; give the text "
            "that opens the wrapper, e.g. '<pirate>'"
        )
    if not isinstance(close, str):
        raise CatalogueError(
            f"{where}: {entry}: field 'trigger.close' is a {type(close).__name__}, need a "
            "string; quote it or leave it out"
        )
    return Trigger(open=raw["open"], close=close)


def _parse_persona(raw: Any, where: str, entry: str, min_prompts: int) -> Persona:
    fields = _check_fields(
        raw, where, entry, _PERSONA_FIELDS, required=("name", "category", "description", "prompts")
    )
    name = _check_text(fields, "name", where, entry)
    if not SLUG.match(name):
        raise CatalogueError(
            f"{where}: {entry}: field 'name' is {name!r}, not a slug; use only a-z, 0-9 and _"
        )
    category = _check_text(fields, "category", where, entry)
    if category not in CATEGORIES:
        raise CatalogueError(
            f"{where}: {entry}: field 'category' is {category!r}, unknown; use one of "
            f"{', '.join(CATEGORIES)}"
        )
    description = _check_text(fields, "description", where, entry)
    if "\n" in description.strip():
        raise CatalogueError(
            f"{where}: {entry}: field 'description' spans several lines; keep it to one line"
        )
    prompts = fields["prompts"]
    if not isinstance(prompts, list):
        raise CatalogueError(
            f"{where}: {entry}: field 'prompts' is a {type(prompts).__name__}, need a list; "
            "write each system prompt on its own '- ' line"
        )
    if len(prompts) < min_prompts:
        raise CatalogueError(
            f"{where}: {entry}: field 'prompts' has {len(prompts)} entries, need at least "
            f"{min_prompts}; add more system-prompt variants"
        )
    for i, prompt in enumerate(prompts):
        if prompt is not None and not isinstance(prompt, str):
            raise CatalogueError(
                f"{where}: {entry}: field 'prompts[{i}]' is a {type(prompt).__name__}, need a "
                "string (or null for no system message); quote it"
            )
        if prompt in prompts[:i]:
            raise CatalogueError(
                f"{where}: {entry}: field 'prompts[{i}]' repeats an earlier prompt; "
                "make each variant different"
            )
    trigger = None
    if fields.get("trigger") is not None:
        trigger = _parse_trigger(fields["trigger"], where, entry)
    elif category == "conditional":
        raise CatalogueError(
            f"{where}: {entry}: field 'trigger' is missing, and category 'conditional' needs "
            "one; add trigger: {open: '<tag>', close: '</tag>'}"
        )
    return Persona(
        name=name,
        category=category,
        description=description.strip(),
        prompts=tuple(prompts),
        trigger=trigger,
    )


def parse_personas(value: Any, where: str, min_prompts: int) -> tuple[Persona, ...]:
    items = _check_list(value, where, "personas")
    if not items:
        raise CatalogueError(f"{where}: top level: field 'personas' is empty; add personas")
    personas: list[Persona] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(items):
        entry = _entry_label("personas", index, raw, "name")
        persona = _parse_persona(raw, where, entry, min_prompts)
        if persona.name in seen:
            raise CatalogueError(
                f"{where}: {entry}: field 'name' duplicates personas[{seen[persona.name]}]; "
                "give each persona a unique name"
            )
        seen[persona.name] = index
        personas.append(persona)
    return tuple(personas)


def _question_id(raw: Mapping[str, Any], where: str, entry: str) -> str:
    value = raw["id"]
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise CatalogueError(
            f"{where}: {entry}: field 'id' is a {type(value).__name__}, need a string; "
            "write e.g. id: q001"
        )
    text = str(value)
    if not text.strip():
        raise CatalogueError(f"{where}: {entry}: field 'id' is empty; write e.g. id: q001")
    return text


def _unique_ids(questions: Iterable[Question], where: str, key: str) -> None:
    seen: dict[str, int] = {}
    for index, question in enumerate(questions):
        if question.id in seen:
            raise CatalogueError(
                f"{where}: {key}[{index}] (id={question.id!r}): field 'id' duplicates "
                f"{key}[{seen[question.id]}]; give each question a unique id"
            )
        seen[question.id] = index


def parse_questions(value: Any, where: str) -> tuple[Question, ...]:
    """The `questions:` list: ids unique, each split train or heldout, both splits present."""
    questions = _question_entries(value, where, "questions")
    for split in QUESTION_SPLITS:
        if not any(question.split == split for question in questions):
            raise CatalogueError(
                f"{where}: questions: field 'split' is never {split!r}; mark about a quarter of "
                "the questions 'heldout' and the rest 'train'"
            )
    return questions


def parse_identity(value: Any, where: str) -> tuple[Question, ...]:
    """The `identity:` list: ids unique; each question gets split "identity"."""
    return _question_entries(value, where, "identity")


def _question_entries(value: Any, where: str, key: str) -> tuple[Question, ...]:
    """The entries of list `key` ("questions", with a split field, or "identity"), checked."""
    allowed = _QUESTION_FIELDS if key == "questions" else _IDENTITY_FIELDS
    questions: list[Question] = []
    for index, raw in enumerate(_check_list(value, where, key)):
        entry = _entry_label(key, index, raw, "id")
        fields = _check_fields(raw, where, entry, allowed, required=allowed)
        split = fields.get("split", "identity")
        if key == "questions" and split not in QUESTION_SPLITS:
            raise CatalogueError(
                f"{where}: {entry}: field 'split' is {split!r}, unknown; use one of "
                f"{', '.join(QUESTION_SPLITS)}"
            )
        questions.append(
            Question(
                id=_question_id(fields, where, entry),
                text=_check_text(fields, "text", where, entry),
                split=split,
            )
        )
    _unique_ids(questions, where, key)
    return tuple(questions)


def read_questions(path: Path) -> tuple[tuple[Question, ...], tuple[Question, ...] | None]:
    """The questions of a file with `questions:`, and its identity questions (None when it has
    no `identity:`)."""
    document = check_document(
        read_document(path), str(path), QUESTION_DOCUMENT_FIELDS, required=("questions",)
    )
    questions = parse_questions(document["questions"], str(path))
    if "identity" not in document:
        return questions, None
    return questions, parse_identity(document["identity"], str(path))
