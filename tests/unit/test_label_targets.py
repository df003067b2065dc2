from __future__ import annotations

import numpy as np

from sae_atlas.stages.label import HELDOUT, TRAIN
from sae_atlas.stages.label.inputs import Responses
from sae_atlas.stages.label.targets import (
    decoder_scores,
    first_questions,
    linear_ceiling,
    within_train,
)

N_TRAIN, N_HELDOUT, PERSONAS = 8, 6, ("assistant", "pirate", "poet")


def responses(repeats: int = 3) -> Responses:
    """`repeats` responses per persona and question; questions 0-7 train, 8-13 held out."""
    questions = np.arange(N_TRAIN + N_HELDOUT)
    persona, question = (a.ravel() for a in np.meshgrid(np.arange(3), questions, indexing="ij"))
    persona, question = np.repeat(persona, repeats), np.repeat(question, repeats)
    return Responses(
        doc=np.arange(len(persona)),
        persona=persona,
        split=np.where(question < N_TRAIN, TRAIN, HELDOUT),
        question=question.astype(str).astype(object),
        names=PERSONAS,
        default=0,
    )


def test_within_train_and_first_questions_resplit_only_train_questions():
    data = responses()
    held = np.array(["1", "2"], dtype=object)
    inner = within_train(data, held)
    assert set(inner.question[inner.split == HELDOUT]) == {"1", "2"}
    assert set(inner.question[inner.split == TRAIN]) == {str(q) for q in range(N_TRAIN)} - {
        "1",
        "2",
    }
    assert (inner.split[data.split == HELDOUT] == -1).all()
    fewer = first_questions(data, 2)
    assert len(set(fewer.question[fewer.split == TRAIN])) == 2
    assert (fewer.split[data.split == HELDOUT] == HELDOUT).all()


def test_probe_and_decoders_find_a_planted_persona_and_not_an_absent_one():
    data = responses()
    rng = np.random.default_rng(0)
    values = rng.standard_normal((len(data), 6))
    values[data.persona == 1, 0] += 3.0  # pirate is planted along one axis; poet is noise
    ceiling = linear_ceiling(values, data)
    assert ceiling["heldout"]["pirate"] > 0.85  # the planted axis alone reaches ~0.99
    assert ceiling["heldout"]["poet"] < 0.7
    scores = decoder_scores(values, data)
    assert {"centroid", "centroid_std", "lda"} <= set(scores)
    assert all(0.0 <= row["heldout"] <= 1.0 for row in scores.values())
    assert scores["lda"]["heldout"] > 1 / 3 + 0.15  # pirate's rows decode; chance is 1/3
