"""Multi-turn conversations on the real default model."""

from __future__ import annotations

import pytest

from sae_atlas.config import CorpusConfig
from sae_atlas.model import converse

pytestmark = pytest.mark.integration


def test_converse_with_the_model_as_user(smollm):
    # float32: dtype auto samples in bfloat16 on some CPUs only, and the test must not depend
    # on the CPU kind
    config = CorpusConfig(max_new_tokens=16, dtype="float32")
    heads = [[], [{"role": "system", "content": "You are a pirate."}]]
    chats = converse(smollm, heads, [["How do I boil an egg?"]] * 2, [1, 1], 3, config, True)
    for head, chat in zip(heads, chats, strict=True):
        turns = chat[len(head) :]
        assert [m["role"] for m in turns] == ["user", "assistant"] * 3
        assert all(m["content"].strip() for m in turns)
        written = [m["content"] for m in turns[2::2]]  # the user turns the model wrote
        replies = [m["content"] for m in turns[1::2]]
        assert not set(written) & set(replies)  # a user turn is not a copy of a reply
