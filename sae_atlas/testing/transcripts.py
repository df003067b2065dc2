"""Synthetic transcripts and activation stores, built in code, for tests and benchmarks.

`random_transcripts` makes a list of random transcripts (a count of them, or a token budget);
`synthetic_corpus` writes a transcripts.h5 of chat-shaped ones over several personas;
`random_activation_store` writes an activations.h5 of random rows (no model needed). All are
seeded; costs are those of drawing the random numbers and writing the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from feature_store.activations import ActivationWriter
from feature_store.schema import ROLE_CODE
from feature_store.transcripts import Transcript, TranscriptWriter
from sae_atlas.model import resid_hook
from sae_atlas.testing.models import WORD_SPECIALS

SEGMENTS = (("template", 2), ("system", 12), ("template", 3), ("user", 24), ("template", 3))
"""A synthetic chat's shape before the response: (role, tokens) runs; the last is the assistant
header."""


def random_transcripts(
    n: int | None = None,
    seed: int = 0,
    vocab: int = 300,
    *,
    n_tokens: int | None = None,
    lengths: tuple[int, int] = (4, 60),
    first_id: int = 5,
) -> list[Transcript]:
    """n random transcripts, or (n None) as many as reach n_tokens tokens: lengths drawn from
    [lengths[0], lengths[1]), ids from [first_id, vocab), a third user and the rest assistant,
    over 3 personas, every fourth held out."""
    if (n is None) == (n_tokens is None):
        raise ValueError("random_transcripts: give either n or n_tokens")
    count = np.inf if n is None else n
    budget = np.inf if n_tokens is None else n_tokens
    rng = np.random.default_rng(seed)
    out: list[Transcript] = []
    total = 0
    while len(out) < count and total < budget:
        i, length = len(out), int(rng.integers(*lengths))
        roles = np.full(length, ROLE_CODE["assistant"], dtype=np.uint8)
        roles[: length // 3] = ROLE_CODE["user"]
        out.append(
            Transcript(
                rng.integers(first_id, vocab, size=length).astype(np.int32),
                roles,
                persona=f"p{i % 3}",
                condition="persona",
                variant=i % 5,
                question_id=f"q{i:03d}",
                split="train" if i % 4 else "heldout",
                seed=i,
            )
        )
        total += length
    return out


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
                token_ids=rng.integers(len(WORD_SPECIALS), vocab, size=len(roles)).astype(np.int32),
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


def random_activation_store(
    path: str | Path,
    n_rows: int,
    d_model: int,
    *,
    seed: int = 0,
    doc_rows: int = 512,
    hook: str = resid_hook(0),
    model: str = "synthetic",
) -> None:
    """Write an activations.h5 at `path` of n_rows random float16 activations [n_rows, d_model]
    (standard normal) at `hook`, in doc_rows-row assistant transcripts (train split); n_rows
    rounds down to whole transcripts."""
    rng = np.random.default_rng(seed)
    writer = ActivationWriter.open(
        path, model=model, hooks=[hook], d_model=d_model, config={"rows": n_rows, "seed": seed}
    )
    commit_rows = 64 * doc_rows
    for start in range(0, n_rows, commit_rows):
        n = min(commit_rows, n_rows - start)
        transcripts = [
            Transcript(
                np.zeros(doc_rows, np.int32),
                np.full(doc_rows, ROLE_CODE["assistant"], np.uint8),
                split="train",
            )
            for _ in range(n // doc_rows)
        ]
        acts = rng.standard_normal((n // doc_rows * doc_rows, d_model), dtype=np.float32)
        writer.append(transcripts, {hook: acts.astype(np.float16)})
    writer.finish()
    writer.close()
