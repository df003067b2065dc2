from __future__ import annotations

import h5py
import numpy as np
import pytest

from feature_store import transcripts as transcripts_module
from feature_store.activations import ActivationStore, ActivationWriter
from feature_store.errors import StoreError
from feature_store.schema import ROLE_CODE
from feature_store.transcripts import TranscriptStore, TranscriptWriter
from sae_atlas.testing import random_transcripts

HOOK = "blocks.1.hook_resid_post"


def write(path, transcripts, acts, batch=5, finish=True, config=None):
    writer = ActivationWriter.open(
        path, model="m", hooks=[HOOK], d_model=acts.shape[1], config=config or {"a": 1}
    )
    start = sum(len(t) for t in transcripts[: len(writer)])
    for i in range(len(writer), len(transcripts), batch):
        chunk = transcripts[i : i + batch]
        n = sum(len(t) for t in chunk)
        writer.append(chunk, {HOOK: acts[start : start + n]})
        start += n
    if finish:
        writer.finish()
    else:
        writer.close()


@pytest.fixture
def data():
    transcripts = random_transcripts(40)
    n = sum(len(t) for t in transcripts)
    acts = np.random.default_rng(0).normal(size=(n, 8)).astype(np.float16)
    return transcripts, acts


def test_round_trip_with_provenance(tmp_path, data):
    transcripts, acts = data
    write(tmp_path / "a.h5", transcripts, acts)
    store = ActivationStore(tmp_path / "a.h5")
    assert store.complete and len(store) == 40 and store.n_tokens == len(acts)
    np.testing.assert_array_equal(store.acts(HOOK), acts)
    back = list(store)
    assert [t.question_id for t in back] == [t.question_id for t in transcripts]
    assert [t.split for t in back] == [t.split for t in transcripts]
    for original, read in zip(transcripts, back, strict=True):
        np.testing.assert_array_equal(original.token_ids, read.token_ids)
        np.testing.assert_array_equal(original.roles, read.roles)
        assert (read.persona, read.variant, read.seed) == (
            original.persona,
            original.variant,
            original.seed,
        )


def test_every_object_is_described(tmp_path, data):
    write(tmp_path / "a.h5", *data)
    with h5py.File(tmp_path / "a.h5", "r") as file:
        for key in ("schema", "schema_version", "created", "model", "config", "complete"):
            assert key in file.attrs
        names: list[str] = []
        file.visit(names.append)
        for name in names:
            assert file[name].attrs.get("description"), name


def test_resume_after_close_gives_same_content(tmp_path, data):
    transcripts, acts = data
    write(tmp_path / "full.h5", transcripts, acts)
    write(tmp_path / "part.h5", transcripts[:15], acts, finish=False)
    assert not ActivationStore(tmp_path / "part.h5").complete
    write(tmp_path / "part.h5", transcripts, acts)
    full, resumed = ActivationStore(tmp_path / "full.h5"), ActivationStore(tmp_path / "part.h5")
    assert resumed.complete
    np.testing.assert_array_equal(full.acts(HOOK), resumed.acts(HOOK))
    for key, values in full.token_table().items():
        np.testing.assert_array_equal(values, resumed.token_table()[key])
    assert full.provenance().equals(resumed.provenance())


def test_reader_ignores_uncommitted_rows(tmp_path, data):
    transcripts, acts = data
    write(tmp_path / "a.h5", transcripts[:10], acts, finish=False)
    committed = ActivationStore(tmp_path / "a.h5").n_tokens
    with h5py.File(tmp_path / "a.h5", "r+") as file:  # a commit that never finished
        file[f"acts/{HOOK}"].resize(committed + 100, axis=0)
        file["tokens/doc"].resize(committed + 100, axis=0)
    store = ActivationStore(tmp_path / "a.h5")
    assert store.n_tokens == committed and len(store.acts(HOOK)) == committed
    assert len(store.token_table()["doc"]) == committed
    write(tmp_path / "a.h5", transcripts, acts)
    assert ActivationStore(tmp_path / "a.h5").n_tokens == len(acts)


def test_shuffled_batches_cover_each_selected_row_once(tmp_path, data):
    transcripts, acts = data
    write(tmp_path / "a.h5", transcripts, acts)
    store = ActivationStore(tmp_path / "a.h5")
    mask = store.token_mask(roles=["assistant"], splits=["train"])
    expected = acts[mask].astype(np.float32)
    with store.batches(HOOK, 7, mask=mask, buffer_rows=64, epochs=1, seed=3) as batches:
        rows = np.concatenate(list(batches))
    assert len(rows) == len(expected) // 7 * 7
    assert not np.array_equal(rows, expected[: len(rows)])  # shuffled
    key = lambda a: a[np.lexsort(a.T[::-1])]  # noqa: E731
    full = np.concatenate([rows, expected[np.isin(expected, rows).all(1) == False]])  # noqa: E712
    np.testing.assert_array_equal(key(full), key(expected))
    roles = store.token_table()["role"]
    assert (roles[mask] == ROLE_CODE["assistant"]).all()


