from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from feature_store.activations import ActivationStore
from feature_store.errors import StoreError
from feature_store.transcripts import TranscriptStore, TranscriptWriter
from sae_atlas.config import HarvestConfig, LabelConfig, TrainConfig
from sae_atlas.errors import SaeAtlasError
from sae_atlas.model import handle_from_hf
from sae_atlas.sae import load_sae
from sae_atlas.stages.harvest import (
    Shard,
    distributed,
    harvest,
    length_sorted,
    shard_share,
)
from sae_atlas.stages.label import label
from sae_atlas.stages.train import train_saes
from sae_atlas.testing import random_llama, random_transcripts, tiny_handle, tiny_tokenizer

HOOKS = ("blocks.1.hook_resid_post", "blocks.2.hook_resid_post")


def test_activations_equal_run_with_cache(tmp_path, tiny):
    transcripts = random_transcripts(30)
    config = HarvestConfig(hooks=HOOKS, batch_tokens=300)
    result = harvest(transcripts, tmp_path / "a.h5", config, handle=tiny)
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


def test_a_bfloat16_model_harvests_in_bfloat16(tmp_path, tiny):
    tokenizer = tiny_tokenizer()
    model = random_llama(len(tokenizer)).to(torch.bfloat16)
    handle = handle_from_hf(model, tokenizer, "tiny-llama")
    assert handle.bridge.cfg.dtype == torch.bfloat16
    transcripts = random_transcripts(10)
    config = HarvestConfig(hooks=HOOKS[:1])
    harvest(transcripts, tmp_path / "bf16.h5", config, handle=handle)
    harvest(transcripts, tmp_path / "fp32.h5", config, handle=tiny)
    bf16, fp32 = ActivationStore(tmp_path / "bf16.h5"), ActivationStore(tmp_path / "fp32.h5")
    assert bf16.attrs["dtype"] == "bfloat16" and fp32.attrs["dtype"] == "float32"
    low, full = bf16.acts(HOOKS[0]).astype(np.float32), fp32.acts(HOOKS[0]).astype(np.float32)
    assert not np.array_equal(low, full)
    np.testing.assert_allclose(low, full, rtol=0.1, atol=0.1)


def test_length_sorted_reads_transcripts_in_length_order(tmp_path):
    transcripts = random_transcripts(40)
    ordered = length_sorted(transcripts, max_len=20)
    batch = ordered[5:12].read()
    expected = sorted(range(40), key=lambda i: min(len(transcripts[i]), 20))[5:12]  # stable
    assert [t.source for t in batch] == expected
    for t in batch:
        assert len(t) == min(len(transcripts[t.source]), 20)
        np.testing.assert_array_equal(t.token_ids, transcripts[t.source].token_ids[:20])
        np.testing.assert_array_equal(t.roles, transcripts[t.source].roles[:20])
        assert t.persona == transcripts[t.source].persona
    assert ordered.n_tokens == sum(min(len(t), 20) for t in transcripts)


def test_a_harvest_from_a_store_equals_one_from_a_list(tmp_path, tiny, monkeypatch):
    transcripts = random_transcripts(30)
    writer = TranscriptWriter.open(tmp_path / "t.h5", model=tiny.model_id, config={})
    writer.append(transcripts[:17])
    writer.append(transcripts[17:])
    writer.finish()
    config = HarvestConfig(hooks=HOOKS, batch_tokens=300)
    harvest(transcripts, tmp_path / "list.h5", config, handle=tiny)
    shutil.copy(tmp_path / "list.h5", tmp_path / "copy.h5")

    def whole_table(*args: object) -> None:
        raise AssertionError("a harvest reads a store batch by batch, never its token table")

    monkeypatch.setattr(TranscriptStore, "token_table", whole_table)
    monkeypatch.setattr(TranscriptStore, "__iter__", whole_table)
    store = TranscriptStore(tmp_path / "t.h5")
    copy = harvest(store, tmp_path / "copy.h5", config, handle=tiny)
    assert copy.skipped  # the same input digest
    harvest(store, tmp_path / "store.h5", config, handle=tiny)
    monkeypatch.undo()
    one, other = ActivationStore(tmp_path / "list.h5"), ActivationStore(tmp_path / "store.h5")
    assert one.config == other.config and one.provenance().equals(other.provenance())
    for key, values in one.token_table().items():
        np.testing.assert_array_equal(other.token_table()[key], values)
    for hook in HOOKS:
        np.testing.assert_array_equal(one.acts(hook), other.acts(hook))


