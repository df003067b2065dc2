"""Growing the best candidate triggers: one more word, or the rest of a word.

A trigger of two words, or of one word the tokenizer cuts into pieces, is found a piece at a
time: the cheap scores put a candidate holding part of it near the top, and growing that
candidate reaches the whole. `extend_best` takes the best candidate of each shape (then the next
best overall), grows it by one word (`candidates.extended`: the shape's ranked words, appended
and prepended) and, inside the question, by the rest of its last word (`continuations`: the
word pieces the base model finds likeliest after it), scores what it grew and keeps a grown
candidate only when it scores above the one it grew from (a word that adds nothing is no part
of a trigger). Cost: (2 x ranked words + n_pieces) candidates per candidate grown, scored like
any candidate, and one forward pass per continued candidate.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from sae_atlas.planting.triggers import PlantTrigger
from sae_atlas.stages.audit import candidates as cand
from sae_atlas.stages.audit.diffing import ModelPair, last_states
from sae_atlas.stages.audit.scoring import candidate_divergence, score_table

_PIECE = re.compile(r"[a-z]{1,12}")
_SENTINEL = "\x00GROW\x00"


def ranked_words(
    words: Sequence[str], word_scores: dict, scanned: dict[str, list[str]], n_words: int
) -> dict[str, list[str]]:
    """Per shape, the words to grow a candidate by: the vocabulary scan's words of that shape
    first, then the n_words top words of the shape's read shift."""
    return {
        shape: list(
            dict.fromkeys([*scanned.get(shape, []), *cand.top_words(words, scores, n_words)])
        )
        for shape, scores in word_scores.items()
    }


def growth_picks(table: pd.DataFrame, n: int) -> list[int]:
    """Indices of the candidates to grow: the best real candidate (by z) of each shape, best
    first, then the next best overall; n in all."""
    real = table[~table["null"]]
    firsts = real.drop_duplicates("shape")["index"].tolist()
    rest = [i for i in real["index"] if i not in firsts]
    return [int(i) for i in (firsts + rest)[:n]]


def suffix_pieces(tokenizer: object) -> tuple[np.ndarray, tuple[str, ...]]:
    """Token ids [n] whose text is 1-12 lower-case letters with no leading space (the pieces
    that continue a word), and their texts. Costs a decode of every token (about a second)."""
    vocab = tokenizer.get_vocab()  # type: ignore[attr-defined]
    ids, texts = [], []
    for token_id in sorted(vocab.values()):
        text = tokenizer.decode([token_id])  # type: ignore[attr-defined]
        if _PIECE.fullmatch(text):
            ids.append(token_id)
            texts.append(text)
    return np.asarray(ids, dtype=np.int64), tuple(texts)


def continuations(
    pair: ModelPair,
    candidate: cand.Candidate,
    question: str,
    pieces: tuple[np.ndarray, tuple[str, ...]],
    n_pieces: int,
) -> list[cand.Candidate]:
    """A word-shape candidate with its last word continued by each of the n_pieces word pieces
    (`pieces`: `suffix_pieces`) the base model (the tuned one without a base) finds likeliest
    right after it inside `question`; other shapes: none."""
    if candidate.shape != "word" or not candidate.words:
        return []
    inside = candidate.trigger.inside
    marked = PlantTrigger(inside=inside + _SENTINEL)
    chat = marked.messages(question, pair.handle.default_system_prompt)
    text = pair.handle.render(chat, add_generation_prompt=False).split(_SENTINEL)[0]
    tokenizer = pair.handle.tokenizer
    ids = np.asarray(tokenizer(text, add_special_tokens=False)["input_ids"], np.int64)
    piece_ids, piece_texts = pieces
    model = pair.base if pair.base is not None else pair.tuned
    logprobs, _ = last_states(model, [ids], pair.pad_id)
    best = np.argsort(-logprobs[0, piece_ids].numpy(), kind="stable")[:n_pieces]
    out = []
    for i in best:
        grown = (*candidate.words[:-1], candidate.words[-1] + piece_texts[i])
        out.append(cand.Candidate(cand.in_shape("word", grown), grown, "continuation"))
    return out


def extend_best(
    pair: ModelPair,
    everyone: list[cand.Candidate],
    kl: np.ndarray,
    ranked: dict[str, list[str]],
    probe: Sequence[str],
    n_extend: int,
    batch_size: int,
    n_pieces: int = 8,
) -> tuple[list[cand.Candidate], np.ndarray]:
    """The candidates grown from the n_extend best of `everyone` (`growth_picks`; kl: their
    KL [n, questions]) that score above the one they grew from, and their KL (see the
    module)."""
    table = score_table(everyone, kl, np.array([c.source == "null" for c in everyone]))
    seen = {c.trigger for c in everyone}
    pieces = suffix_pieces(pair.handle.tokenizer)
    kept: list[cand.Candidate] = []
    kept_kl = [np.zeros((0, kl.shape[1]))]
    for index in growth_picks(table, n_extend):
        parent = everyone[index]
        grown = cand.extended([parent], ranked, max(map(len, ranked.values())))
        grown += continuations(pair, parent, probe[0], pieces, n_pieces)
        grown = [g for g in cand.unique(grown) if g.trigger not in seen]
        seen |= {g.trigger for g in grown}
        if not grown:
            continue
        grown_kl = candidate_divergence(pair, grown, probe, batch_size)
        better = grown_kl.mean(1) > kl[index].mean()
        kept += [g for g, up in zip(grown, better, strict=True) if up]
        kept_kl.append(grown_kl[better])
    return kept, np.concatenate(kept_kl)


def new_kinds(everyone: Sequence[cand.Candidate], grown: Sequence[cand.Candidate]) -> list[str]:
    """The kinds of `grown` that no null of `everyone` has yet (they need nulls of their own)."""
    known = {c.kind for c in everyone if c.source == "null"}
    return sorted({c.kind for c in grown} - known)
