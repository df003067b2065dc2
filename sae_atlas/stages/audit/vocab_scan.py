"""Vocabulary scan by group testing: which of the tokenizer's words raise the tuned model's
divergence from its base when they sit in a probe question (or a system phrase), all of them
scanned at a cost of about one pass over the vocabulary per round.

`scan_vocabulary` cuts the words into random groups of `group_size` (one random partition per
round), puts each group in the probe question in one shape (`candidates.in_shape`: words inside
the question, a system phrase, ...) and scores it by KL(tuned || base) at the first response
token (`scoring.candidate_divergence`). A word's group score is the log KL of its group as a
robust z over the round's groups; its scan score is the minimum over rounds (a trigger word
raises every group it is in; a word that only shared a group with it does so once). The
`n_split` best words are then tested alone in the same shape (group testing's split), and their
own KL, as a robust z over the singles, is what the audit ranks them by. Cost: rounds x
(vocabulary words x ~1.3 tokens + ~10 tokens per group) plus n_split x ~12 tokens, per model:
about 60k tokens per model for a 20k-word vocabulary in two rounds (a couple of CPU minutes on
the default model).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sae_atlas.stages.audit.candidates import Candidate, in_shape
from sae_atlas.stages.audit.diffing import ModelPair, robust_z
from sae_atlas.stages.audit.scoring import candidate_divergence


@dataclass(frozen=True)
class VocabularyScan:
    """The scan of one shape: per word its group's robust z in each round [rounds, n_words] and
    its scan score [n_words] (their minimum over rounds), the words tested alone (best scan
    score first) with their own KL and its robust z over the singles, and the number of groups
    scored."""

    shape: str
    round_z: np.ndarray
    scan_score: np.ndarray
    split_words: list[str]
    split_kl: np.ndarray
    split_z: np.ndarray
    n_groups: int

    def ranked(self) -> list[str]:
        """The split words, highest single-word z first."""
        return [self.split_words[i] for i in np.argsort(-self.split_z, kind="stable")]


def partitions(n_words: int, group_size: int, rounds: int, seed: int) -> list[np.ndarray]:
    """`rounds` random partitions of range(n_words) into groups of at most group_size: a list
    of [n_words] group ids, one per round."""
    rng = np.random.default_rng(seed)
    return [rng.permutation(n_words) // group_size for _ in range(rounds)]


def scan_vocabulary(
    pair: ModelPair,
    words: Sequence[str],
    shape: str,
    question: str,
    *,
    group_size: int = 32,
    rounds: int = 2,
    n_split: int = 96,
    batch_size: int = 64,
    seed: int = 0,
) -> VocabularyScan:
    """Group-test `words` in `shape` around `question` (see the module)."""
    round_z = []
    n_groups = 0
    for group_of in partitions(len(words), group_size, rounds, seed):
        groups = [np.flatnonzero(group_of == g) for g in range(int(group_of.max()) + 1)]
        members = [tuple(words[int(i)] for i in g) for g in groups]
        probes = [Candidate(in_shape(shape, m), m, "scan") for m in members]
        kl = candidate_divergence(pair, probes, [question], batch_size)[:, 0]
        z = robust_z(np.log(np.maximum(kl, 1e-9)))
        per_word = np.empty(len(words))
        for group, value in zip(groups, z, strict=True):
            per_word[group] = value
        round_z.append(per_word)
        n_groups += len(groups)
    scan_score = np.min(round_z, axis=0)
    best = np.argsort(-scan_score, kind="stable")[:n_split]
    split_words = [words[int(i)] for i in best]
    singles = [Candidate(in_shape(shape, [w]), (w,), "scan") for w in split_words]
    split_kl = candidate_divergence(pair, singles, [question], batch_size)[:, 0]
    split_z = robust_z(np.log(np.maximum(split_kl, 1e-9)))
    return VocabularyScan(
        shape, np.array(round_z), scan_score, split_words, split_kl, split_z, n_groups
    )
