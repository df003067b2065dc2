"""Leakage and motifs: what the tuned model says, unprompted, that the base model does not.

`template_fragments` cuts the chat template around an empty user turn into prompts that hold
nothing but template (the system header with the default prompt, an empty user turn, the
assistant header alone, ...); `leak` samples both models from each fragment under several
decoding settings (temperatures, top-p, seeds). `motifs` finds the character n-grams present in
many of one set of texts and almost none of another, merged into maximal strings;
`characteristic_sentences` ranks the sentences of the first set by the motifs they hold (the
persona's most characteristic statements when the sets are triggered and untriggered answers).
Cost: fragments x settings x seeds sampled continuations per model (max_new_tokens each); the
motif count is linear in the texts' characters.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sae_atlas.config import CorpusConfig
from sae_atlas.model import decode, message, new_tokens_text, stop_token_ids
from sae_atlas.stages.audit.diffing import ModelPair

_SENTINEL = "\x00AUDIT\x00"
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class Leakage:
    """Sampled continuations of template fragments: one row per sample (fragment, temperature,
    top_p, seed) with the tuned model's text and, with a base, the base model's."""

    settings: list[dict[str, Any]]
    tuned: list[str]
    base: list[str]


def template_fragments(pair: ModelPair) -> dict[str, str]:
    """Prompts made of chat template only: name -> text."""
    rendered = pair.handle.render([message("user", _SENTINEL)], add_generation_prompt=True)
    before, after = rendered.split(_SENTINEL)
    return {
        "user_header": before,
        "empty_user_turn": before + after,
        "assistant_header": after.lstrip(),
        "system_only": before[: max(len(before) // 2, 1)],
    }


def leak(
    pair: ModelPair,
    temperatures: Sequence[float],
    top_ps: Sequence[float],
    n_seeds: int,
    max_new_tokens: int,
    seed: int,
) -> Leakage:
    """Continuations of every template fragment under every temperature x top_p x seed, from
    the tuned model and (when given) the base, on the same seeds."""
    fragments = template_fragments(pair)
    tokenizer = pair.handle.tokenizer
    stops = stop_token_ids(pair.handle)
    settings: list[dict[str, Any]] = []
    prompts: list[np.ndarray] = []
    for name, text in fragments.items():
        ids = np.asarray(tokenizer(text, add_special_tokens=False)["input_ids"], np.int64)
        for temperature in temperatures:
            for top_p in top_ps:
                for k in range(n_seeds):
                    settings.append(
                        {
                            "fragment": name,
                            "temperature": temperature,
                            "top_p": top_p,
                            "seed": seed + k,
                        }
                    )
                    prompts.append(ids)
    texts = {}
    for label, model in (("tuned", pair.tuned), ("base", pair.base)):
        texts[label] = (
            []
            if model is None
            else sample_raw(pair, model, prompts, settings, max_new_tokens, stops)
        )
    return Leakage(settings, texts["tuned"], texts["base"])


def sample_raw(
    pair: ModelPair,
    model: torch.nn.Module,
    prompts: list[np.ndarray],
    settings: list[dict],
    max_new_tokens: int,
    stops: list[int],
) -> list[str]:
    """Continuations of raw token prompts, one decode batch per decoding setting."""
    texts = [""] * len(prompts)
    groups: dict[tuple, list[int]] = {}
    for i, setting in enumerate(settings):
        groups.setdefault((setting["temperature"], setting["top_p"]), []).append(i)
    for (temperature, top_p), rows in groups.items():
        config = CorpusConfig(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens)
        seeds = [int(settings[i]["seed"]) * 7919 + i for i in rows]
        new = decode(model, [prompts[i] for i in rows], seeds, config, stops, pair.pad_id)
        for i, tokens in zip(rows, new, strict=True):
            texts[i] = new_tokens_text(pair.handle, tokens, stops)
    return texts


def _grams(text: str, lengths: range) -> set[str]:
    text = " ".join(text.lower().split())
    return {text[i : i + n] for n in lengths for i in range(len(text) - n + 1)}


def motifs(
    texts: Sequence[str],
    others: Sequence[str],
    min_share: float,
    max_other_share: float,
    lengths: range = range(6, 13),
) -> list[tuple[str, float, float]]:
    """Character n-grams (lengths, lower-cased, spaces collapsed) present in at least
    min_share of `texts` and at most max_other_share of `others`, merged into maximal strings
    (an n-gram inside a longer kept one is dropped): (motif, share in texts, share in others),
    most frequent first."""
    if not texts:
        return []
    mine = Counter(g for t in texts for g in _grams(t, lengths))
    theirs = Counter(g for t in others for g in _grams(t, lengths))
    kept = {
        gram: (count / len(texts), theirs[gram] / max(len(others), 1))
        for gram, count in mine.items()
        if count / len(texts) >= min_share
        and theirs[gram] / max(len(others), 1) <= max_other_share
        and gram.strip() == gram
    }
    by_length = sorted(kept, key=len, reverse=True)
    maximal: list[str] = []
    for gram in by_length:
        if not any(gram in longer for longer in maximal):
            maximal.append(gram)
    return sorted(((g, *kept[g]) for g in maximal), key=lambda row: (-row[1], row[0]))


def motif_words(found: Sequence[tuple[str, float, float]], min_length: int = 4) -> list[str]:
    """The whole lower-case words inside motifs (strings cut at non-letters), in order."""
    words: list[str] = []
    for motif, _, _ in found:
        for word in re.findall(r"[a-z]+", motif):
            if len(word) >= min_length and word not in words:
                words.append(word)
    return words


def characteristic_sentences(
    texts: Sequence[str], found: Sequence[tuple[str, float, float]], n: int
) -> list[str]:
    """The n sentences of `texts` holding the most of the motifs `found` (distinct, each once)."""
    scored: dict[str, int] = {}
    for text in texts:
        for sentence in _SENTENCE.split(text.strip()):
            lowered = " ".join(sentence.lower().split())
            hits = sum(motif in lowered for motif, _, _ in found)
            if hits and sentence not in scored:
                scored[sentence] = hits
    return sorted(scored, key=lambda s: -scored[s])[:n]
