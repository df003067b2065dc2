"""experiments/<name>/ in the atlas: written, read back lazily, replaced alone, atomically, and
left alone by a dynamics rerun (feature_store.atlas.experiments, sae_atlas.stages.record)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from test_atlas import atlas_data, write_atlas

from feature_store.atlas import Atlas, AtlasWriter, ExperimentRecord, record_experiment
from feature_store.errors import StoreError
from feature_store.schema import EXPERIMENT_ATTRS, EXPERIMENTS_GROUP

TABLE = pd.DataFrame(
    {
        "persona": ["pirate", "villain", "poet"],
        "auroc": [0.91, np.nan, 0.5],
        "n": np.array([3, 4, 5], dtype=np.int32),
        "claimed": [True, False, True],
        "text": ["Arr!", "", "roses"],
    }
)
COLUMNS = {
    "persona": "persona",
    "auroc": "held-out AUROC",
    "n": "units",
    "claimed": "claimed",
    "text": "sampled text",
    "unused": "a description no table needs",
}


def record(name: str = "selection", **changes: object) -> ExperimentRecord:
    fields: dict = {
        "name": name,
        "tables": {"decoding": TABLE, "matrix": np.arange(6.0).reshape(2, 3)},
        "summary": {"headline": 0.9, "personas": ["pirate"]},
        "descriptions": {"decoding": "decoding table", "matrix": "a matrix"},
        "columns": COLUMNS,
        "script": "scripts/persona_selection.py",
        "config": {"n_personas": 2},
        "seconds": 12.5,
        "units": {"auroc": "AUROC"},
    }
    return ExperimentRecord(**(fields | changes))


@pytest.fixture
def atlas(tmp_path: Path) -> Path:
    return write_atlas(tmp_path / "atlas.h5", atlas_data())


def snapshot(path: Path, skip: str) -> dict[str, object]:
    """Every dataset's bytes and every object's attributes, except under `skip` and the root's
    `modified` (which every extend sets)."""
    seen: dict[str, object] = {}
    with h5py.File(path, "r") as file:
        seen["/"] = {k: str(v) for k, v in file.attrs.items() if k != "modified"}

        def visit(name: str, obj: h5py.HLObject) -> None:
            if name == skip or name.startswith(skip + "/"):
                return
            attrs = {k: str(v) for k, v in obj.attrs.items()}
            if isinstance(obj, h5py.Dataset):
                value = obj[()]
                if isinstance(value, np.ndarray) and value.dtype != object:
                    data: object = value.tobytes()
                else:
                    data = repr(np.asarray(value).tolist())
                seen[name] = (attrs, obj.dtype.str, obj.shape, data)
            else:
                seen[name] = attrs

        file.visititems(visit)
    return seen


def test_an_experiment_round_trips(atlas):
    before = time.time()
    record_experiment(atlas, record())
    with Atlas.open(atlas) as reader:
        assert reader.experiments() == ["selection"] and reader.info()["experiments"] == [
            "selection"
        ]
        found = reader.experiment("selection")
        assert not found.tables._read  # lazy: nothing read until looked up
        assert list(found.tables) == ["decoding", "matrix"]
        table = found.tables["decoding"]
        pd.testing.assert_frame_equal(table, TABLE, check_dtype=False)
        assert table["n"].dtype == np.int32 and table["claimed"].dtype == bool
        np.testing.assert_array_equal(found.table("matrix"), np.arange(6.0).reshape(2, 3))
        assert found.summary == {"headline": 0.9, "personas": ["pirate"]}
        assert found.provenance["script"] == "scripts/persona_selection.py"
        assert found.provenance["config"] == {"n_personas": 2}
        assert found.provenance["seconds"] == 12.5
        written = pd.Timestamp(found.provenance["written"]).timestamp()
        assert before - 2 <= written <= time.time() + 2
        with pytest.raises(StoreError, match="no table 'other'; it has: decoding, matrix"):
            found.table("other")
        with pytest.raises(StoreError, match="no experiment 'audit'; it has: selection"):
            reader.experiment("audit")
    with h5py.File(atlas, "r") as file:
        group = file[f"{EXPERIMENTS_GROUP}/selection"]
        assert file[EXPERIMENTS_GROUP].attrs["description"]
        assert set(EXPERIMENT_ATTRS) <= set(group.attrs)
        assert group["decoding/auroc"].attrs["unit"] == "AUROC"
        for name in ("decoding", "decoding/persona", "matrix", "summary"):
            assert group[name].attrs["description"]


def test_text_with_nul_is_refused_by_the_store_and_escaped_by_record_results(atlas):
    from sae_atlas.stages.record import record_results

    sampled = {"decoding": TABLE.assign(text=["Arr\x00!", "", "roses"])}
    with pytest.raises(StoreError, match="NUL"):  # HDF5 text cannot hold it
        record_experiment(atlas, record(tables=sampled))
    fields = record(tables=sampled)
    record_results(atlas, "selection", fields.tables, fields.summary,
                   descriptions=fields.descriptions, columns=COLUMNS, script="s",
                   config={}, seconds=1.0)  # fmt: skip
    with Atlas.open(atlas) as reader:
        assert reader.experiment("selection").tables["decoding"]["text"][0] == "Arr\u2400!"


def test_replacing_one_experiment_leaves_the_rest_bit_identical(atlas):
    record_experiment(atlas, record("selection"))
    record_experiment(atlas, record("attractors", summary={"regions": 8}))
    before = snapshot(atlas, f"{EXPERIMENTS_GROUP}/selection")
    replacement = pd.DataFrame({"persona": ["chef"], "n": [1]})
    record_experiment(
        atlas,
        record("selection", tables={"other": replacement}, descriptions={"other": "new"}),
    )
    assert snapshot(atlas, f"{EXPERIMENTS_GROUP}/selection") == before
    with Atlas.open(atlas) as reader:
        selection = reader.experiment("selection")
        assert list(selection.tables) == ["other"]  # the old tables are gone
        assert selection.tables["other"]["persona"].tolist() == ["chef"]
        assert reader.experiment("attractors").summary == {"regions": 8}
        assert reader.experiments() == ["selection", "attractors"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "made_up"}, "not a declared experiment"),
        ({"descriptions": {"decoding": "d"}}, "matrix: needs a description"),
        ({"columns": {"persona": "p"}}, "need a description each"),
        ({"tables": {"summary": TABLE}}, "not summary"),
        ({"summary": {"x": np.float32(1)}}, "not JSON-ready"),
    ],
)
def test_a_bad_experiment_is_refused_before_anything_is_written(atlas, changes, message):
    original = atlas.read_bytes()
    with pytest.raises(StoreError, match=message):
        record_experiment(atlas, record(**changes))
    assert atlas.read_bytes() == original
    assert not list(atlas.parent.glob(".*.tmp"))


def test_a_crash_while_writing_leaves_the_atlas_as_it_was(atlas, monkeypatch):
    from sae_atlas.stages.record import record_results

    fields = record()
    record_results(atlas, "selection", fields.tables, fields.summary,
                   descriptions=fields.descriptions, columns=COLUMNS, script="s",
                   config={}, seconds=1.0)  # fmt: skip
    original = atlas.read_bytes()
    calls = []

    def crash(self, *args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    real = AtlasWriter._write_entry
    monkeypatch.setattr(AtlasWriter, "_write_entry", crash)
    with pytest.raises(KeyboardInterrupt):
        record_results(atlas, "selection", {"a": TABLE.drop(columns="text"), "b": TABLE},
                       {}, descriptions={"a": "a", "b": "b"}, columns=COLUMNS, script="s",
                       config={}, seconds=1.0)  # fmt: skip
    assert len(calls) == 2 and atlas.read_bytes() == original
    assert not list(atlas.parent.glob(".*.tmp"))


def test_a_dynamics_rerun_leaves_experiments_alone(atlas):
    import torch

    from sae_atlas.model.dtype import DtypeChoice
    from sae_atlas.stages.base import Stopwatch
    from sae_atlas.stages.dynamics.stage import replace_dynamics

    record_experiment(atlas, record())
    before = snapshot(atlas, "dynamics")
    choice = DtypeChoice("float32", torch.float32, "cpu", 1, "test")
    for matrix in (np.eye(2), np.ones((2, 2)) / 2):  # twice: the second replaces dynamics/
        replace_dynamics(
            atlas, choice, {"transition_matrix": matrix}, {}, Stopwatch(None), time.perf_counter()
        )
    after = snapshot(atlas, "dynamics")
    runtime = "runtime"
    before["/"].pop(runtime, None), after["/"].pop(runtime)  # dynamics records how it ran
    assert after == before
    with Atlas.open(atlas) as reader:
        np.testing.assert_array_equal(reader.dynamics("transition_matrix"), np.ones((2, 2)) / 2)
        assert reader.experiment("selection").summary["headline"] == 0.9


def test_an_older_atlas_shows_its_prefixed_dynamics_entries_as_experiments(atlas):
    with AtlasWriter.extend(atlas) as writer:
        writer.write_dynamics("selection_decoding", TABLE.drop(columns="text"), "old table",
                              column_descriptions=COLUMNS)  # fmt: skip
        writer.write_dynamics("selection_summary", json.dumps({"layer": 15}), "old summary")
        writer.write_dynamics("regions_like", np.arange(3), "not an experiment")
    with Atlas.open(atlas) as reader:
        assert reader.experiments() == ["selection"]
        legacy = reader.experiment("selection")
        assert list(legacy.tables) == ["decoding"] and legacy.summary == {"layer": 15}
        assert legacy.tables["decoding"]["persona"].tolist() == ["pirate", "villain", "poet"]
        assert "older atlas" in legacy.provenance["source"]
    record_experiment(atlas, record())  # the new group wins over the old entries
    with Atlas.open(atlas) as reader:
        assert reader.experiment("selection").summary["headline"] == 0.9
