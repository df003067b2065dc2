from __future__ import annotations

import pytest
import torch

from sae_atlas.errors import SaeAtlasError
from sae_atlas.model.loading import adapter_sha1, load_model
from sae_atlas.testing import random_llama, tiny_tokenizer


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
    random_llama(len(tokenizer)).save_pretrained(base)
    tokenizer.save_pretrained(base)
    lora = LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    torch.manual_seed(1)
    peft_model = get_peft_model(random_llama(len(tokenizer)), lora)
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
    random_llama(len(tokenizer)).save_pretrained(base)
    tokenizer.save_pretrained(base)
    with pytest.raises(SaeAtlasError, match="no such adapter folder"):
        load_model(str(base), adapter=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SaeAtlasError, match=r"no adapter_config\.json"):
        load_model(str(base), adapter=tmp_path / "empty")
    (tmp_path / "empty" / "adapter_config.json").write_text("{}")
    with pytest.raises(SaeAtlasError, match=r"holds none of adapter_model\.safetensors"):
        load_model(str(base), adapter=tmp_path / "empty")
