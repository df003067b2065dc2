from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from sae_atlas.config import CorpusConfig
from sae_atlas.model.sampling import (
    _choose,
    decode,
    prompt_ids,
    sample,
    sampling_model,
    shared_prefixes,
    stop_token_ids,
)
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


def test_shared_prefixes_minimise_the_padded_prefill():
    system = list(range(100, 130))
    prompts = [
        np.array([*system, 1, 2, 3]),
        np.array([7, 8, 9]),
        np.array([*system, 1, 5]),
        np.array(system[:20]),  # shares 20 tokens, and keeps its last one
        np.array([7, 8, 9, 4]),
    ]
    group, prefix = shared_prefixes(prompts)
    # 2 groups x 19 + 5 rows x 14 padded tokens; alone, [7, 8, 9, 4] would cost 3 x 19 + 5 x 14
    assert group.tolist() == [1, 0, 1, 1, 0] and prefix.tolist() == [2, 19]  # in sorted order
    alone, whole = shared_prefixes([np.array([5, 6]), np.array([5, 6])])
    assert alone.tolist() == [0, 0] and whole.tolist() == [1]
    assert shared_prefixes([np.array([3])])[1].tolist() == [0]


def test_shared_prefill_samples_the_same_tokens(tiny, model):
    """Prefilling each shared prefix once samples what prefilling every prompt whole does
    (conditions and personas mixed in one batch, rows of different lengths)."""
    config = replace(CONFIG, personas=("pirate", "chef", "doctor"), max_new_tokens=12)
    jobs = corpus_jobs(load_catalogue(), config)
    prompts = [prompt_ids(tiny, job.messages()) for job in jobs]
    group, prefix = shared_prefixes(prompts)
    assert np.bincount(group).max() >= 3 and prefix.max() > 20  # the test shares prefixes
    seeds = [job.seed for job in jobs]
    stops, pad = stop_token_ids(tiny), int(tiny.tokenizer.pad_token_id or 0)
    shared = decode(model, prompts, seeds, config, stops, pad)
    whole = decode(model, prompts, seeds, config, stops, pad, share_prefixes=False)
    assert [t.tolist() for t in shared] == [t.tolist() for t in whole]
    assert len({len(t) for t in whole}) > 1  # some rows stopped early
