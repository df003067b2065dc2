"""Tiny random models and synthetic data, built in code, for tests and benchmarks.

models (random Llamas of any size, a tiny byte-level and a word-level tokenizer, handles),
transcripts (random transcripts, a synthetic chat corpus, a random activation store) and atlas
(a synthetic atlas, labels with planted structure); `sae_atlas.testing.experiments` (imported
alone: it reads the experiments' descriptions) draws synthetic experiments/ for an atlas.
Nothing is downloaded.
"""

from __future__ import annotations

from sae_atlas.testing.atlas import planted_labels, synthetic_atlas, write_atlas
from sae_atlas.testing.models import (
    CHATML,
    TEXT,
    WORD_CHATML,
    WORD_SPECIALS,
    ZEPHYR,
    random_chat_model,
    random_llama,
    tiny_handle,
    tiny_tokenizer,
    word_tokenizer,
)
from sae_atlas.testing.transcripts import (
    SEGMENTS,
    random_activation_store,
    random_transcripts,
    synthetic_corpus,
)

__all__ = [
    "CHATML",
    "SEGMENTS",
    "TEXT",
    "WORD_CHATML",
    "WORD_SPECIALS",
    "ZEPHYR",
    "planted_labels",
    "random_activation_store",
    "random_chat_model",
    "random_llama",
    "random_transcripts",
    "synthetic_atlas",
    "synthetic_corpus",
    "tiny_handle",
    "tiny_tokenizer",
    "word_tokenizer",
    "write_atlas",
]
