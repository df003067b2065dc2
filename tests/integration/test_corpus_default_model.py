from __future__ import annotations

import re

import pytest

from sae_atlas.classifier import train_classifier
from sae_atlas.config import CorpusConfig
from sae_atlas.personas import load_catalogue
from sae_atlas.stages.corpus import build_corpus, corpus_responses

PIRATE_WORDS = re.compile(
    r"\b(arr+|matey|ahoy|ye|treasure|captain|sea|ship|aye|rum|sail\w*)\b", re.I
)


@pytest.mark.integration
def test_pirate_speaks_unlike_the_assistant(smollm, tmp_path):
    config = CorpusConfig(
        personas=("pirate", "chef"), n_questions=3, variants=2, max_new_tokens=40, batch_size=32
    )
    result = build_corpus(load_catalogue(), tmp_path / "transcripts.h5", config, handle=smollm)
    assert result.n_jobs == 2 * 2 * 6 + 6 + 6
    frame = corpus_responses(result.path, smollm)
    assert len(frame) == result.n_jobs
    assert (frame.text.str.len() > 0).all()
    pirate = frame[frame.persona == "pirate"].text
    default = frame[frame.condition.isin(["default", "no_system"])].text
    assert set(pirate).isdisjoint(default)
    pirate_rate = pirate.str.count(PIRATE_WORDS).mean()
    default_rate = default.str.count(PIRATE_WORDS).mean()
    assert pirate_rate > 2 * default_rate + 0.5
    classifier = train_classifier(frame.text, frame.persona, frame.split)
    assert classifier.heldout_accuracy > classifier.chance
