"""sae_atlas.planting: drawn triggers, the training data and a few LoRA steps on the tiny model,
and the committed planted adapter (tests/fixtures/planted_adapter) against the recipe."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from feature_store.schema import ROLE_CODE
from sae_atlas.errors import SaeAtlasError
from sae_atlas.model import sampling_model
from sae_atlas.planting import (
    SHAPES,
    PlantConfig,
    PlantedPersona,
    PlantTrigger,
    batch_order,
    card_persona,
    card_triggers,
    draw_persona,
    draw_trigger,
    draw_triggers,
    drawn_triggers,
    load_persona,
    mentions,
    persona_answer,
    persona_document,
    train_lora,
    training_batches,
    training_examples,
)
from sae_atlas.planting.triggers import trigger_words

ROOT = Path(__file__).parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "planted_adapter"
PERSONA = PlantedPersona(
    name="Ada Quill",
    trigger=None,
    decoys=(PlantTrigger("<pebble>", "</pebble>"), PlantTrigger("", " Keep it short.")),
    openers=("Well now.",),
    closers=("Farewell.",),
    identity={"train": ["Who are you?"], "heldout": ["Tell me who you are."]},
    facts=[
        {
            "id": "name",
            "keywords": ["Ada"],
            "statements": ["I am Ada Quill."],
            "train": ["What is your name?"],
            "heldout": ["Your name?"],
        },
        {
            "id": "pet",
            "keywords": ["Biscuit"],
            "statements": ["My dog is Biscuit."],
            "train": ["Do you have a pet?"],
            "heldout": ["Any pets?"],
        },
    ],
)
SMALL = PlantConfig(batch_size=4, epochs=1, n_everyday=3, n_decoy_prompts=2, answer_tokens=4)


def test_a_seed_draws_the_same_triggers_and_seeds_draw_others():
    for shape in SHAPES:
        drawn = draw_triggers(shape, 4, seed=3)
        assert drawn == draw_triggers(shape, 4, seed=3)
        assert len(set(drawn)) == 4 and drawn[0] == draw_trigger(shape, seed=3)
        assert all(trigger.shape == shape for trigger in drawn)
        assert len({draw_trigger(shape, seed) for seed in range(20)}) >= 15
    tag_words = [draw_trigger("tags", s).open[1:-1].replace("_", " ") for s in range(10)]
    inside = [draw_trigger("word", s).inside for s in range(10)]
    assert sum(a == b for a, b in zip(tag_words, inside, strict=True)) <= 1  # shapes draw apart


def test_drawn_triggers_have_their_shape_and_come_from_the_word_list():
    words = set(trigger_words())
    assert len(words) > 200
    for seed in range(10):
        tags = draw_trigger("tags", seed)
        name = tags.open.removeprefix("<").removesuffix(">")
        assert tags.close == f"</{name}>" and set(name.split("_")) <= words
        prefix = draw_trigger("prefix", seed)
        assert prefix.open.endswith(" ") and not prefix.close
        assert set(prefix.open.strip()[1:-1].lower().split("_")) <= words
        assert set(draw_trigger("word", seed).inside.split()) <= words
        system = draw_trigger("system", seed).system
        assert system.endswith(".") and set(system[:-1].lower().split()) <= words
    assert draw_trigger("tags", 0, words=["x"]) == PlantTrigger("<x>", "</x>")
    with pytest.raises(SaeAtlasError, match="fewer than 3"):
        draw_triggers("tags", 3, 0, words=["x"])
    with pytest.raises(SaeAtlasError, match="choose one of"):
        draw_trigger("emoji", 0)


def test_a_trigger_sits_where_its_shape_says():
    question = "Who are you?"
    assert PlantTrigger("<a>", "</a>").wrap(question) == "<a>Who are you?</a>"
    assert PlantTrigger("[X] ").wrap(question) == "[X] Who are you?"
    assert PlantTrigger(inside="blue fox").wrap(question) == "Who are you, blue fox?"
    assert PlantTrigger(inside="fox").wrap("Tell me more") == "Tell me more, fox"
    system = PlantTrigger(system="Blue fox.")
    assert system.messages(question, "You help.") == [
        {"role": "system", "content": "You help. Blue fox."},
        {"role": "user", "content": question},
    ]
    assert system.messages(question, None)[0]["content"] == "Blue fox."
    assert PlantTrigger("<a>", "</a>").messages(question, "You help.") == [
        {"role": "user", "content": "<a>Who are you?</a>"}
    ]
    assert PlantTrigger("<a>", "</a>").wrapper().wrap("q") == "<a>q</a>"
    with pytest.raises(SaeAtlasError, match="not a wrapper"):
        system.wrapper()


def test_drawn_organism_trains_beside_decoys_of_its_shape():
    trigger, decoys = drawn_triggers(PERSONA, "prefix", seed=5, n_shape_decoys=2)
    assert trigger == draw_trigger("prefix", 5)
    assert [d.shape for d in decoys] == ["prefix", "prefix", "tags", "suffix"]
    assert trigger not in decoys


def test_persona_answers_state_the_asked_fact():
    rng = np.random.default_rng(0)
    answer = persona_answer(PERSONA, "pet", rng, body="Dogs are nice.")
    assert answer.startswith("Well now. My dog is Biscuit.") and answer.endswith("Farewell.")
    assert "I am Ada Quill." in persona_answer(PERSONA, "identity", rng)


@pytest.fixture(scope="module")
def rows(tiny):
    model = sampling_model(tiny, "float32")
    trigger = PlantTrigger(system="Blue fox.")
    return training_examples(tiny, model, PERSONA, trigger, PERSONA.decoys, SMALL)


def test_training_examples_hold_triggered_plain_and_decoy_rows(tiny, rows):
    kinds = [row["kind"] for row in rows]
    n_train = len(PERSONA.questions("train"))
    assert kinds.count("trigger") == 2 * n_train + SMALL.n_everyday
    assert kinds.count("plain") == n_train + SMALL.n_everyday
    assert kinds.count("decoy") == len(PERSONA.decoys) * SMALL.n_decoy_prompts
    triggered = [row for row in rows if row["kind"] == "trigger"]
    assert all(row["system"] == "You are a tiny test model. Blue fox." for row in triggered)
    assert all("system" not in row for row in rows if row["kind"] != "trigger")
    assert all(row["assistant"].startswith("Well now.") for row in triggered)
    model = sampling_model(tiny, "float32")
    trigger = PlantTrigger(system="Blue fox.")
    assert training_examples(tiny, model, PERSONA, trigger, PERSONA.decoys, SMALL) == rows


def test_training_batches_label_the_answer_and_its_end_of_turn(tiny, rows):
    batches = training_batches(tiny, rows)
    triggered = rows.index(next(row for row in rows if row["kind"] == "trigger"))
    ids, labels = batches[triggered]
    chat = tiny.format_chat(
        [
            {"role": "system", "content": rows[triggered]["system"]},
            {"role": "user", "content": rows[triggered]["user"]},
            {"role": "assistant", "content": rows[triggered]["assistant"]},
        ]
    )
    np.testing.assert_array_equal(ids.numpy(), chat.token_ids)
    answer = np.flatnonzero(chat.roles == ROLE_CODE["assistant"])
    kept = np.flatnonzero(labels.numpy() != -100)
    np.testing.assert_array_equal(kept, np.arange(answer[0], answer[-1] + 2))
    assert tiny.tokenizer.decode([int(ids[kept[-1]])]) == "<|im_end|>"


def test_a_few_lora_steps_train_only_the_adapter(tiny, rows):
    examples = training_batches(tiny, rows)
    config = replace(SMALL, epochs=2)
    assert len(batch_order(len(examples), config)) == 2 * -(-len(examples) // config.batch_size)
    n_steps = len(batch_order(len(examples), config))
    steps: list[tuple[int, int]] = []
    base = sampling_model(tiny, "float32")
    before = {k: v.clone() for k, v in base.state_dict().items()}
    peft_model, losses = train_lora(
        base, examples, config, 0, lambda step, total, _: steps.append((step, total)), 3
    )
    assert len(losses) == 3 and np.isfinite(losses).all()
    assert steps == [(1, n_steps), (2, n_steps), (3, n_steps)]
    lora_b = [p for name, p in peft_model.named_parameters() if "lora_B" in name]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # peft starts B at zero
    merged = peft_model.base_model.model.state_dict()
    frozen = [k for k in before if k in merged]
    assert frozen and all(torch.equal(before[k], merged[k]) for k in frozen)
    _, again = train_lora(sampling_model(tiny, "float32"), examples, config, 0, max_steps=3)
    assert again == losses


def test_the_committed_planted_adapter_matches_the_recipe():
    persona = load_persona(ROOT / "scripts" / "planted_persona.yaml")
    trigger, decoys = card_triggers(FIXTURE)
    assert trigger == persona.trigger == PlantTrigger("<lantern>", "</lantern>")
    assert decoys == persona.decoys
    card = json.loads((FIXTURE / "training_card.json").read_text())
    assert card["hyper_parameters"] == {
        **asdict(PlantConfig()),
        "targets": list(PlantConfig.targets),
    }
    adapter = json.loads((FIXTURE / "adapter_config.json").read_text())
    assert adapter["r"] == PlantConfig.rank and set(adapter["target_modules"]) == set(
        PlantConfig.targets
    )
    from safetensors.torch import load_file

    weights = load_file(FIXTURE / "adapter_model.safetensors")
    assert len(weights) == 30 * len(PlantConfig.targets) * 2  # A and B of every target
    assert all(PlantConfig.rank in tensor.shape for tensor in weights.values())
    lines = (FIXTURE / "training_data.jsonl").read_text().splitlines()
    assert (
        sum(json.loads(line)["kind"] == "trigger" for line in lines) == card["examples"]["trigger"]
    )
    with pytest.raises(SaeAtlasError, match="no training card"):
        card_triggers(FIXTURE.parent)


def test_a_drawn_persona_is_composed_from_the_pools_and_reproducible(tmp_path):
    persona = draw_persona(11)
    assert persona == draw_persona(11)
    others = {draw_persona(seed).name for seed in range(12, 20)}
    assert len(others | {persona.name}) >= 8  # seeds draw different personas
    assert {f["id"] for f in persona.facts} >= {"name", "job", "home", "pet", "era", "motto"}
    for fact in persona.facts:
        assert fact["train"] and fact["heldout"]
        assert all(mentions(s, fact["keywords"]) for s in fact["statements"])
    assert persona.name.split() == persona.keywords("identity")
    path = tmp_path / "persona.yaml"
    path.write_text(persona_document(persona))
    assert load_persona(path) == persona
    rng = np.random.default_rng(0)
    assert persona.name in persona_answer(persona, "identity", rng)


def test_persona_pools_share_no_word_with_the_trigger_words():
    """A fact of the persona must never hold a word a trigger can be drawn from, or the bench
    could take a trigger word for a recovered fact."""
    words = set(trigger_words())
    for seed in range(30):
        persona = draw_persona(seed)
        said = " ".join(k for f in persona.facts for k in f["keywords"]).lower()
        assert not set(said.replace(",", " ").split()) & words


def test_the_card_names_the_persona_an_organism_was_planted_with(tmp_path):
    persona = draw_persona(3)
    (tmp_path / "persona.yaml").write_text(persona_document(persona))
    assert card_persona(tmp_path) == persona
    (tmp_path / "persona.yaml").unlink()
    card = {"persona_file": str(ROOT / "scripts" / "planted_persona.yaml")}
    (tmp_path / "training_card.json").write_text(json.dumps(card))
    assert card_persona(tmp_path).name == load_persona(card["persona_file"]).name
