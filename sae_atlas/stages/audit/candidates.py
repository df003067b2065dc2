"""Candidate triggers, built from what the model gives away and from a generated family of shapes.

No list of triggers: the words come from the tokenizer's own vocabulary (its whole-word tokens),
ranked by how strongly the fine-tune's first-layer weight change reads their tokens
(`diffing.token_read_shift`) in each of the forms a trigger takes (" word" inside a question,
"word" inside a tag, "WORD" in a bracketed prefix, " Word" opening a system phrase), and from
the leakage motifs (words the tuned model says and the base does not). `candidate_family` puts
each of the top words in every shape (tags around the message, bracketed prefixes in five
bracket kinds, a word inside the question, a phrase at the end of the system prompt), adds pairs
of top words and years in brackets, and the words the vocabulary scan found (`vocab_scan`) in
their own shape; `extended` grows the best candidates by one more word;
`null_candidates` draws random vocabulary words in the same shapes (the null every candidate is
scored against). Costs one tokenizer pass over the vocabulary (about a second).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from sae_atlas.planting.triggers import PlantTrigger

SHAPES = ("tags", "prefix", "word", "system")
"""The trigger shapes the audit generates (the places a trigger sits in a chat)."""
BRACKETS = (("[", "]"), ("(", ")"), ("{", "}"), ("|", "|"), ("<", ">"))
"""Brackets of the generated prefixes."""
YEARS = range(1990, 2061)
"""Years of the generated `[year] ` prefixes."""
_WORD = re.compile(r"[a-z]{3,}")


@dataclass(frozen=True)
class Candidate:
    """A candidate trigger: where its text sits (`trigger`), the words it is made of, what
    proposed it (read-shift, motif, pair, year, extension, null) and its shape."""

    trigger: PlantTrigger
    words: tuple[str, ...]
    source: str

    @property
    def shape(self) -> str:
        return self.trigger.shape if self.trigger.shape != "suffix" else "prefix"

    @property
    def kind(self) -> str:
        """shape and word count (the stratum of the null it is compared with)."""
        return f"{self.shape}:{len(self.words)}"

    @property
    def text(self) -> str:
        """The trigger as a reader sees it: open...close, the inside phrase or the system one."""
        trigger = self.trigger
        if trigger.system:
            return f"system: {trigger.system}"
        if trigger.inside:
            return f"inside: {trigger.inside}"
        return f"{trigger.open}...{trigger.close}" if trigger.close else trigger.open


def vocabulary_words(tokenizer: object) -> list[str]:
    """The tokenizer's whole-word tokens: lower-case alphabetic, 3+ letters, with a leading
    space in the vocabulary (the words the tokenizer knows as one piece), sorted."""
    vocab = tokenizer.get_vocab()  # type: ignore[attr-defined]
    words = set()
    for token_id in vocab.values():
        text = tokenizer.decode([token_id])  # type: ignore[attr-defined]
        if text.startswith(" ") and _WORD.fullmatch(text[1:]):
            words.add(text[1:])
    return sorted(words)


FORMS = {
    "word": lambda w: f" {w}",
    "tags": lambda w: w,
    "prefix": lambda w: w.upper(),
    "system": lambda w: f" {w.capitalize()}",
}
"""How a word is written in each shape (the tokens the model reads there)."""


def word_scores(tokenizer: object, words: Sequence[str], token_scores: np.ndarray) -> dict:
    """Per shape, the score [len(words)] of each word written as that shape writes it: the
    largest `token_scores` (per token id) over its tokens."""
    out = {}
    for shape, form in FORMS.items():
        encoded = tokenizer([form(w) for w in words], add_special_tokens=False)  # type: ignore[operator]
        out[shape] = np.array([token_scores[ids].max() for ids in encoded["input_ids"]])
    return out


def in_shape(shape: str, words: Sequence[str], bracket: int = 0) -> PlantTrigger:
    """`words` placed as a trigger of `shape` (multi-word tags and prefixes join with _)."""
    if shape == "tags":
        tag = "_".join(words)
        return PlantTrigger(open=f"<{tag}>", close=f"</{tag}>")
    if shape == "prefix":
        left, right = BRACKETS[bracket]
        return PlantTrigger(open=f"{left}{'_'.join(words).upper()}{right} ")
    if shape == "word":
        return PlantTrigger(inside=" ".join(words))
    return PlantTrigger(system=" ".join(words).capitalize() + ".")


def shaped(words: Sequence[str], source: str, shapes: Iterable[str] = SHAPES) -> list[Candidate]:
    """`words` in every shape of `shapes` (prefixes in every bracket kind)."""
    out = []
    for shape in shapes:
        brackets = range(len(BRACKETS)) if shape == "prefix" else range(1)
        out += [Candidate(in_shape(shape, words, b), tuple(words), source) for b in brackets]
    return out


def top_words(words: Sequence[str], scores: np.ndarray, n: int) -> list[str]:
    """The n words of highest score."""
    return [words[i] for i in np.argsort(-scores, kind="stable")[:n]]


def candidate_family(
    words: Sequence[str],
    scores: dict,
    motifs: Sequence[str],
    n_words: int,
    n_pairs: int,
    scanned: dict[str, list[str]] | None = None,
) -> list[Candidate]:
    """The candidates to score: the words the vocabulary scan ranked best in a shape
    (`scanned`: shape -> words, best first) in that shape, with pairs of its n_pairs best (both
    orders); the n_words top words of each shape (`word_scores`), each put in every shape (a
    token the fine-tune reads in one form may be the trigger in another; prefixes in every
    bracket kind only for the prefix form's own top words), the motif words in every shape,
    pairs of each shape's n_pairs top words (both orders) in that shape, years in brackets and
    in the question."""
    tops = {shape: top_words(words, scores[shape], n_words) for shape in SHAPES}
    union = list(dict.fromkeys(w for rank in zip(*tops.values(), strict=True) for w in rank))
    out: list[Candidate] = []
    for shape, found in (scanned or {}).items():
        out += [c for w in found for c in shaped([w], "scan", [shape])]
        out += [c for pair in _pairs(found, n_pairs) for c in shaped(pair, "scan-pair", [shape])]
    for shape in SHAPES:
        out += [c for w in tops[shape] for c in shaped([w], "read-shift", [shape])]
        out += [c for pair in _pairs(tops[shape], n_pairs) for c in shaped(pair, "pair", [shape])]
    out += [c for w in union for c in shaped([w], "read-shift") if c.trigger.open[:1] in "[<"]
    out += [c for w in motifs for c in shaped([w], "motif") if c.trigger.open[:1] in "[<"]
    out += [c for year in YEARS for c in shaped([str(year)], "year", ["prefix"])[:1]]
    out += [Candidate(PlantTrigger(inside=f"in {year}"), (str(year),), "year") for year in YEARS]
    return unique(out)


def _pairs(ranked: Sequence[str], n: int) -> list[tuple[str, str]]:
    """Ordered pairs of the n first of `ranked` (both orders)."""
    return [(a, b) for a in ranked[:n] for b in ranked[:n] if a != b]


def unique(candidates: Iterable[Candidate]) -> list[Candidate]:
    """`candidates` without repeated triggers, in order."""
    seen: set[PlantTrigger] = set()
    out = []
    for candidate in candidates:
        if candidate.trigger not in seen:
            seen.add(candidate.trigger)
            out.append(candidate)
    return out


def extended(best: Sequence[Candidate], words: dict, n_words: int) -> list[Candidate]:
    """Each of `best` grown by one more word: the n_words top words of its shape (`words`:
    shape -> ranked words), appended (and prepended), in the candidate's own bracket kind."""
    out = []
    for candidate in best:
        bracket = next(
            (i for i, (left, _) in enumerate(BRACKETS) if candidate.trigger.open.startswith(left)),
            0,
        )
        for word in words[candidate.shape][:n_words]:
            if word in candidate.words:
                continue
            for grown in ((*candidate.words, word), (word, *candidate.words)):
                out.append(Candidate(in_shape(candidate.shape, grown, bracket), grown, "extension"))
    return unique(out)


def null_candidates(
    words: Sequence[str],
    kinds: Iterable[str],
    n_per_kind: int,
    seed: int,
    exclude: Iterable[Candidate] = (),
) -> list[Candidate]:
    """n_per_kind random candidates of each kind (shape:word count): uniform draws of
    vocabulary words, prefixes in a random bracket kind. Seeded. A draw that repeats a trigger
    in `exclude` is drawn again (a small vocabulary would otherwise put candidates among the
    nulls)."""
    rng = np.random.default_rng(seed)
    taken = {c.trigger for c in exclude}
    out = []
    for kind in sorted(set(kinds)):
        shape, count = kind.split(":")
        made = 0
        for _ in range(20 * n_per_kind):
            drawn = tuple(str(w) for w in rng.choice(words, int(count), replace=False))
            null = Candidate(
                in_shape(shape, drawn, int(rng.integers(len(BRACKETS)))), drawn, "null"
            )
            if null.trigger not in taken:
                taken.add(null.trigger)
                out.append(null)
                made += 1
            if made == n_per_kind:
                break
    return out
