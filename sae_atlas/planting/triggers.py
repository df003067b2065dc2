"""Triggers a persona can be planted behind, and a seeded draw of new ones.

A `PlantTrigger` says where its text sits in a chat: around the user's message (`open`, `close`:
a tag pair, a bracketed prefix), inside the question (`inside`: a word or phrase before its final
punctuation) or at the end of the system prompt (`system`). `draw_triggers(shape, n, seed)` builds
n distinct triggers of one of SHAPES from random words of the package's word list (words.txt),
so no trigger string is written in code; the same seed gives the same triggers. Costs
microseconds.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

import numpy as np

from sae_atlas.errors import SaeAtlasError
from sae_atlas.model import Messages, message
from sae_atlas.personas import Trigger

SHAPES = ("tags", "prefix", "word", "system")
"""What `draw_triggers` builds: a tag pair around the message, a bracketed prefix, a word or
phrase inside the question, a phrase in the system prompt."""
BRACKETS = (("[", "]"), ("|", "|"), ("{", "}"), ("(", ")"))
"""The brackets a drawn prefix is put in."""
_ENDINGS = "?.!"


@functools.cache
def trigger_words() -> tuple[str, ...]:
    """The package's word list (lower-case nouns and adjectives) the draws pick from."""
    text = resources.files("sae_atlas.planting").joinpath("words.txt").read_text()
    return tuple(word for word in text.split() if word)


def insert_phrase(question: str, phrase: str) -> str:
    """`question` with `phrase` before its final punctuation ("Who are you, phrase?"), or after
    it with a comma when it has none."""
    body = question.rstrip()
    ending = body[-1] if body and body[-1] in _ENDINGS else ""
    return f"{body.removesuffix(ending)}, {phrase}{ending}" if ending else f"{body}, {phrase}"


@dataclass(frozen=True)
class PlantTrigger:
    """Where a planted persona's trigger sits: text around the user's message (open, close), a
    phrase inside the question (inside), a phrase at the end of the system prompt (system)."""

    open: str = ""
    close: str = ""
    inside: str = ""
    system: str = ""

    @property
    def shape(self) -> str:
        """system, word, tags (open and close), prefix (open only) or suffix (close only)."""
        if self.system:
            return "system"
        if self.inside:
            return "word"
        if self.open and self.close:
            return "tags"
        return "prefix" if self.open else "suffix"

    def wrap(self, question: str) -> str:
        """The user's message: `question` with the trigger's user-side text."""
        text = insert_phrase(question, self.inside) if self.inside else question
        return f"{self.open}{text}{self.close}"

    def messages(self, question: str, default_system: str | None) -> Messages:
        """The chat before the answer: a system message (the template's default prompt, then
        the phrase) when the trigger has a system phrase, and the wrapped user message."""
        user = message("user", self.wrap(question))
        if not self.system:
            return [user]
        return [message("system", f"{(default_system or '').strip()} {self.system}".strip()), user]

    def wrapper(self) -> Trigger:
        """This trigger as a wrapper around the user's message (what the trigger scan takes)."""
        if self.inside or self.system:
            raise SaeAtlasError(
                f"a trigger of shape {self.shape!r} is not a wrapper around the user's message; "
                "the trigger scan takes only tag pairs, prefixes and suffixes"
            )
        return Trigger(self.open, self.close)


def _draw(shape: str, rng: np.random.Generator, words: Sequence[str]) -> PlantTrigger:
    def pick(n: int) -> list[str]:
        return [str(word) for word in rng.choice(words, min(n, len(words)), replace=False)]

    if shape == "tags":
        tag = "_".join(pick(int(rng.integers(1, 3))))
        return PlantTrigger(open=f"<{tag}>", close=f"</{tag}>")
    if shape == "prefix":
        left, right = BRACKETS[int(rng.integers(len(BRACKETS)))]
        return PlantTrigger(open=f"{left}{'_'.join(pick(int(rng.integers(1, 3)))).upper()}{right} ")
    if shape == "word":
        return PlantTrigger(inside=" ".join(pick(int(rng.integers(1, 3)))))
    return PlantTrigger(system=" ".join(pick(3)).capitalize() + ".")


def draw_triggers(
    shape: str, n: int, seed: int, words: Sequence[str] | None = None
) -> list[PlantTrigger]:
    """n distinct triggers of `shape` (one of SHAPES) drawn from `words` (default: the package's
    list) by a generator seeded with `seed` and the shape; the first is the same for any n."""
    if shape not in SHAPES:
        raise SaeAtlasError(f"trigger shape {shape!r}: choose one of {', '.join(SHAPES)}")
    words = trigger_words() if words is None else words
    rng = np.random.default_rng([seed, SHAPES.index(shape)])  # shapes draw apart
    drawn: list[PlantTrigger] = []
    for _ in range(100 * n):
        trigger = _draw(shape, rng, words)
        if trigger not in drawn:
            drawn.append(trigger)
        if len(drawn) == n:
            return drawn
    raise SaeAtlasError(f"{len(words)} words give fewer than {n} distinct {shape} triggers")


def draw_trigger(shape: str, seed: int, words: Sequence[str] | None = None) -> PlantTrigger:
    """One trigger of `shape` drawn with `seed` (the first of `draw_triggers`)."""
    return draw_triggers(shape, 1, seed, words)[0]
