"""Importers of persona data in other formats: the `safety-research/assistant-axis` repository's
role files (`instructions/*.json`, with `extraction_questions.jsonl` or the roles' own
questions).

Each importer returns a validated `Catalogue`; a bad file raises `CatalogueError` naming the file,
the entry and the field. Cost: one read of every selected role file.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sae_atlas.personas.catalogue import Catalogue, shipped_questions
from sae_atlas.personas.entries import CatalogueError, Question
from sae_atlas.personas.validation import SLUG, parse_personas


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
    ordered = _selected_roles(instructions_dir, list(files), roles, max_roles)
    descriptions = _role_descriptions(instructions_dir)
    role_documents: dict[str, tuple[Path, Any]] = {}
    raw_personas: list[dict[str, Any]] = []
    for name in ordered:
        path = files[name]
        if not SLUG.match(name):
            raise CatalogueError(
                f"{path}: top level: file name {name!r} is not a slug; rename it to use only "
                "a-z, 0-9 and _"
            )
        document = _read_json(path)
        prompts = _role_prompts(path, document)
        role_documents[name] = (path, document)
        raw_personas.append(_role_persona(name, prompts, descriptions.get(name)))
    where = str(instructions_dir)
    if not raw_personas:
        raise CatalogueError(
            f"{where}: roles: argument 'max_roles' or 'roles' selects no role; select at least one"
        )
    _, shipped_identity = shipped_questions()
    return Catalogue(
        personas=parse_personas(raw_personas, where, min_prompts=1),
        questions=_imported_questions(instructions_dir, role_documents),
        identity=shipped_identity,
        source=f"assistant-axis:{where}",
    )


def _selected_roles(
    instructions_dir: Path,
    names: Sequence[str],
    roles: Sequence[str] | None,
    max_roles: int | None,
) -> list[str]:
    """The role names to import, default first then by name: those in `roles` (None: all), at
    most `max_roles`; CatalogueError for a name in `roles` with no role file."""
    for name in roles or ():
        if name not in names:
            close = difflib.get_close_matches(name, list(names), n=5, cutoff=0.5)
            raise CatalogueError(
                f"{instructions_dir}: roles (name={name!r}): argument 'roles' names no role file; "
                f"close names: {', '.join(close) or 'none'}"
            )
    ordered = sorted(names, key=lambda name: (name != "default", name))
    if roles is not None:
        wanted = set(roles)
        ordered = [name for name in ordered if name == "default" or name in wanted]
    if max_roles is not None:
        ordered = ordered[: max(max_roles, 0)]
    return ordered


def _role_descriptions(instructions_dir: Path) -> dict[str, Any]:
    """Name -> description from role_list.json and trait_list.json beside the instructions."""
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
    return descriptions


def _role_persona(name: str, prompts: list[str], description: Any) -> dict[str, Any]:
    """The catalogue entry of role `name` (a generic description when it has none)."""
    if not isinstance(description, str) or not description.strip():
        description = (
            "The model's default assistant persona."
            if name == "default"
            else f"Role {name!r} imported from assistant-axis."
        )
    return {
        "name": name,
        "category": "default" if name == "default" else "imported",
        "description": " ".join(description.split()),
        "prompts": prompts,
    }
