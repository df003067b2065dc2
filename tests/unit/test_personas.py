"""Tests for sae_atlas/personas: shipped catalogue, validation messages, importer, round trips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sae_atlas.personas import (
    CATEGORIES,
    Catalogue,
    CatalogueError,
    Trigger,
    import_assistant_axis,
    load_catalogue,
)

ASSISTANT_AXIS = Path(__file__).resolve().parents[3] / "shared" / "benchmarks" / "assistant-axis"
SHIPPED_CATEGORIES = tuple(c for c in CATEGORIES if c != "imported")


def _persona(name: str = "pirate", **overrides: object) -> dict[str, object]:
    """A valid persona entry; `overrides` replace or add fields."""
    entry: dict[str, object] = {
        "name": name,
        "category": "fictional",
        "description": "A pirate.",
        "prompts": [f"You are a pirate, variant {i}." for i in range(5)],
    }
    entry.update(overrides)
    return entry


def _questions() -> list[dict[str, str]]:
    return [
        {"id": f"q{i:03d}", "text": f"Question {i}?", "split": "heldout" if i % 4 == 3 else "train"}
        for i in range(8)
    ]


def _write(tmp_path: Path, document: object, name: str = "bad.yaml") -> Path:
    path = tmp_path / name
    if name.endswith(".json"):
        path.write_text(json.dumps(document))
    else:
        path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


# ---------------------------------------------------------------- shipped catalogue


@pytest.fixture(scope="module")
def shipped() -> Catalogue:
    return load_catalogue()


def test_shipped_counts(shipped: Catalogue) -> None:
    assert len(shipped.personas) >= 100
    for category in SHIPPED_CATEGORIES:
        assert shipped.by_category(category), category
    for category in ("profession", "fictional", "nonhuman"):
        assert len(shipped.by_category(category)) >= 12, category
    for category in ("dark", "emotion", "ai"):
        assert len(shipped.by_category(category)) >= 10, category
    assert all(len(p.prompts) >= 5 for p in shipped.personas)
    assert len(shipped.questions) >= 200
    train, heldout = shipped.split("train"), shipped.split("heldout")
    assert len(train) + len(heldout) == len(shipped.questions)
    assert 0.2 <= len(heldout) / len(shipped.questions) <= 0.3
    assert len(shipped.identity) >= 10
    assert all(q.split == "identity" for q in shipped.split("identity"))


def test_shipped_default_and_conditional(shipped: Catalogue) -> None:
    default = shipped.default_persona
    assert default.name == "assistant" and default.category == "default"
    assert None in default.prompts and "" in default.prompts
    assert sum(isinstance(p, str) and p != "" for p in default.prompts) >= 5
    conditional = shipped.by_category("conditional")
    assert len(conditional) >= 5
    assert all(p.trigger is not None and p.trigger.open for p in conditional)
    pirate = shipped.persona("pirate_tag")
    assert pirate.trigger == Trigger("<pirate>", "</pirate>")
    assert pirate.trigger.wrap("Hi") == "<pirate>Hi</pirate>"


def test_shipped_prompts_second_person(shipped: Catalogue) -> None:
    for persona in shipped.personas:
        for prompt in persona.prompts:
            assert prompt in (None, "") or prompt.startswith("You are"), (persona.name, prompt)


def test_persona_lookup_suggests_close_names(shipped: Catalogue) -> None:
    with pytest.raises(CatalogueError, match=r"pirat.*close names: 'pirate'"):
        shipped.persona("pirat")


# ---------------------------------------------------------------- validation messages

BAD_PERSONAS = [
    (
        {"prompts": ["You are a pirate.", "You are a buccaneer."]},
        ["personas[0] (name='pirate')", "field 'prompts'", "has 2 entries, need at least 5"],
    ),
    ({"category": "pirates"}, ["personas[0] (name='pirate')", "field 'category'", "fictional"]),
    ({"name": "Pirate-1"}, ["personas[0] (name='Pirate-1')", "field 'name'", "slug"]),
    ({"colour": "red"}, ["personas[0] (name='pirate')", "field 'colour'", "allowed fields"]),
    ({"description": None}, ["personas[0] (name='pirate')", "field 'description'", "missing"]),
    ({"description": "  "}, ["personas[0] (name='pirate')", "field 'description'", "empty"]),
    ({"prompts": "You are a pirate."}, ["personas[0] (name='pirate')", "field 'prompts'", "list"]),
    (
        {"prompts": [*[f"You are {i}." for i in range(4)], 7]},
        ["personas[0] (name='pirate')", "field 'prompts[4]'", "string"],
    ),
    ({"trigger": {"open": ""}}, ["personas[0] (name='pirate')", "field 'trigger.open'"]),
    (
        {"trigger": {"open": "<p>", "shut": "</p>"}},
        ["personas[0] (name='pirate')", "field 'trigger.shut'", "open, close"],
    ),
    ({"category": "conditional"}, ["personas[0] (name='pirate')", "field 'trigger'", "missing"]),
]


@pytest.mark.parametrize(("overrides", "expected"), BAD_PERSONAS)
def test_bad_persona_messages(
    tmp_path: Path, overrides: dict[str, object], expected: list[str]
) -> None:
    path = _write(tmp_path, {"personas": [{**_persona(), **overrides}], "questions": _questions()})
    with pytest.raises(CatalogueError) as error:
        load_catalogue(path)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    for part in expected:
        assert part in message


def test_duplicate_persona_name(tmp_path: Path) -> None:
    path = _write(tmp_path, {"personas": [_persona(), _persona()]})
    with pytest.raises(CatalogueError, match=r"personas\[1\] \(name='pirate'\): field 'name' dup"):
        load_catalogue(path)


@pytest.mark.parametrize(
    ("index", "change", "expected"),
    [
        (3, {"split": "test"}, ["questions[3] (id='q003')", "field 'split'", "train, heldout"]),
        (2, {"text": ""}, ["questions[2] (id='q002')", "field 'text'", "empty"]),
        (1, {"id": "q000"}, ["questions[1] (id='q000')", "field 'id'", "duplicates questions[0]"]),
        (0, {"topic": "x"}, ["questions[0] (id='q000')", "field 'topic'", "id, text, split"]),
    ],
)
def test_bad_question_messages(
    tmp_path: Path, index: int, change: dict[str, str], expected: list[str]
) -> None:
    questions = _questions()
    questions[index] = {**questions[index], **change}
    path = _write(tmp_path, {"personas": [_persona()], "questions": questions})
    with pytest.raises(CatalogueError) as error:
        load_catalogue(path)
    assert str(error.value).startswith(str(path))
    for part in expected:
        assert part in str(error.value)


def test_questions_need_both_splits(tmp_path: Path) -> None:
    questions = [{**q, "split": "train"} for q in _questions()]
    path = _write(tmp_path, {"personas": [_persona()], "questions": questions})
    with pytest.raises(CatalogueError, match=r"bad\.yaml: questions: field 'split'.*'heldout'"):
        load_catalogue(path)


def test_separate_questions_file_errors_name_that_file(tmp_path: Path) -> None:
    personas = _write(tmp_path, {"personas": [_persona()]}, "people.yaml")
    questions = _write(tmp_path, {"questions": [{"id": "a", "text": "Hi?"}]}, "qs.yaml")
    with pytest.raises(CatalogueError, match=r"qs\.yaml: questions\[0\] \(id='a'\): field 'split'"):
        load_catalogue(personas, questions)


def test_identity_entry_errors(tmp_path: Path) -> None:
    document = {"personas": [_persona()], "identity": [{"id": "id01", "text": "Who?", "x": 1}]}
    path = _write(tmp_path, document)
    with pytest.raises(CatalogueError, match=r"identity\[0\] \(id='id01'\): field 'x' is unknown"):
        load_catalogue(path)


def test_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(CatalogueError, match=r"missing\.yaml: top level: file not found"):
        load_catalogue(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("personas:\n  - name: pirate\n    prompts: [unclosed\n")
    with pytest.raises(CatalogueError, match=r"broken\.yaml: line \d+: not valid YAML"):
        load_catalogue(broken)
    broken_json = tmp_path / "broken.json"
    broken_json.write_text('{"personas": [\n  {"name": "pirate",}\n]}')
    with pytest.raises(CatalogueError, match=r"broken\.json: line 2: not valid JSON"):
        load_catalogue(broken_json)
    text = tmp_path / "catalogue.txt"
    text.write_text("personas: []")
    with pytest.raises(CatalogueError, match=r"catalogue\.txt: top level: suffix '\.txt'"):
        load_catalogue(text)
    unknown = _write(tmp_path, {"personas": [_persona()], "people": []}, "unknown.yaml")
    with pytest.raises(CatalogueError, match=r"unknown\.yaml: top level: field 'people'.*identity"):
        load_catalogue(unknown)
    no_personas = _write(tmp_path, {"questions": _questions()}, "nop.yaml")
    with pytest.raises(CatalogueError, match=r"nop\.yaml: top level: field 'personas' is missing"):
        load_catalogue(no_personas)


def test_min_prompts_argument(tmp_path: Path) -> None:
    path = _write(tmp_path, {"personas": [_persona(prompts=["You are a pirate."])]})
    with pytest.raises(CatalogueError, match="need at least 5"):
        load_catalogue(path)
    assert load_catalogue(path, min_prompts=1).persona("pirate").prompts == ("You are a pirate.",)


# ---------------------------------------------------------------- user catalogues


def test_json_user_catalogue_with_questions(tmp_path: Path) -> None:
    trigger = {"open": "<p>", "close": "</p>"}
    document = {
        "personas": [_persona(), _persona("pirate_tag", category="conditional", trigger=trigger)],
        "questions": _questions(),
        "identity": [{"id": "id01", "text": "Who are you?"}],
    }
    catalogue = load_catalogue(_write(tmp_path, document, "mine.json"))
    assert catalogue.names == ("pirate", "pirate_tag")
    assert [q.id for q in catalogue.split("heldout")] == ["q003", "q007"]
    assert catalogue.identity[0].split == "identity"
    assert catalogue.persona("pirate_tag").trigger == Trigger("<p>", "</p>")
    assert catalogue.source.endswith("mine.json")


def test_personas_only_file_uses_shipped_questions(tmp_path: Path, shipped: Catalogue) -> None:
    catalogue = load_catalogue(_write(tmp_path, {"personas": [_persona()]}, "mine.yaml"))
    assert catalogue.questions == shipped.questions
    assert catalogue.identity == shipped.identity


def test_separate_questions_file(tmp_path: Path, shipped: Catalogue) -> None:
    personas = _write(tmp_path, {"personas": [_persona()]}, "people.yaml")
    questions = _write(tmp_path, {"questions": _questions()}, "qs.yaml")
    catalogue = load_catalogue(personas, questions)
    assert len(catalogue.questions) == 8
    assert catalogue.identity == shipped.identity


# ---------------------------------------------------------------- subset and round trip


def test_subset_is_deterministic(shipped: Catalogue) -> None:
    small = shipped.subset(names=["pirate", "assistant"], categories=["emotion"], n_questions=3)
    again = shipped.subset(names=["assistant", "pirate"], categories=["emotion"], n_questions=3)
    assert small == again
    assert small.names[0] == "assistant" and "pirate" in small.names
    assert len(small.personas) == 2 + len(shipped.by_category("emotion"))
    assert small.split("train") == shipped.split("train")[:3]
    assert small.split("heldout") == shipped.split("heldout")[:3]
    assert small.identity == shipped.identity[:3]
    assert shipped.subset() == shipped
    with pytest.raises(CatalogueError, match="close names"):
        shipped.subset(names=["wizzard"])


def test_to_dict_round_trip(shipped: Catalogue) -> None:
    data = json.loads(json.dumps(shipped.to_dict()))
    assert Catalogue.from_dict(data) == shipped
    broken = {**data, "personas": [{**data["personas"][0], "category": "x"}]}
    with pytest.raises(CatalogueError, match=r"personas\[0\] \(name='assistant'\): field 'cat"):
        Catalogue.from_dict(broken)


# ---------------------------------------------------------------- assistant-axis importer

needs_assistant_axis = pytest.mark.skipif(
    not ASSISTANT_AXIS.is_dir(), reason="assistant-axis benchmark data not present"
)


@needs_assistant_axis
def test_import_assistant_axis_roles() -> None:
    catalogue = import_assistant_axis(ASSISTANT_AXIS)
    assert len(catalogue.personas) == 276
    assert catalogue.default_persona.name == "default"
    assert catalogue.personas[0].category == "default"
    assert {p.category for p in catalogue.personas[1:]} == {"imported"}
    assert all(len(p.prompts) == 5 for p in catalogue.personas)
    assert len(catalogue.questions) == 240
    assert len(catalogue.split("heldout")) == 60
    assert [q.split for q in catalogue.questions[:4]] == ["train", "train", "train", "heldout"]
    assert catalogue.questions[0].id == "q000"
    for root in (ASSISTANT_AXIS / "data" / "roles", ASSISTANT_AXIS / "data/roles/instructions"):
        assert import_assistant_axis(root) == catalogue


@needs_assistant_axis
def test_import_assistant_axis_selection_and_traits() -> None:
    subset = import_assistant_axis(ASSISTANT_AXIS, roles=["pirate", "absurdist"])
    assert subset.names == ("default", "absurdist", "pirate")
    assert len(import_assistant_axis(ASSISTANT_AXIS, max_roles=4).personas) == 4
    with pytest.raises(CatalogueError, match=r"instructions: roles \(name='pirat'\).*pirate"):
        import_assistant_axis(ASSISTANT_AXIS, roles=["pirat"])
    traits = import_assistant_axis(ASSISTANT_AXIS / "data" / "traits", max_roles=3)
    first = json.loads((ASSISTANT_AXIS / "data/traits/instructions/absolutist.json").read_text())
    assert traits.personas[0].prompts == tuple(item["pos"] for item in first["instruction"])
    assert len(traits.questions) == 240


def test_import_assistant_axis_errors(tmp_path: Path) -> None:
    instructions = tmp_path / "data" / "roles" / "instructions"
    instructions.mkdir(parents=True)
    (instructions / "default.json").write_text(json.dumps({"instruction": [{"pos": ""}]}))
    role = {"instruction": [{"pos": "You are a bard."}, {"neg": "x"}], "questions": ["Hi?"]}
    (instructions / "bard.json").write_text(json.dumps(role))
    with pytest.raises(CatalogueError, match=r"bard\.json: instruction\[1\]: field 'pos'"):
        import_assistant_axis(tmp_path)
    role["instruction"] = [{"pos": "You are a bard."}]
    role["questions"] = ["Hi?", "Why?", "How?", "What?", "When?"]
    (instructions / "bard.json").write_text(json.dumps(role))
    catalogue = import_assistant_axis(tmp_path)
    assert catalogue.names == ("default", "bard")
    assert [q.split for q in catalogue.questions] == ["train"] * 3 + ["heldout", "train"]
    (instructions / "bard.json").write_text('{"instruction": [\n}')
    with pytest.raises(CatalogueError, match=r"bard\.json: line 2: not valid JSON"):
        import_assistant_axis(tmp_path)
    with pytest.raises(CatalogueError, match=r"top level: no 'instructions/\*\.json'"):
        import_assistant_axis(tmp_path / "data")


def test_load_catalogue_reads_an_assistant_axis_folder(tmp_path: Path) -> None:
    instructions = tmp_path / "instructions"
    instructions.mkdir()
    (instructions / "default.json").write_text(json.dumps({"instruction": [{"pos": ""}]}))
    role = {"instruction": [{"pos": "You are a bard."}], "questions": ["Hi?", "Why?", "How?"]}
    (instructions / "bard.json").write_text(json.dumps(role))
    assert load_catalogue(tmp_path) == import_assistant_axis(tmp_path)
    with pytest.raises(CatalogueError, match="brings its own questions"):
        load_catalogue(tmp_path, tmp_path / "questions.yaml")
    (instructions / "bard.json").write_text(json.dumps({"instruction": [{"neg": "x"}]}))
    with pytest.raises(CatalogueError, match=r"bard\.json: instruction\[0\]: field 'pos'"):
        load_catalogue(tmp_path)
