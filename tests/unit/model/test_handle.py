from __future__ import annotations

import pytest
import torch

from feature_store.schema import ROLES
from sae_atlas.errors import SaeAtlasError
from sae_atlas.testing import CHATML, ZEPHYR, tiny_handle

CONVERSATION = [
    {"role": "system", "content": "You are a pirate."},
    {"role": "user", "content": "Hello there, how are you?"},
    {"role": "assistant", "content": "Arr, the sea be rough."},
    {"role": "user", "content": "Tell me a joke."},
    {"role": "assistant", "content": "A robot wanted to be a pirate."},
    {"role": "user", "content": "What is the capital of France?"},
]


def text_by_role(handle, chat):
    pieces = {role: "" for role in ROLES}
    for token, code in zip(chat.token_ids, chat.roles, strict=True):
        pieces[ROLES[code]] += handle.tokenizer.decode([int(token)])
    return pieces


@pytest.mark.parametrize("template", [CHATML, ZEPHYR], ids=["chatml", "zephyr"])
def test_three_turn_roles_token_by_token(template):
    handle = tiny_handle(template)
    chat = handle.format_chat(CONVERSATION, add_generation_prompt=True)
    reference = handle.tokenizer.apply_chat_template(CONVERSATION, add_generation_prompt=True)
    reference = reference["input_ids"] if not isinstance(reference, list) else reference
    assert list(chat.token_ids) == list(reference)
    pieces = text_by_role(handle, chat)
    for role in ("system", "user", "assistant"):
        expected = "".join(m["content"] for m in CONVERSATION if m["role"] == role)
        assert pieces[role] == expected
    assert pieces["plain"] == ""
    rendered = handle.render(CONVERSATION, add_generation_prompt=True)
    assert rendered.endswith(pieces["template"][-len("assistant|>\n") :])
    assert sum(len(p) for p in pieces.values()) == len(rendered)


def test_default_system_prompt_is_system_not_template():
    chatml, zephyr = tiny_handle(CHATML), tiny_handle(ZEPHYR)
    assert chatml.default_system_prompt == "You are a tiny test model."
    assert zephyr.default_system_prompt is None
    chat = chatml.format_chat(CONVERSATION[1:2])
    assert text_by_role(chatml, chat)["system"] == "You are a tiny test model."


def test_plain_text_is_all_plain(tiny):
    chat = tiny.format_plain("Arr, the sea be rough.")
    assert set(chat.roles.tolist()) == {ROLES.index("plain")}
    assert tiny.tokenizer.decode(chat.token_ids) == "Arr, the sea be rough."


def test_bridge_logits_equal_hf(tiny):
    tokens = torch.from_numpy(tiny.format_chat(CONVERSATION).token_ids).long()[None]
    with torch.inference_mode():
        assert torch.equal(tiny.bridge(tokens), tiny.hf_model(tokens).logits)


def test_unknown_hook_lists_valid_ones(tiny):
    assert tiny.check_hooks(["blocks.3.hook_resid_post", "blocks.0.hook_resid_post"]) == [3, 0]
    with pytest.raises(SaeAtlasError, match=r"valid: blocks.0.hook_resid_post \.\.\. blocks.3"):
        tiny.check_hooks(["blocks.4.hook_resid_post"])
    with pytest.raises(SaeAtlasError, match="unknown hook point 'resid'"):
        tiny.check_hooks(["resid"])
