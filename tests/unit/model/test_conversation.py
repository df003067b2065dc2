from __future__ import annotations

import numpy as np
import pytest

from sae_atlas.config import CorpusConfig
from sae_atlas.errors import SaeAtlasError
from sae_atlas.model.conversation import converse
from sae_atlas.model.sampling import sampling_model
from sae_atlas.model.steering import add_direction

CONFIG = CorpusConfig(max_new_tokens=6, batch_size=8, dtype="float32")
PIRATE = [{"role": "system", "content": "You are a pirate."}]


@pytest.fixture(scope="module")
def model(tiny):
    return sampling_model(tiny, "float32")


def test_user_turns_given_and_written_by_the_model(tiny, model):
    chats = converse(tiny, [PIRATE], [["Hello?", "Why?"]], [0], 2, CONFIG, model=model)
    assert len(chats) == 1
    assert [m["role"] for m in chats[0]] == ["system", "user", "assistant", "user", "assistant"]
    assert chats[0][3]["content"] == "Why?"

    def played():
        return converse(tiny, [[]] * 3, [["Hi."]] * 3, [1, 2, 3], 3, CONFIG, True, model=model)

    first = played()
    assert len(first) == 3 and all(len(chat) == 6 for chat in first)
    assert first == played()
    with pytest.raises(SaeAtlasError, match="user turns"):
        converse(tiny, [[]], [["Hi."]], [0], 2, CONFIG, model=model)


def test_steers_only_the_kicked_turn_and_pairs_seeds(tiny):
    config = CorpusConfig(temperature=0.0, max_new_tokens=6, batch_size=64, dtype="bfloat16")
    kick = (add_direction("blocks.1.hook_resid_post", np.ones(tiny.d_model), 50.0),)
    heads = [[], []]
    turns = [["Hello there", "What is the capital of France?"]] * 2
    chats = converse(tiny, heads, turns, [1, 1], 2, config, steering=[(), kick])
    plain = converse(tiny, heads[:1], turns[:1], [1], 2, config)
    assert chats[0] == plain[0]  # same seed, no kick: the same conversation
    assert chats[1][1]["content"] != chats[0][1]["content"]  # the kick changes turn 0
    with pytest.raises(SaeAtlasError, match="user turns"):
        converse(tiny, heads, [["Hi"]] * 2, [1, 1], 2, config)
    written = converse(tiny, heads, [["Hi"]] * 2, [1, 1], 2, config, True)
    assert [m["role"] for m in written[0]] == ["user", "assistant"] * 2


def test_system_prompt_given_once_and_per_conversation_user_instructions(tiny, model):
    heads, turns = [PIRATE, PIRATE], [["Hello?", "Why?"]] * 2
    kept = converse(tiny, heads, turns, [3, 3], 2, CONFIG, model=model)
    once = converse(tiny, heads, turns, [3, 3], 2, CONFIG, model=model, system_once=[1])
    assert once[0] == kept[0]  # untouched
    assert once[1][0] == {"role": "system", "content": ""}  # dropped after the first turn
    assert once[1][2] == kept[1][2]  # the first reply was sampled with the prompt, same seed
    written = converse(
        tiny,
        [[], []],
        [["Hi."], ["Hi."]],
        [4, 4],
        2,
        CONFIG,
        True,
        model=model,
        user_instruction=["Talk like a pirate.", "Talk like a robot."],
    )
    assert written[0][1] == written[1][1]  # same opener, same seed, same first reply
    assert written[0][2]["role"] == "user"
    assert written[0][2] != written[1][2]  # the writers were told different things
