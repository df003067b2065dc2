from __future__ import annotations

import numpy as np
import torch

from sae_atlas.model.forward import (
    batch_activations,
    decoder_layers,
    final_norm_weight,
    length_batches,
    residual_activations,
)
from sae_atlas.testing import random_transcripts

HOOK = "blocks.1.hook_resid_post"


def test_batches_respect_the_padded_budget():
    lengths = np.sort([len(t) for t in random_transcripts(100)])
    batches = [lengths[run] for run in length_batches(lengths, batch_tokens=200, max_batch=8)]
    assert np.array_equal(np.concatenate(batches), lengths)
    for batch in batches:
        assert len(batch) <= 8
        assert len(batch) == 1 or max(batch) * len(batch) <= 200


def test_batch_activations_drop_padding_and_match_each_transcript_alone(tiny):
    batch = random_transcripts(3, vocab=len(tiny.tokenizer))
    acts = batch_activations(tiny, batch, [HOOK], pad_id=0)[HOOK]
    assert acts.shape == (sum(len(t) for t in batch), tiny.d_model)
    first = torch.from_numpy(batch[0].token_ids.astype(np.int64))[None]
    alone = residual_activations(tiny, first, [HOOK])[HOOK][0].to(torch.float16).numpy()
    np.testing.assert_allclose(acts[: len(batch[0])], alone, atol=1e-3)


def test_final_norm_and_decoder_layers_of_a_llama(tiny):
    norm = final_norm_weight(tiny)
    assert norm is not None and norm.shape == (tiny.d_model,)
    assert len(decoder_layers(tiny.hf_model)) == tiny.n_layers
