"""The persona catalogue: personas, their system-prompt variants, and the question bank.

Computes nothing numeric. It reads a catalogue (the shipped YAML files, a user's YAML or JSON
file, or the JSON data of the `safety-research/assistant-axis` repository), validates every entry,
and returns an immutable `Catalogue`: personas (name, category, one-line description, system-prompt
variants, optional trigger wrapper), everyday questions with a fixed train / held-out split, and
identity questions. Every validation failure raises `CatalogueError` with a one-line message that
names the file, the entry and the field, and says what to do. Loading the shipped catalogue reads
two small text files (milliseconds).

A prompt of `None` means "no system message at all" (the chat template applies its own default);
a prompt of `""` means an explicitly empty system prompt.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from sae_atlas.errors import SaeAtlasError

CATEGORIES: tuple[str, ...] = (
    "default",
    "profession",
    "fictional",
    "nonhuman",
    "ai",
    "dark",
    "emotion",
    "conditional",
    "imported",
)
QUESTION_SPLITS: tuple[str, ...] = ("train", "heldout")
SPLITS: tuple[str, ...] = (*QUESTION_SPLITS, "identity")
DEFAULT_PERSONA_NAME = "assistant"
MIN_PROMPTS = 5

_SLUG = re.compile(r"^[a-z0-9_]+$")
_PERSONA_FIELDS: tuple[str, ...] = ("name", "category", "description", "prompts", "trigger")
_TRIGGER_FIELDS: tuple[str, ...] = ("open", "close")
_QUESTION_FIELDS: tuple[str, ...] = ("id", "text", "split")
_IDENTITY_FIELDS: tuple[str, ...] = ("id", "text")
_DOCUMENT_FIELDS: tuple[str, ...] = ("personas", "questions", "identity")
_QUESTION_DOCUMENT_FIELDS: tuple[str, ...] = ("questions", "identity")


class CatalogueError(SaeAtlasError):
    """A catalogue file or lookup is wrong; the message names the file, entry and field."""


@dataclass(frozen=True)
class Trigger:
    """A wrapper around the user's message under which a conditional persona appears."""

    open: str
    close: str = ""

    def wrap(self, text: str) -> str:
        """Return `text` inside the wrapper: open + text + close."""
        return f"{self.open}{text}{self.close}"


@dataclass(frozen=True)
class Persona:
    """A persona: its system-prompt variants (None = no system message, "" = empty prompt)."""

    name: str
    category: str
    description: str
    prompts: tuple[str | None, ...]
    trigger: Trigger | None = None


