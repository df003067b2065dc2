from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import random_transcripts, tiny_handle

from feature_store.activations import ActivationStore
from feature_store.errors import StoreError
from sae_atlas.config import HarvestConfig
from sae_atlas.errors import SaeAtlasError
from sae_atlas.harvest import harvest, length_batches

HOOKS = ("blocks.1.hook_resid_post", "blocks.2.hook_resid_post")
TESTS = Path(__file__).parents[1]


def test_activations_equal_run_with_cache(tmp_path, tiny):
    transcripts = random_transcripts(30)
    config = HarvestConfig(hooks=HOOKS, batch_tokens=300)
    result = harvest(tiny, transcripts, tmp_path / "a.h5", config)
    store = ActivationStore(tmp_path / "a.h5")
    assert result.n_tokens == store.n_tokens == sum(len(t) for t in transcripts)  # no padding
    provenance = store.provenance()
    for row in provenance.itertuples():
        original = transcripts[row.source]
        tokens = torch.from_numpy(original.token_ids).long()[None]
        with torch.inference_mode():
            _, cache = tiny.bridge.run_with_cache(tokens, names_filter=list(HOOKS))
        for hook in HOOKS:
            stored = store.acts(hook, row.token_start, row.token_start + row.token_count)
            expected = cache[hook][0].numpy()
            np.testing.assert_allclose(stored.astype(np.float32), expected, rtol=2e-3, atol=2e-3)
        assert row.persona == original.persona and row.split == original.split


def test_batches_respect_the_padded_budget():
    transcripts = sorted(random_transcripts(100), key=len)
    batches = list(length_batches(transcripts, batch_tokens=200, max_batch=8))
    assert sum(len(b) for b in batches) == 100
    for batch in batches:
        assert len(batch) <= 8
        assert len(batch) == 1 or max(len(t) for t in batch) * len(batch) <= 200


def test_second_run_is_skipped_and_other_model_refused(tmp_path, tiny):
    transcripts = random_transcripts(10)
    config = HarvestConfig(hooks=HOOKS[:1])
    assert not harvest(tiny, transcripts, tmp_path / "a.h5", config).skipped
    before = (tmp_path / "a.h5").read_bytes()
    assert harvest(tiny, transcripts, tmp_path / "a.h5", config).skipped
    other = tiny_handle(seed=0)
    other.model_id = "another-model"
    with pytest.raises(StoreError, match="written from model 'tiny-llama'"):
        harvest(other, transcripts, tmp_path / "a.h5", config)
    with pytest.raises(StoreError, match="another configuration"):
        harvest(tiny, transcripts[:5], tmp_path / "a.h5", config)
    assert (tmp_path / "a.h5").read_bytes() == before
    with pytest.raises(SaeAtlasError, match="unknown hook point"):
        harvest(tiny, transcripts, tmp_path / "b.h5", HarvestConfig(hooks=("blocks.7.x",)))
    assert not (tmp_path / "b.h5").exists()


CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    from tiny import random_transcripts, tiny_handle
    from sae_atlas.config import HarvestConfig
    from sae_atlas.harvest import harvest
    config = HarvestConfig(hooks={hooks!r}, batch_tokens=200)
    harvest(tiny_handle(), random_transcripts(200), {out!r}, config,
            progress=lambda n: time.sleep(0.05))
""")


def test_killed_harvest_resumes_to_identical_content(tmp_path):
    out = tmp_path / "killed.h5"
    code = CHILD.format(tests=str(TESTS), hooks=HOOKS, out=str(out))
    child = subprocess.Popen([sys.executable, "-c", code], env=os.environ.copy())
    deadline = time.monotonic() + 120
    committed = 0
    while committed < 20 and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.1)
        if out.exists():
            with contextlib.suppress(StoreError):  # the child may still be creating it
                committed = len(ActivationStore(out))
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert 0 < committed < 200, "the child should have been killed mid-way"
    killed = ActivationStore(out)
    assert not killed.complete and 0 < len(killed) < 200

    config = HarvestConfig(hooks=HOOKS, batch_tokens=200)
    handle = tiny_handle()
    harvest(handle, random_transcripts(200), out, config)
    harvest(handle, random_transcripts(200), tmp_path / "clean.h5", config)
    resumed, clean = ActivationStore(out), ActivationStore(tmp_path / "clean.h5")
    assert resumed.complete and len(resumed) == 200
    for hook in HOOKS:
        np.testing.assert_array_equal(resumed.acts(hook), clean.acts(hook))
    for key, values in clean.token_table().items():
        np.testing.assert_array_equal(resumed.token_table()[key], values)
    assert resumed.provenance().equals(clean.provenance())