def test_second_run_is_skipped_and_other_model_refused(tmp_path, tiny):
    transcripts = random_transcripts(10)
    config = HarvestConfig(hooks=HOOKS[:1])
    assert not harvest(transcripts, tmp_path / "a.h5", config, handle=tiny).skipped
    before = (tmp_path / "a.h5").read_bytes()
    assert harvest(transcripts, tmp_path / "a.h5", config, handle=tiny).skipped
    other = tiny_handle(seed=0)
    other.model_id = "another-model"
    with pytest.raises(StoreError, match="written from model 'tiny-llama'"):
        harvest(transcripts, tmp_path / "a.h5", config, handle=other)
    with pytest.raises(StoreError, match="another configuration"):
        harvest(transcripts[:5], tmp_path / "a.h5", config, handle=tiny)
    assert (tmp_path / "a.h5").read_bytes() == before
    with pytest.raises(SaeAtlasError, match="unknown hook point"):
        harvest(transcripts, tmp_path / "b.h5", HarvestConfig(hooks=("blocks.7.x",)), handle=tiny)
    assert not (tmp_path / "b.h5").exists()


CHILD = textwrap.dedent("""
    import time
    from sae_atlas.testing import random_transcripts, tiny_handle
    from sae_atlas.config import HarvestConfig
    from sae_atlas.stages.harvest import harvest
    config = HarvestConfig(hooks={hooks!r}, batch_tokens=200)
    harvest(random_transcripts(200), {out!r}, config, handle=tiny_handle(),
            progress=lambda n: time.sleep(0.05))
""")


def test_killed_harvest_resumes_to_identical_content(tmp_path):
    out = tmp_path / "killed.h5"
    code = CHILD.format(hooks=HOOKS, out=str(out))
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
    harvest(random_transcripts(200), out, config, handle=handle)
    harvest(random_transcripts(200), tmp_path / "clean.h5", config, handle=handle)
    resumed, clean = ActivationStore(out), ActivationStore(tmp_path / "clean.h5")
    assert resumed.complete and len(resumed) == 200
    for hook in HOOKS:
        np.testing.assert_array_equal(resumed.acts(hook), clean.acts(hook))
    for key, values in clean.token_table().items():
        np.testing.assert_array_equal(resumed.token_table()[key], values)
    assert resumed.provenance().equals(clean.provenance())


def test_shares_are_contiguous_and_balanced():
    ordered = length_sorted(random_transcripts(50), max_len=1024)
    shares = [shard_share(ordered, Shard(rank, 3)) for rank in range(3)]
    assert np.array_equal(np.concatenate([share.index for share in shares]), ordered.index)
    tokens = [share.n_tokens for share in shares]
    assert max(tokens) - min(tokens) <= 2 * max(ordered.lengths)


def harvest_rank(handle, transcripts, out, config, rank: int, port: int) -> None:
    """One rank of a 2-rank gloo harvest, as torchrun would start it (forked: the model is
    inherited, not rebuilt)."""
    os.environ.update(
        RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    with distributed("cpu") as (shard, device):
        assert device == "cpu"
        harvest(transcripts, out, config, handle=handle, shard=shard)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_two_rank_harvest_equals_one_process_and_reads_as_one_store(tmp_path, tiny):
    transcripts = [  # persona p0 plays the default persona, which labeling contrasts against
        dataclasses.replace(t, condition="default" if t.persona == "p0" else "persona")
        for t in random_transcripts(40)
    ]
    config = HarvestConfig(hooks=HOOKS, batch_tokens=300)
    harvest(transcripts, tmp_path / "single" / "a.h5", config, handle=tiny)
    out = tmp_path / "sharded" / "a.h5"
    context = multiprocessing.get_context("fork")
    port = free_port()
    ranks = [
        context.Process(target=harvest_rank, args=(tiny, transcripts, out, config, rank, port))
        for rank in range(2)
    ]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(timeout=120)
    assert [process.exitcode for process in ranks] == [0, 0]

    one, joined = ActivationStore(tmp_path / "single" / "a.h5"), ActivationStore(out)
    assert joined.shards == ("a.rank0-of-2.h5", "a.rank1-of-2.h5")
    assert all(
        0 < ActivationStore(out.parent / name).n_tokens < one.n_tokens for name in joined.shards
    )
    assert joined.complete and joined.rows == one.rows and joined.config == one.config
    assert joined.provenance().equals(one.provenance())
    for key, values in one.token_table().items():
        np.testing.assert_array_equal(joined.token_table()[key], values)
    # the ranks batch differently (batches end at the shard boundary), so matrix shapes and
    # thread counts differ: values agree to float16 rounding, not bit for bit
    for hook in HOOKS:
        np.testing.assert_allclose(joined.acts(hook), one.acts(hook), rtol=1e-3, atol=1e-4)
        with one.batches(hook, 64, epochs=1) as a, joined.batches(hook, 64, epochs=1) as b:
            for x, y in zip(a, b, strict=True):
                np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-4)
    again = harvest(transcripts, out, config, handle=tiny)
    assert again.skipped  # the joined store is the same harvest

    small = TrainConfig(width=32, k=4, batch_size=64, training_tokens=640, splits=())
    trained = train_saes(out, tmp_path / "sae", small)
    assert trained[0].card["data"]["store_tokens"] == one.n_tokens
    labels = label(out, load_sae(trained[0].path), HOOKS[0], LabelConfig())
    assert len(labels.features) == 32

    (out.parent / joined.shards[1]).unlink()
    with pytest.raises(StoreError, match="not beside it"):
        ActivationStore(out)