@dataclass(frozen=True)
class Question:
    """A user question; split is "train", "heldout" or "identity"."""

    id: str
    text: str
    split: str


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
        document = _check_document(
            body, where, _DOCUMENT_FIELDS, required=("personas", "questions")
        )
        return Catalogue(
            personas=_parse_personas(document["personas"], where, min_prompts),
            questions=_parse_questions(document["questions"], where),
            identity=_parse_identity(document.get("identity", []), where),
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


# ---------------------------------------------------------------------------- reading files


def _read_document(path: Path) -> Any:
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


def _check_document(
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


# ---------------------------------------------------------------------------- validation


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
    if not _SLUG.match(name):
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


def _parse_personas(value: Any, where: str, min_prompts: int) -> tuple[Persona, ...]:
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


def _parse_questions(value: Any, where: str) -> tuple[Question, ...]:
    items = _check_list(value, where, "questions")
    questions: list[Question] = []
    for index, raw in enumerate(items):
        entry = _entry_label("questions", index, raw, "id")
        fields = _check_fields(raw, where, entry, _QUESTION_FIELDS, required=_QUESTION_FIELDS)
        split = fields["split"]
        if split not in QUESTION_SPLITS:
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
    _unique_ids(questions, where, "questions")
    for split in QUESTION_SPLITS:
        if not any(question.split == split for question in questions):
            raise CatalogueError(
                f"{where}: questions: field 'split' is never {split!r}; mark about a quarter of "
                "the questions 'heldout' and the rest 'train'"
            )
    return tuple(questions)


def _parse_identity(value: Any, where: str) -> tuple[Question, ...]:
    items = _check_list(value, where, "identity")
    questions: list[Question] = []
    for index, raw in enumerate(items):
        entry = _entry_label("identity", index, raw, "id")
        fields = _check_fields(raw, where, entry, _IDENTITY_FIELDS, required=_IDENTITY_FIELDS)
        questions.append(
            Question(
                id=_question_id(fields, where, entry),
                text=_check_text(fields, "text", where, entry),
                split="identity",
            )
        )
    _unique_ids(questions, where, "identity")
    return tuple(questions)


# ---------------------------------------------------------------------------- loading


def shipped_data_dir() -> Path:
    """The folder holding the shipped personas.yaml and questions.yaml."""
    return Path(str(resources.files("sae_atlas.personas") / "data"))


def _shipped_questions() -> tuple[tuple[Question, ...], tuple[Question, ...]]:
    path = shipped_data_dir() / "questions.yaml"
    document = _check_document(
        _read_document(path), str(path), _QUESTION_DOCUMENT_FIELDS, required=("questions",)
    )
    return (
        _parse_questions(document["questions"], str(path)),
        _parse_identity(document.get("identity", []), str(path)),
    )


def load_catalogue(
    personas: str | Path | None = None,
    questions: str | Path | None = None,
    *,
    min_prompts: int = MIN_PROMPTS,
) -> Catalogue:
    """Load and validate a catalogue.

    `personas`: a YAML or JSON file with a `personas:` list (None: the shipped file), or an
    Assistant Axis folder (read by `import_assistant_axis`, which then supplies the questions).
    A file may also hold `questions:` and `identity:`. `questions`: a file with `questions:` (and
    optionally `identity:`); None: the personas file's questions if it has them, else the shipped
    ones. Identity questions missing from the user's files come from the shipped file.
    `min_prompts`: the fewest system-prompt variants a persona may have.
    """
    personas_path = Path(personas) if personas is not None else shipped_data_dir() / "personas.yaml"
    if personas_path.is_dir():
        if questions is not None:
            raise CatalogueError(
                f"{personas_path}: top level: an Assistant Axis folder brings its own questions; "
                "leave the questions argument out"
            )
        return import_assistant_axis(personas_path)
    where = str(personas_path)
    document = _check_document(
        _read_document(personas_path), where, _DOCUMENT_FIELDS, required=("personas",)
    )
    parsed_personas = _parse_personas(document["personas"], where, min_prompts)

    source = where
    question_items: tuple[Question, ...] | None = None
    identity_items: tuple[Question, ...] | None = None
    if questions is not None and Path(questions) != personas_path:
        questions_path = Path(questions)
        questions_where = str(questions_path)
        question_document = _check_document(
            _read_document(questions_path),
            questions_where,
            _QUESTION_DOCUMENT_FIELDS,
            required=("questions",),
        )
        question_items = _parse_questions(question_document["questions"], questions_where)
        if "identity" in question_document:
            identity_items = _parse_identity(question_document["identity"], questions_where)
        source = f"{where} + {questions_where}"
    elif "questions" in document:
        question_items = _parse_questions(document["questions"], where)
    elif questions is not None:
        raise CatalogueError(
            f"{where}: top level: field 'questions' is missing; add 'questions:' to this file or "
            "leave the questions argument out to use the shipped questions"
        )
    if identity_items is None and "identity" in document:
        identity_items = _parse_identity(document["identity"], where)

    if question_items is None or identity_items is None:
        shipped_questions, shipped_identity = _shipped_questions()
        question_items = question_items if question_items is not None else shipped_questions
        identity_items = identity_items if identity_items is not None else shipped_identity
    return Catalogue(
        personas=parsed_personas,
        questions=question_items,
        identity=identity_items,
        source=source,
    )


# ---------------------------------------------------------------------------- assistant-axis


def _find_instructions_dir(root: Path) -> Path:
    for candidate in (root / "data" / "roles" / "instructions", root / "instructions", root):
        if candidate.name == "instructions" and any(candidate.glob("*.json")):
            return candidate
    raise CatalogueError(
        f"{root}: top level: no 'instructions/*.json' role files found; pass the assistant-axis "
        "repository root, its data/roles or data/traits folder, or an instructions folder"
    )


def _find_upwards(start: Path, filename: str, levels: int) -> Path | None:
    folder = start
    for _ in range(levels):
        if (folder / filename).is_file():
            return folder / filename
        folder = folder.parent
    return None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CatalogueError(
            f"{path}: line {error.lineno}: not valid JSON ({error.msg}); fix the syntax there"
        ) from error


def _role_prompts(path: Path, document: Any) -> list[str]:
    if not isinstance(document, Mapping) or "instruction" not in document:
        raise CatalogueError(
            f"{path}: top level: field 'instruction' is missing; a role file needs "
            "'instruction': [{'pos': ...}, ...]"
        )
    instructions = document["instruction"]
    if not isinstance(instructions, list) or not instructions:
        raise CatalogueError(
            f"{path}: top level: field 'instruction' is not a non-empty list; give a list of "
            "{'pos': system prompt} objects"
        )
    prompts: list[str] = []
    for index, item in enumerate(instructions):
        if not isinstance(item, Mapping) or not isinstance(item.get("pos"), str):
            raise CatalogueError(
                f"{path}: instruction[{index}]: field 'pos' is missing or not a string; "
                "give the system prompt as a string"
            )
        if item["pos"] not in prompts:
            prompts.append(item["pos"])
    return prompts


def _imported_questions(
    instructions_dir: Path, role_documents: Mapping[str, tuple[Path, Any]]
) -> tuple[Question, ...]:
    bank = _find_upwards(instructions_dir.parent, "extraction_questions.jsonl", levels=3)
    texts: list[tuple[str, str]] = []
    if bank is not None:
        for line_number, line in enumerate(bank.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as error:
                raise CatalogueError(
                    f"{bank}: line {line_number}: not valid JSON ({error.msg}); fix that line"
                ) from error
            if not isinstance(item, Mapping) or not isinstance(item.get("question"), str):
                raise CatalogueError(
                    f"{bank}: line {line_number}: field 'question' is missing or not a string; "
                    "each line needs {'question': ..., 'id': ...}"
                )
            raw_id = item.get("id", len(texts))
            question_id = f"q{raw_id:03d}" if isinstance(raw_id, int) else str(raw_id)
            texts.append((question_id, item["question"]))
    else:
        seen: set[str] = set()
        for path, document in role_documents.values():
            raw_questions = document.get("questions", [])
            if not isinstance(raw_questions, list) or not all(
                isinstance(text, str) for text in raw_questions
            ):
                raise CatalogueError(
                    f"{path}: top level: field 'questions' is not a list of strings; "
                    "fix the role file"
                )
            for text in raw_questions:
                if text not in seen:
                    seen.add(text)
                    texts.append((f"q{len(texts):03d}", text))
    if len(texts) < 2:
        raise CatalogueError(
            f"{instructions_dir}: questions: field 'questions' has {len(texts)} entries, need at "
            "least 2; add data/extraction_questions.jsonl or questions to the role files"
        )
    return tuple(
        Question(id=question_id, text=text, split="heldout" if index % 4 == 3 else "train")
        for index, (question_id, text) in enumerate(texts)
    )


def import_assistant_axis(
    root: str | Path,
    *,
    roles: Sequence[str] | None = None,
    max_roles: int | None = None,
) -> Catalogue:
    """Import the persona data of the `safety-research/assistant-axis` repository.

    `root`: the repository root (its data/roles is read), data/roles, data/traits, or an
    `instructions` folder. Each `<name>.json` becomes a persona whose prompts are the `pos`
    system prompts (verbatim, placeholders such as `{model_name}` included); `default` gets
    category "default" and comes first, every other role category "imported". Descriptions come
    from role_list.json / trait_list.json. Questions: data/extraction_questions.jsonl when
    present, else the union of the role files' questions; every 4th question (index 3, 7, ...)
    is held out. Identity questions come from the shipped catalogue.
    `roles`: only these names (the default is always kept); `max_roles`: at most this many
    personas, default included.
    """
    root_path = Path(root)
    if not root_path.is_dir():
        raise CatalogueError(
            f"{root_path}: top level: folder not found; pass the assistant-axis repository root"
        )
    instructions_dir = _find_instructions_dir(root_path)
    files = {path.stem: path for path in sorted(instructions_dir.glob("*.json"))}
    for name in roles or ():
        if name not in files:
            close = difflib.get_close_matches(name, list(files), n=5, cutoff=0.5)
            raise CatalogueError(
                f"{instructions_dir}: roles (name={name!r}): argument 'roles' names no role file; "
                f"close names: {', '.join(close) or 'none'}"
            )
    ordered = sorted(files, key=lambda name: (name != "default", name))
    if roles is not None:
        wanted = set(roles)
        ordered = [name for name in ordered if name == "default" or name in wanted]
    if max_roles is not None:
        ordered = ordered[: max(max_roles, 0)]

    descriptions: dict[str, Any] = {}
    for list_name in ("role_list.json", "trait_list.json"):
        list_path = instructions_dir.parent / list_name
        if list_path.is_file():
            loaded = _read_json(list_path)
            if not isinstance(loaded, Mapping):
                raise CatalogueError(
                    f"{list_path}: top level: expected a mapping of name to description; "
                    "fix the file"
                )
            descriptions.update(loaded)

    role_documents: dict[str, tuple[Path, Any]] = {}
    raw_personas: list[dict[str, Any]] = []
    for name in ordered:
        path = files[name]
        if not _SLUG.match(name):
            raise CatalogueError(
                f"{path}: top level: file name {name!r} is not a slug; rename it to use only "
                "a-z, 0-9 and _"
            )
        document = _read_json(path)
        prompts = _role_prompts(path, document)
        role_documents[name] = (path, document)
        description = descriptions.get(name)
        if not isinstance(description, str) or not description.strip():
            description = (
                "The model's default assistant persona."
                if name == "default"
                else f"Role {name!r} imported from assistant-axis."
            )
        raw_personas.append(
            {
                "name": name,
                "category": "default" if name == "default" else "imported",
                "description": " ".join(description.split()),
                "prompts": prompts,
            }
        )
    where = str(instructions_dir)
    if not raw_personas:
        raise CatalogueError(
            f"{where}: roles: argument 'max_roles' or 'roles' selects no role; select at least one"
        )
    _, shipped_identity = _shipped_questions()
    return Catalogue(
        personas=_parse_personas(raw_personas, where, min_prompts=1),
        questions=_imported_questions(instructions_dir, role_documents),
        identity=shipped_identity,
        source=f"assistant-axis:{where}",
    )
