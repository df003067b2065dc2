"""`load_catalogue`: the shipped persona catalogue, a user's YAML or JSON file (with its own
questions, or the shipped ones), or an Assistant Axis folder, validated.

Loading the shipped catalogue reads two small text files (milliseconds).
"""

from __future__ import annotations

from pathlib import Path

from sae_atlas.personas import validation
from sae_atlas.personas.catalogue import Catalogue, shipped_data_dir, shipped_questions
from sae_atlas.personas.entries import MIN_PROMPTS, CatalogueError, Question
from sae_atlas.personas.importers import import_assistant_axis


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
    document = validation.check_document(
        validation.read_document(personas_path),
        where,
        validation.DOCUMENT_FIELDS,
        required=("personas",),
    )
    parsed_personas = validation.parse_personas(document["personas"], where, min_prompts)
    source = where
    question_items: tuple[Question, ...] | None = None
    identity_items: tuple[Question, ...] | None = None
    if questions is not None and Path(questions) != personas_path:
        question_items, identity_items = validation.read_questions(Path(questions))
        source = f"{where} + {Path(questions)}"
    elif "questions" in document:
        question_items = validation.parse_questions(document["questions"], where)
    elif questions is not None:
        raise CatalogueError(
            f"{where}: top level: field 'questions' is missing; add 'questions:' to this file or "
            "leave the questions argument out to use the shipped questions"
        )
    if identity_items is None and "identity" in document:
        identity_items = validation.parse_identity(document["identity"], where)
    if question_items is None or identity_items is None:
        shipped, shipped_identity = shipped_questions()
        question_items = shipped if question_items is None else question_items
        identity_items = shipped_identity if identity_items is None else identity_items
    return Catalogue(
        personas=parsed_personas,
        questions=question_items,
        identity=identity_items,
        source=source,
    )
