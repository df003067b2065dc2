from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from sae_atlas.config import CorpusConfig
from sae_atlas.model.sampling import _choose, sample, sampling_model
from sae_atlas.personas import load_catalogue
from sae_atlas.stages.corpus import corpus_jobs

CONFIG = CorpusConfig(
    personas=("pirate", "pirate_tag", "chef"),
    n_questions=2,
    variants=2,
    max_new_tokens=8,
    batch_size=8,
    dtype="float32",
)


@pytest.fixture(scope="module")
def model(tiny):
    return sampling_model(tiny, "float32")


def test_nucleus_sampling_follows_the_distribution():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().repeat(20000, 1)
    uniforms = torch.rand(20000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    tokens = _choose(logits.clone(), uniforms, 1.0, 0.75)
    counts = torch.bincount(tokens, minlength=4).double() / len(tokens)
    assert counts[2:].sum() == 0  # outside the nucleus {0, 1}
    assert abs(counts[0] - 0.5 / 0.8) < 0.02
    full = torch.bincount(_choose(logits.clone(), uniforms, 1.0, 1.0), minlength=4) / 20000
    assert torch.allclose(full.double(), probs.double(), atol=0.02)
    assert set(_choose(logits.clone(), uniforms, 0.0, 0.9).tolist()) == {0}


def test_same_seed_same_tokens(tiny, model):
    catalogue = load_catalogue()

    def texts(config):
        jobs = corpus_jobs(catalogue, config)[:6]
        return [r.text for batch in sample(tiny, jobs, config, model=model) for r in batch]

    first = texts(CONFIG)
    assert first == texts(CONFIG)
    assert first == texts(replace(CONFIG, batch_size=3))  # a row depends on its own job
    assert first != texts(replace(CONFIG, seed=1))
