"""The repetition state: a turn that repeats the same speaker's previous turn is a loop of the
text, not a place in persona space.

A small chat model in a long conversation (above all when it talks to itself) often answers with
its previous turn again, word for word or nearly. Such a turn's residual lands somewhere in
persona space, and a run of them would read as an attractor of that region. `repeated_turns`
marks every assistant turn whose words overlap its previous assistant turn by at least
REPEAT_OVERLAP (multiset overlap of lower-cased words and punctuation over the longer turn's
count: 1.0 for a verbatim repeat); `state_paths` gives those turns the extra state REPETITION
(index n_regions, after the persona regions) so transition counts, stationary shares, returns
and attractor claims see the loop as a state of its own (attractors.claim never claims it).
Cost: one regex pass and a Counter per turn: milliseconds for hundreds of rollouts.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

REPETITION = "repetition"
"""The name of the repetition state (after the persona regions)."""
REPEAT_OVERLAP = 0.9
"""A turn whose word overlap with the previous turn of the same speaker reaches this repeats it."""
_WORDS = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[str]:
    """Lower-cased words and punctuation marks of `text`."""
    return _WORDS.findall(text.lower())


def overlap(text: str, previous: str) -> float:
    """Multiset overlap of the words of two texts over the longer one's count (0.0 when either
    is empty): 1.0 for identical texts, order ignored."""
    mine, theirs = Counter(words(text)), Counter(words(previous))
    longest = max(sum(mine.values()), sum(theirs.values()))
    if not mine or not theirs:
        return 0.0
    return sum((mine & theirs).values()) / longest


def repeated_turns(
    texts: Sequence[Sequence[str]], n_turns: int, threshold: float = REPEAT_OVERLAP
) -> np.ndarray:
    """bool [n, n_turns]: turn t (>= 1) of rollout i repeats its turn t - 1 (texts[i]: the
    assistant turns; a missing turn repeats nothing)."""
    out = np.zeros((len(texts), n_turns), dtype=bool)
    for i, turns in enumerate(texts):
        for t in range(1, min(len(turns), n_turns)):
            out[i, t] = overlap(turns[t], turns[t - 1]) >= threshold
    return out


def state_paths(regions: np.ndarray, repeated: np.ndarray | None, n_regions: int) -> np.ndarray:
    """[n, T] int: the persona regions of `regions` [n, T], with every repeated turn (bool
    [n, T]; None: none) in the REPETITION state (index n_regions)."""
    if repeated is None:
        return np.asarray(regions, dtype=np.int64)
    return np.where(repeated, n_regions, regions).astype(np.int64)


def state_names(names: Sequence[str]) -> tuple[str, ...]:
    """The states' names: the persona regions', then REPETITION."""
    return (*names, REPETITION)
