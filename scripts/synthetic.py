"""Random chat models and synthetic chat corpora built in code, for benchmarks and device checks.

`random_chat_model(...)` is a randomly initialised Llama of any size (built on the target device,
so a 1B model needs no CPU initialisation) with a word-level tokenizer of the same vocabulary and
a ChatML template, wrapped as a ModelHandle. `synthetic_corpus(path, ...)` writes a transcripts.h5
of chat-shaped transcripts (template, system, user, assistant header, assistant response) over
`personas` personas (the first one is the default persona), half the questions held out. Nothing
is downloaded; the same seed gives the same model and corpus.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from feature_store.schema import ROLE_CODE
from feature_store.transcripts import Transcript, TranscriptWriter
from sae_atlas.model.dtype import resolve_dtype
from sae_atlas.models import ModelHandle, handle_from_hf

CHATML = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + ' ' + message['content'] + ' <|im_end|> '}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant ' }}{% endif %}"
)
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
SEGMENTS = (("template", 2), ("system", 12), ("template", 3), ("user", 24), ("template", 3))
"""The chat shape before the response: (role, tokens) runs; the last run is the assistant header."""


def word_tokenizer(vocab_size: int):
    """A fast word-level tokenizer of vocab_size tokens (specials, then t3, t4, ...) with ChatML."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIALS)}
    vocab |= {f"t{i}": i for i in range(len(SPECIALS), vocab_size)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=SPECIALS[0]))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    fast.chat_template = CHATML
    return fast


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
    """A randomly initialised Llama chat model as a ModelHandle (model id random-llama-...), in
    `dtype` ("auto": resolve_dtype on `device`)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    )
    choice = resolve_dtype(dtype, device)
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(choice.torch_dtype).eval()
    model_id = f"random-llama-{hidden}x{layers}-v{vocab}"
    return handle_from_hf(model, word_tokenizer(vocab), model_id, dtype_choice=choice)


def synthetic_corpus(
    path: str | Path,
    model_id: str,
    *,
    n_tokens: int,
    vocab: int,
    personas: int = 8,
    response_tokens: tuple[int, int] = (64, 320),
    seed: int = 0,
) -> int:
    """Write transcripts.h5 at `path` with about n_tokens tokens of random ids in [3, vocab);
    returns the number of transcripts. Transcript i plays persona i % personas (persona 0 under
    the condition default), on question i // personas, held out when that is odd."""
    rng = np.random.default_rng(seed)
    prefix_roles = np.concatenate([np.full(n, ROLE_CODE[r], np.uint8) for r, n in SEGMENTS])
    writer = TranscriptWriter.open(
        path, model=model_id, config={"synthetic": n_tokens, "vocab": vocab, "seed": seed}
    )
    batch: list[Transcript] = []
    total = index = 0
    while total < n_tokens:
        answer = int(rng.integers(*response_tokens))
        roles = np.concatenate([prefix_roles, np.full(answer, ROLE_CODE["assistant"], np.uint8)])
        question = index // personas
        batch.append(
            Transcript(
                token_ids=rng.integers(len(SPECIALS), vocab, size=len(roles)).astype(np.int32),
                roles=roles,
                persona=f"persona{index % personas}",
                condition="default" if index % personas == 0 else "persona",
                variant=0,
                question_id=f"q{question}",
                split="heldout" if question % 2 else "train",
                seed=index,
            )
        )
        total += len(roles)
        index += 1
        if len(batch) == 256:
            writer.append(batch)
            batch = []
    writer.append(batch)
    writer.finish()
    return index
