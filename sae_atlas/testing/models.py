"""Tiny random chat models, built in code, for tests and benchmarks.

`random_llama` is the one random-model builder: a randomly initialised Llama of any size, built
on the target device (a 1B model needs no CPU initialisation); the same seed gives the same
weights. Two tokenizers go with it: `tiny_tokenizer`, a byte-level BPE of 400 tokens trained on a
few sentences (real text round-trips, for chat-formatting tests), and `word_tokenizer`, a
word-level vocabulary of any size (random ids as text, for benchmarks). `tiny_handle` and
`random_chat_model` wrap them as ModelHandles. Nothing is downloaded; building the tiny model
takes well under a second.
"""

from __future__ import annotations

from typing import Any

import torch

from sae_atlas.model import ModelHandle, handle_from_hf
from sae_atlas.model.dtype import resolve_dtype

CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny test model.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
"""ChatML with a default system prompt (the tiny model's template)."""
ZEPHYR = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + "
    "'</s>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
WORD_CHATML = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + ' ' + message['content'] + ' <|im_end|> '}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant ' }}{% endif %}"
)
"""ChatML with words separated by spaces, for the word-level tokenizer."""
TEXT = [
    "Hello there, how are you today? I am fine, thank you for asking.",
    "Arr, matey! The sea be rough and the rum be gone.",
    "You are a helpful assistant. Answer the question briefly and kindly.",
    "What is the capital of France? Paris is the capital of France.",
    "Tell me a joke about a robot who wanted to be a pirate.",
] * 4
"""What the tiny tokenizer is trained on."""
WORD_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def random_llama(
    vocab: int,
    *,
    hidden: int = 32,
    layers: int = 4,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int = 64,
    max_positions: int = 256,
    device: str = "cpu",
    dtype: str = "float32",
    seed: int = 0,
) -> Any:
    """A randomly initialised LlamaForCausalLM (untied embeddings) on `device` in `dtype`
    ("auto": resolve_dtype on `device`)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    with torch.device(device):
        model: Any = LlamaForCausalLM(config)
        return model.to(resolve_dtype(dtype, device).torch_dtype).eval()


def tiny_tokenizer(template: str = CHATML) -> Any:
    """A fast byte-level BPE tokenizer of 400 tokens trained on TEXT, with `template`."""
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


def word_tokenizer(vocab_size: int) -> Any:
    """A fast word-level tokenizer of vocab_size tokens (specials, then t3, t4, ...) with
    WORD_CHATML."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(WORD_SPECIALS)}
    vocab |= {f"t{i}": i for i in range(len(WORD_SPECIALS), vocab_size)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=WORD_SPECIALS[0]))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    fast.chat_template = WORD_CHATML
    return fast


def tiny_handle(template: str = CHATML, seed: int = 0) -> ModelHandle:
    """The tiny test model (4 layers, d_model 32) with the tiny tokenizer: model id tiny-llama."""
    tokenizer = tiny_tokenizer(template)
    return handle_from_hf(random_llama(len(tokenizer), seed=seed), tokenizer, "tiny-llama")


def random_chat_model(
    *,
    hidden: int,
    layers: int,
    heads: int,
    kv_heads: int,
    intermediate: int,
    vocab: int,
    device: str = "cpu",
    dtype: str = "float32",
    seed: int = 0,
) -> ModelHandle:
    """A random Llama of any size with the word tokenizer (model id random-llama-...)."""
    model = random_llama(
        vocab,
        hidden=hidden,
        layers=layers,
        heads=heads,
        kv_heads=kv_heads,
        intermediate=intermediate,
        max_positions=4096,
        device=device,
        dtype=dtype,
        seed=seed,
    )
    model_id = f"random-llama-{hidden}x{layers}-v{vocab}"
    choice = resolve_dtype(dtype, device)
    return handle_from_hf(model, word_tokenizer(vocab), model_id, dtype_choice=choice)