def test_token_mask_does_not_depend_on_the_read_block(tmp_path, data, monkeypatch):
    transcripts, acts = data
    write(tmp_path / "a.h5", transcripts, acts)
    store = ActivationStore(tmp_path / "a.h5")
    selections = [
        {"roles": ["assistant"], "splits": ["train"]},
        {"min_pos": 5, "conditions": ["persona"]},
        {},
    ]
    whole = [store.token_mask(**selection) for selection in selections]
    table = store.token_table()
    split = store.provenance()["split"].to_numpy()[table["doc"]]
    assistant = table["role"] == ROLE_CODE["assistant"]
    np.testing.assert_array_equal(whole[0], assistant & (split == "train"))
    monkeypatch.setattr(transcripts_module, "READ_ROWS", 7)
    assert len(list(store.token_blocks())) == -(-store.n_tokens // 7)
    for selection, expected in zip(selections, whole, strict=True):
        np.testing.assert_array_equal(store.token_mask(**selection), expected)


def test_read_gives_the_transcripts_asked_for(tmp_path, data):
    transcripts, acts = data
    write(tmp_path / "a.h5", transcripts, acts)
    store = ActivationStore(tmp_path / "a.h5")
    everything = list(store)
    picked = store.read([31, 2, 2, 17])
    for index, transcript in zip([31, 2, 2, 17], picked, strict=True):
        np.testing.assert_array_equal(transcript.token_ids, transcripts[index].token_ids)
        np.testing.assert_array_equal(transcript.roles, everything[index].roles)
        assert transcript.persona == transcripts[index].persona
        assert (
            transcript.split == everything[index].split
            and transcript.seed == transcripts[index].seed
        )
    assert store.read([]) == []
    np.testing.assert_array_equal(store.lengths(), [len(t) for t in transcripts])
    with pytest.raises(IndexError):
        store.read([40])


def test_batches_surface_reader_errors_and_stop(tmp_path, data):
    write(tmp_path / "a.h5", *data)
    store = ActivationStore(tmp_path / "a.h5")
    batches = store.batches(HOOK, 4, epochs=None)
    first = [next(batches) for _ in range(300)]
    assert all(b.shape == (4, 8) and b.dtype == np.float32 for b in first)
    batches.close()
    assert not batches.thread.is_alive()
    with pytest.raises(StoreError, match="no rows"):
        store.batches(HOOK, 4, mask=np.zeros(store.n_tokens, dtype=bool))
    with pytest.raises(StoreError, match=r"has no activations at 'blocks\.9"):
        store.batches("blocks.9.hook_resid_post", 4)


def test_refuses_other_model_config_kind_and_version(tmp_path, data):
    transcripts, acts = data
    path = tmp_path / "a.h5"
    write(path, transcripts[:5], acts)
    before = path.read_bytes()
    with pytest.raises(StoreError, match="written from model 'm'"):
        ActivationWriter.open(path, model="other", hooks=[HOOK], d_model=8, config={"a": 1})
    with pytest.raises(StoreError, match="another configuration"):
        ActivationWriter.open(path, model="m", hooks=[HOOK], d_model=8, config={"a": 2})
    with pytest.raises(StoreError, match="not a sae-atlas/transcripts file"):
        TranscriptWriter.open(path, model="m", config={"a": 1})
    with pytest.raises(StoreError, match="already complete"):
        ActivationWriter.open(path, model="m", hooks=[HOOK], d_model=8, config={"a": 1})
    assert path.read_bytes() == before
    with h5py.File(path, "r+") as file:
        file.attrs["schema_version"] = 99
    with pytest.raises(StoreError, match="schema version 99"):
        ActivationStore(path)


def test_truncated_file_gives_clear_error(tmp_path, data):
    path = tmp_path / "a.h5"
    write(path, *data)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(StoreError, match="truncated or damaged"):
        ActivationStore(path)


def test_transcript_store_round_trip(tmp_path):
    transcripts = random_transcripts(12)
    writer = TranscriptWriter.open(tmp_path / "t.h5", model="m", config={})
    writer.append(transcripts[:5])
    writer.append(transcripts[5:])
    writer.finish()
    store = TranscriptStore(tmp_path / "t.h5")
    assert len(store) == 12 and store.complete
    assert [t.question_id for t in store] == [t.question_id for t in transcripts]


def test_token_mask_by_position(tmp_path, data):
    write(tmp_path / "a.h5", *data)
    store = ActivationStore(tmp_path / "a.h5")
    positions = store.token_table()["pos"]
    mask = store.token_mask(min_pos=1)
    assert mask.sum() == store.n_tokens - len(store)  # one position 0 per transcript
    assert (positions[mask] >= 1).all()
