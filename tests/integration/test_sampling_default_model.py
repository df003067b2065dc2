from __future__ import annotations

from dataclasses import replace

import pytest

from sae_atlas.config import CorpusConfig
from sae_atlas.model.sampling import (
    decode,
    prompt_ids,
    sampling_model,
    shared_prefixes,
    stop_token_ids,
)
from sae_atlas.personas import load_catalogue
from sae_atlas.stages.corpus import corpus_jobs


@pytest.mark.integration
def test_shared_prefill_samples_the_same_tokens_on_the_default_model(smollm):
    """In float32, prefilling each shared system prompt once samples the tokens prefilling every
    prompt whole does, for a batch of two personas x two variants, default and no-system jobs."""
    config = CorpusConfig(
        personas=("pirate", "chef"), n_questions=2, variants=2, max_new_tokens=32, dtype="float32"
    )
    jobs = corpus_jobs(load_catalogue(), config)
    prompts = [prompt_ids(smollm, job.messages()) for job in jobs]
    assert len(shared_prefixes(prompts)[1]) < len(jobs) / 2
    model = sampling_model(smollm, "float32")
    seeds = [job.seed for job in jobs]
    stops, pad = stop_token_ids(smollm), int(smollm.tokenizer.pad_token_id or 0)
    for temperature in (0.7, 0.0):
        sampler = replace(config, temperature=temperature)
        shared = decode(model, prompts, seeds, sampler, stops, pad)
        whole = decode(model, prompts, seeds, sampler, stops, pad, share_prefixes=False)
        assert [t.tolist() for t in shared] == [t.tolist() for t in whole]
