"""A tiny random Llama chat model and byte-level BPE tokenizer, built in code (no files)."""

from __future__ import annotations

import numpy as np
import torch

from feature_store.schema import ROLE_CODE
from feature_store.transcripts import Transcript

CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny test model.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
ZEPHYR = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + "
    "'</s>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
TEXT = [
    "Hello there, how are you today? I am fine, thank you for asking.",
    "Arr, matey! The sea be rough and the rum be gone.",
    "You are a helpful assistant. Answer the question briefly and kindly.",
    "What is the capital of France? Paris is the capital of France.",
    "Tell me a joke about a robot who wanted to be a pirate.",
] * 4


def tiny_tokenizer(template: str = CHATML):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "</s>"]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(TEXT, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    fast.chat_template = template
    return fast


def tiny_model(vocab_size: int, seed: int = 0, n_layers: int = 4):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    return LlamaForCausalLM(config).eval()


def tiny_handle(template: str = CHATML, seed: int = 0):
    from sae_atlas.model import handle_from_hf

    tokenizer = tiny_tokenizer(template)
    return handle_from_hf(tiny_model(len(tokenizer), seed), tokenizer, "tiny-llama")


def random_transcripts(n: int, seed: int = 0, vocab: int = 300) -> list[Transcript]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        length = int(rng.integers(4, 60))
        roles = np.full(length, ROLE_CODE["assistant"], dtype=np.uint8)
        roles[: length // 3] = ROLE_CODE["user"]
        out.append(
            Transcript(
                rng.integers(5, vocab, size=length).astype(np.int32),
                roles,
                persona=f"p{i % 3}",
                condition="persona",
                variant=i % 5,
                question_id=f"q{i:03d}",
                split="train" if i % 4 else "heldout",
                seed=i,
            )
        )
    return out
