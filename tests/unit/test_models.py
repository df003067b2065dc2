from __future__ import annotations

import pytest
import torch
from tiny import CHATML, ZEPHYR, tiny_handle, tiny_model, tiny_tokenizer

from feature_store.schema import ROLES
from sae_atlas.errors import SaeAtlasError
from sae_atlas.models import adapter_sha1, load_model

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


def test_bad_model_sources(tmp_path):
    with pytest.raises(SaeAtlasError, match="no such GGUF file"):
        load_model(str(tmp_path / "missing.gguf"))
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf file at all")
    with pytest.raises(SaeAtlasError, match="cannot load model"):
        load_model(str(broken))
    with pytest.raises(SaeAtlasError, match="not a model folder"):
        load_model(str(tmp_path / "nothing-here"))
    with pytest.raises(SaeAtlasError, match="--allow-download"):
        load_model("no-such-org/no-such-model-xyz")
    with pytest.raises(SaeAtlasError, match="unknown dtype"):
        load_model(dtype="float8")


def test_adapter_is_merged_exactly_and_named_in_the_model_id(tmp_path):
    from peft import LoraConfig, get_peft_model

    tokenizer = tiny_tokenizer()
    base = tmp_path / "base"
    tiny_model(len(tokenizer)).save_pretrained(base)
    tokenizer.save_pretrained(base)
    lora = LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    torch.manual_seed(1)
    peft_model = get_peft_model(tiny_model(len(tokenizer)), lora)
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    tokens = torch.tensor([[5, 17, 42, 99, 7]])
    with torch.inference_mode():
        expected = peft_model(tokens).logits
        plain = load_model(str(base))
        adapted = load_model(str(base), adapter=adapter)
        assert not torch.allclose(plain.bridge(tokens), expected, atol=1e-4)
        assert torch.allclose(adapted.bridge(tokens), expected, atol=1e-5)
        assert torch.allclose(adapted.hf_model(tokens).logits, expected, atol=1e-5)
    assert plain.model_id == "base"
    assert adapted.model_id == f"base+lora:adapter@{adapter_sha1(adapter)}"
    assert "lora" not in type(adapted.hf_model).__name__.lower()


def test_bad_adapters_are_one_line_errors(tmp_path):
    tokenizer = tiny_tokenizer()
    base = tmp_path / "base"
    tiny_model(len(tokenizer)).save_pretrained(base)
    tokenizer.save_pretrained(base)
    with pytest.raises(SaeAtlasError, match="no such adapter folder"):
        load_model(str(base), adapter=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SaeAtlasError, match=r"no adapter_config\.json"):
        load_model(str(base), adapter=tmp_path / "empty")
    (tmp_path / "empty" / "adapter_config.json").write_text("{}")
    with pytest.raises(SaeAtlasError, match=r"holds none of adapter_model\.safetensors"):
        load_model(str(base), adapter=tmp_path / "empty")
