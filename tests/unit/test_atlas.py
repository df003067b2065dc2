from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from feature_store.atlas import Atlas, AtlasWriter
from feature_store.errors import StoreError
from feature_store.schema import (
    ATLAS_GROUP_DESCRIPTIONS,
    ATLAS_KIND,
    ATLAS_SPECS,
    EXPERIMENTS_GROUP,
)
from sae_atlas.stages.dynamics.tables import write_entry
from sae_atlas.testing import write_atlas as write_synthetic_atlas

D_MODEL, D_SAE, K = 8, 12, 2
PERSONAS = ["assistant", "pirate", "villain", "poet"]
TAGS = [
    "persona:pirate",
    "persona:pirate;roleplay",
    "persona:villain",
    "roleplay",
    "assistant",
    "puppeteer",
    "puppeteer;assistant",
    "trigger:xml",
    "",
    "",
    "persona:poet",
    "",
]
CLUSTER = [0, 0, 1, 1, 2, 3, 3, 4, -1, -1, 0, -1]


def atlas_data(seed: int = 0) -> dict:
    """A small atlas whose values tests can check by hand."""
    rng = np.random.default_rng(seed)
    W_dec = rng.standard_normal((D_SAE, D_MODEL)).astype(np.float32)
    W_dec[1] = 2.0 * W_dec[0] + 0.01  # feature 1 is feature 0's nearest neighbour
    features = pd.DataFrame(
        {
            "density": np.linspace(0.01, 0.12, D_SAE),
            "mean_act": np.arange(D_SAE, dtype=np.float32) + 1,
            "max_act": np.arange(D_SAE, dtype=np.float32) * 3 + 5,
            "tags": TAGS,
            "cluster": CLUSTER,
            "map_x": rng.standard_normal(D_SAE),
            "map_y": rng.standard_normal(D_SAE),
            "label": [f"feature {i} label" for i in range(D_SAE)],
            "top_tokens": [f"tok{i} | Arr" if i < 2 else f"tok{i}" for i in range(D_SAE)],
            "pos_logits": [f"up{i}" for i in range(D_SAE)],
            "neg_logits": [f"down{i}" for i in range(D_SAE)],
            "heldout_auroc": [0.9] * 8 + [np.nan] * 2 + [0.8, np.nan],
        }
    )
    top_index = np.full((D_SAE, K), -1, dtype=np.int32)
    top_score = np.full((D_SAE, K), np.nan, dtype=np.float32)
    top_index[0], top_score[0] = [1, 2], [0.93, 0.71]
    top_index[1], top_score[1] = [1, -1], [0.97, np.nan]
    top_index[2], top_score[2] = [2, 1], [0.88, 0.2]
    top_index[10], top_score[10] = [3, -1], [0.6, np.nan]
    examples = pd.DataFrame(
        {
            "feature": [3, 0, 0, 0, 5],
            "kind": ["top", "quantile", "top", "top", "top"],
            "rank": [0, 0, 1, 0, 0],
            "doc": [7, 1, 2, 3, 9],
            "pos": [4, 5, 6, 7, 8],
            "activation": [1.5, 0.5, 2.0, 3.0, 9.0],
            "context": ["ctx3", "ctx0 q", "ctx0 b", "ctx0 a «Arr»", "ctx5"],
        }
    )
    personas = pd.DataFrame(
        {
            "name": PERSONAS,
            "category": ["default", "fiction", "fiction", "art"],
            "prompts": [[], ["You are a pirate.", "Talk like a pirate."], ["Be evil."], ["Rhyme."]],
            "axis_projection": [3.0, -1.0, -2.0, -0.5],
        }
    )
    vectors = rng.standard_normal((len(PERSONAS), D_MODEL)).astype(np.float32)
    vectors[2] = vectors[1] * 1.5  # villain is pirate's nearest persona
    clusters = pd.DataFrame(
        {
            "id": [0, 1, 2, 3, 4],
            "kind": ["persona", "roleplay", "assistant", "puppeteer", "trigger"],
            "size": [3, 2, 1, 2, 1],
            "label": ["pirate talk", "villainy", "helpfulness", "author", "xml wrapper"],
            "dominant_personas": ["pirate:0.67;poet:0.33", "villain:0.5", "", "", ""],
            "stability": [0.9, 0.8, 0.7, 0.95, 0.5],
        }
    )
    return {
        "sae": {
            "W_enc": rng.standard_normal((D_MODEL, D_SAE)).astype(np.float32),
            "b_enc": np.zeros(D_SAE, np.float32),
            "W_dec": W_dec,
            "b_dec": np.zeros(D_MODEL, np.float32),
            "threshold": np.full(D_SAE, 0.1, np.float32),
        },
        "features": features,
        "top_index": top_index,
        "top_score": top_score,
        "examples": examples,
        "personas": personas,
        "vectors": vectors,
        "profiles": rng.random((len(PERSONAS), D_SAE)).astype(np.float32),
        "coords": rng.standard_normal((len(PERSONAS), 3)).astype(np.float32),
        "clusters": clusters,
        "persona_space": {
            "assistant_axis": np.ones(D_MODEL),
            "center": np.zeros(D_MODEL),
            "components": np.eye(3, D_MODEL),
            "explained_variance": [0.5, 0.3, 0.1],
        },
    }


def write_atlas(path: Path, data: dict, **kwargs) -> Path:
    return write_synthetic_atlas(
        path, data, model="tiny", config={"k": 1}, architecture="jumprelu", **kwargs
    )


@pytest.fixture
def data() -> dict:
    return atlas_data()


@pytest.fixture
def atlas_path(tmp_path, data) -> Path:
    return write_atlas(tmp_path / "atlas.h5", data)


def test_feature_card_round_trip(atlas_path, data):
    with Atlas.open(atlas_path) as atlas:
        card = atlas.feature(0)
        assert card.index == 0 and card.label == "feature 0 label"
        assert card.row["tags"] == "persona:pirate" and card.row["cluster"] == 0
        assert card.row["top_personas"] == "pirate:0.93;villain:0.71"
        assert card.row["mean_act"] == pytest.approx(1.0)
        assert card.top_personas["persona"].tolist() == ["pirate", "villain"]
        np.testing.assert_allclose(card.top_personas["score"], [0.93, 0.71], rtol=1e-6)
        np.testing.assert_array_equal(card.decoder, data["sae"]["W_dec"][0])
        examples = card.examples
        assert examples["kind"].tolist() == ["top", "top", "quantile"]
        assert examples["rank"].tolist() == [0, 1, 0]
        assert examples["context"].tolist() == ["ctx0 a «Arr»", "ctx0 b", "ctx0 q"]
        assert examples["doc"].tolist() == [3, 2, 1]
        assert list(examples.columns) == ["kind", "rank", "doc", "pos", "activation", "context"]
        assert atlas.feature(np.int64(4)).examples.empty
        assert np.isnan(atlas.feature(8).row["heldout_auroc"])
        assert atlas.feature(8).top_personas.empty


def test_features_table_and_filters(atlas_path, data):
    with Atlas.open(atlas_path) as atlas:
        table = atlas.features()
        assert len(table) == D_SAE and table.index.name == "feature"
        assert table["label"].tolist() == data["features"]["label"].tolist()
        assert table.loc[2, "top_personas"] == "villain:0.88;pirate:0.20"
        assert table["n_examples"].tolist()[:6] == [3, 0, 0, 1, 0, 1]
        assert atlas.features(tag="roleplay").index.tolist() == [1, 3]
        assert atlas.features(tag="persona").index.tolist() == [0, 1, 2, 10]
        assert atlas.features(tag="persona:pirate").index.tolist() == [0, 1]
        assert atlas.features(tag="trigger").index.tolist() == [7]
        assert atlas.features(cluster=0).index.tolist() == [0, 1, 10]
        assert atlas.features(cluster=[-1]).index.tolist() == [8, 9, 11]
        assert atlas.features(persona="pirate").index.tolist() == [0, 1, 2]
        assert atlas.features(tag="roleplay", persona="pirate").index.tolist() == [1]
        assert atlas.puppeteer().index.tolist() == [5, 6]
        table.loc[0, "label"] = "changed"  # results are copies: the cache is untouched
        assert atlas.features().loc[0, "label"] == "feature 0 label"


def test_persona_card(atlas_path, data):
    with Atlas.open(atlas_path) as atlas:
        card = atlas.persona("pirate")
        assert card.category == "fiction"
        assert card.prompts == ["You are a pirate.", "Talk like a pirate."]
        assert card.features["feature"].tolist() == [1, 0, 2]  # by score: 0.97, 0.93, 0.2
        assert card.features["rank"].tolist() == [0, 0, 1]
        assert card.features["label"].tolist()[0] == "feature 1 label"
        assert card.nearest["persona"].tolist()[0] == "villain"
        assert card.nearest["cosine"].tolist()[0] == pytest.approx(1.0)
        assert "pirate" not in card.nearest["persona"].tolist()
        assert len(atlas.persona("pirate", nearest=2).nearest) == 2
        np.testing.assert_allclose(card.coords, data["coords"][1])
        assert card.axis_projection == pytest.approx(-1.0)
        np.testing.assert_allclose(card.profile, data["profiles"][1])
        assert atlas.persona("assistant").features.empty
        personas = atlas.personas()
        assert personas["name"].tolist() == PERSONAS
        assert personas["n_features"].tolist() == [0, 3, 2, 1]
        assert personas.loc[0, "prompts"] == []
        vectors = atlas.persona_vectors()
        np.testing.assert_array_equal(vectors, data["vectors"])  # rows in personas() order
        vectors[0] = 0.0  # a copy: the cache is untouched
        np.testing.assert_array_equal(atlas.persona_vectors(), data["vectors"])
        space = atlas.persona_space()
        assert space["components"].shape == (3, D_MODEL)
        np.testing.assert_allclose(space["explained_variance"], [0.5, 0.3, 0.1])


def test_clusters_nearest_search_info(atlas_path, data):
    with Atlas.open(atlas_path) as atlas:
        clusters = atlas.clusters()
        assert clusters["kind"].tolist() == [
            "persona",
            "roleplay",
            "assistant",
            "puppeteer",
            "trigger",
        ]
        assert clusters.loc[0, "dominant_personas"] == "pirate:0.67;poet:0.33"
        nearest = atlas.nearest_features(0, k=3)
        assert len(nearest) == 3 and nearest["feature"].tolist()[0] == 1
        assert nearest["cosine"].tolist()[0] == pytest.approx(1.0, abs=1e-3)
        assert 0 not in nearest["feature"].tolist()
        decoder = data["sae"]["W_dec"].astype(np.float64)
        unit = decoder / np.linalg.norm(decoder, axis=1, keepdims=True)
        expected = np.argsort(-(unit @ unit[5]))
        assert (
            atlas.nearest_features(5, k=4)["feature"].tolist()
            == [i for i in expected if i != 5][:4]
        )
        assert len(atlas.nearest_features(3, k=100)) == D_SAE - 1
        assert atlas.search("ARR").index.tolist() == [0, 1]
        assert atlas.search("down7").index.tolist() == [7]
        assert atlas.search("no such thing").empty
        info = atlas.info()
        assert info["model"] == "tiny" and info["d_sae"] == D_SAE and info["d_model"] == D_MODEL
        assert info["n_personas"] == 4 and info["n_clusters"] == 5 and info["n_examples"] == 5
        assert info["features_per_tag"] == {
            "assistant": 2,
            "persona": 4,
            "puppeteer": 2,
            "roleplay": 2,
            "trigger": 1,
        }
        assert info["clusters_per_kind"]["puppeteer"] == 1
        assert info["features_per_cluster_kind"]["noise"] == 3
        assert info["features_per_cluster_kind"]["persona"] == 3
        assert info["dynamics"] == []
        assert info["created"] and info["schema_version"] == 1


def test_unknown_feature_and_persona(atlas_path):
    with Atlas.open(atlas_path) as atlas:
        with pytest.raises(StoreError, match=r"no feature 12; the atlas has 12 features \(0-11\)"):
            atlas.feature(12)
        with pytest.raises(StoreError, match="no feature -1"):
            atlas.nearest_features(-1)
        with pytest.raises(StoreError, match="must be an integer"):
            atlas.feature("3")  # type: ignore[arg-type]
        with pytest.raises(StoreError, match="no persona 'pirat'; close names: pirate"):
            atlas.persona("pirat")
        with pytest.raises(StoreError, match="no persona 'x'"):
            atlas.features(persona="x")
        with pytest.raises(StoreError, match="no dynamics/flow; it has: none"):
            atlas.dynamics("flow")


def test_every_group_and_dataset_is_described(atlas_path):
    with h5py.File(atlas_path, "r") as file:
        for key in ("schema", "schema_version", "created", "sae_atlas_version", "model", "config"):
            assert key in file.attrs
        assert file.attrs["schema"] == ATLAS_KIND
        assert json.loads(file.attrs["config"]) == {"k": 1}
        assert json.loads(file["sae"].attrs["config"])["architecture"] == "jumprelu"
        missing = []
        file.visititems(
            lambda name, obj: missing.append(name) if not obj.attrs.get("description") else None
        )
        assert missing == []
        for spec in ATLAS_SPECS:
            assert spec.path in file, spec.path
            if spec.unit:
                assert file[spec.path].attrs["unit"] == spec.unit
        for group in ATLAS_GROUP_DESCRIPTIONS:
            if group not in ("dynamics", EXPERIMENTS_GROUP):  # optional groups
                assert file[group].attrs["description"] == ATLAS_GROUP_DESCRIPTIONS[group]
        assert file["sae/W_dec"].dtype == np.float32


PLAIN_READER = textwrap.dedent(
    """
    import sys
    import h5py, numpy as np, pandas as pd
    with h5py.File(sys.argv[1], "r") as f:
        group = f["features"]
        n = f.attrs["d_sae"]
        columns = {}
        for name, ds in group.items():
            if isinstance(ds, h5py.Dataset) and ds.ndim == 1 and len(ds) == n:
                assert ds.attrs["description"], name
                columns[name] = ds.asstr()[()] if ds.dtype.kind == "O" else ds[()]
        table = pd.DataFrame(columns)
        assert table.loc[0, "label"] == "feature 0 label", table.loc[0, "label"]
        assert table.loc[0, "tags"] == "persona:pirate"
        names = f["personas/name"].asstr()[()]
        top = f["features/top_persona_index"][0]
        assert list(names[top]) == ["pirate", "villain"]
        ex = f["features/examples"]
        start, count = f["features/example_start"][0], f["features/example_count"][0]
        assert list(ex["context"].asstr()[start:start + count])[0] == "ctx0 a «Arr»"
        descriptions = []
        f.visititems(lambda k, v: descriptions.append(v.attrs.get("description")))
        assert all(descriptions)
    leaked = [m for m in sys.modules if m.split(".")[0] in ("feature_store", "sae_atlas")]
    assert not leaked, leaked
    print("ok", len(table), len(table.columns))
    """
)


def test_plain_h5py_and_pandas_read_it(atlas_path, tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", PLAIN_READER, str(atlas_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok 12 ")


def test_h5dump_lists_it(atlas_path):
    if shutil.which("h5dump") is None:
        pytest.skip("h5dump not on PATH (Debian/Ubuntu: apt-get install hdf5-tools)")
    result = subprocess.run(
        ["h5dump", "-H", str(atlas_path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    for name in ('GROUP "features"', 'DATASET "W_dec"', 'GROUP "examples"', 'ATTRIBUTE "unit"'):
        assert name in result.stdout, name
    assert result.stdout.count('ATTRIBUTE "description"') >= len(ATLAS_SPECS)


def test_exception_mid_write_leaves_nothing(tmp_path, data):
    path = tmp_path / "atlas.h5"
    with (
        pytest.raises(RuntimeError, match="boom"),
        AtlasWriter(path, model="tiny", config={}, d_model=D_MODEL, d_sae=D_SAE) as writer,
    ):
        writer.write_sae(data["sae"], {})
        writer.write_features(data["features"], data["top_index"], data["top_score"])
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_incomplete_or_inconsistent_atlas_is_never_written(tmp_path, data):
    path = tmp_path / "atlas.h5"
    with (
        pytest.raises(StoreError, match="atlas incomplete; call write_examples, write_personas"),
        AtlasWriter(path, model="tiny", config={}, d_model=D_MODEL, d_sae=D_SAE) as writer,
    ):
        writer.write_sae(data["sae"], {})
        writer.write_features(data["features"], data["top_index"], data["top_score"])
    assert list(tmp_path.iterdir()) == []
    bad = dict(data, clusters=data["clusters"].iloc[:4])
    with pytest.raises(StoreError, match=r"features/cluster: ids \[4\] are not in clusters/id"):
        write_atlas(path, bad)
    bad_index = data["top_index"].copy()
    bad_index[3, 0] = 4
    with pytest.raises(StoreError, match=r"top_persona_index: values must be in \[-1, 4\)"):
        write_atlas(path, dict(data, top_index=bad_index))
    assert list(tmp_path.iterdir()) == []


def test_shape_and_column_errors_are_one_line(tmp_path, data):
    writer = AtlasWriter(tmp_path / "a.h5", model="m", config={}, d_model=D_MODEL, d_sae=D_SAE)
    with pytest.raises(StoreError, match=r"features table: has 11 rows, expected d_sae=12"):
        writer.write_features(data["features"].iloc[:11], data["top_index"], data["top_score"])
    with pytest.raises(StoreError, match=r"missing \['label'\], unexpected \['name'\]"):
        writer.write_clusters(data["clusters"].rename(columns={"label": "name"}))
    with pytest.raises(
        StoreError, match=r"sae/W_dec: has shape \(8, 12\), expected \[d_sae=12, d_model=8\]"
    ):
        writer.write_sae(dict(data["sae"], W_dec=data["sae"]["W_enc"]), {})
    with pytest.raises(StoreError, match=r"lack \['b_dec'\]"):
        writer.write_sae({k: v for k, v in data["sae"].items() if k != "b_dec"}, {})
    with pytest.raises(StoreError, match=r"extra parameters \['scale'\] need a description"):
        writer.write_sae(dict(data["sae"], scale=np.ones(3)), {})
    with pytest.raises(StoreError, match="features/cluster: needs int32 values, got float64"):
        bad = data["features"].assign(cluster=np.nan)
        writer.write_features(bad, data["top_index"], data["top_score"])
    with pytest.raises(StoreError, match=r"unknown kinds \['best'\]"):
        writer.write_examples(data["examples"].assign(kind="best"))
    with pytest.raises(StoreError, match=r"feature ids must be in \[0, 12\)"):
        writer.write_examples(data["examples"].assign(feature=12))
    with pytest.raises(StoreError, match=r"unknown kinds \['villain'\]"):
        writer.write_clusters(data["clusters"].assign(kind="villain"))
    with pytest.raises(StoreError, match="duplicate names"):
        writer.write_personas(
            data["personas"].assign(name="x"),
            vectors=data["vectors"],
            profiles=data["profiles"],
            coords=data["coords"],
        )
    with pytest.raises(
        StoreError,
        match=r"personas/coords: has shape \(4, 3\), expected \[n_personas=4, n_components=2\]",
    ):
        writer.write_persona_space(
            assistant_axis=np.ones(D_MODEL),
            center=np.zeros(D_MODEL),
            components=np.eye(2, D_MODEL),
            explained_variance=[0.5, 0.3],
        )
        writer.write_personas(
            data["personas"],
            vectors=data["vectors"],
            profiles=data["profiles"],
            coords=data["coords"],
        )
    writer.write_personas(  # the failed call above wrote nothing: a corrected one succeeds
        data["personas"],
        vectors=data["vectors"],
        profiles=data["profiles"],
        coords=data["coords"][:, :2],
    )
    with pytest.raises(StoreError, match="persona_space/ is already written"):
        writer.write_persona_space(
            assistant_axis=np.ones(D_MODEL),
            center=np.zeros(D_MODEL),
            components=np.eye(2, D_MODEL),
            explained_variance=[0.5, 0.3],
        )
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_existing_atlas_is_replaced_only_on_request(atlas_path, data):
    with pytest.raises(StoreError, match="already exists; pass overwrite=True"):
        AtlasWriter(atlas_path, model="m", config={}, d_model=D_MODEL, d_sae=D_SAE)
    before = atlas_path.read_bytes()
    with (
        pytest.raises(RuntimeError),
        AtlasWriter(atlas_path, model="m", config={}, d_model=D_MODEL, d_sae=D_SAE, overwrite=True),
    ):
        raise RuntimeError("crash")
    assert atlas_path.read_bytes() == before
    write_atlas(atlas_path, atlas_data(seed=1), overwrite=True)
    with Atlas.open(atlas_path) as atlas:
        np.testing.assert_array_equal(
            atlas.feature(3).decoder, atlas_data(seed=1)["sae"]["W_dec"][3]
        )
    assert sorted(p.name for p in atlas_path.parent.iterdir()) == ["atlas.h5"]


def test_extend_adds_dynamics(atlas_path):
    transitions = np.array([[0.9, 0.1], [0.2, 0.8]])
    attractors = pd.DataFrame({"region": ["assistant", "pirate"], "basin_size": [10, 3]})
    with AtlasWriter.extend(atlas_path) as writer:
        writer.write_dynamics(
            "transition_matrix", transitions, "P(region j at t+1 | region i at t)"
        )
        writer.write_dynamics(
            "attractors",
            attractors,
            "regions rollouts flow into and stay in",
            column_descriptions={"region": "name of the region", "basin_size": "starting personas"},
            column_units={"basin_size": "personas"},
        )
        with pytest.raises(StoreError, match=r"columns \['x'\] need a description"):
            writer.write_dynamics("bad", pd.DataFrame({"x": [1]}), "bad")
        with pytest.raises(StoreError, match="features/ is already written"):
            writer.write_features(pd.DataFrame(), np.zeros((D_SAE, 1)), np.zeros((D_SAE, 1)))
    with Atlas.open(atlas_path) as atlas:
        assert atlas.dynamics_names() == ["transition_matrix", "attractors"]
        np.testing.assert_allclose(atlas.dynamics("transition_matrix"), transitions)
        pd.testing.assert_frame_equal(atlas.dynamics("attractors"), attractors)
        assert atlas.info()["dynamics"] == ["transition_matrix", "attractors"]
        assert atlas.feature(0).label == "feature 0 label"
        assert atlas.attrs["modified"]
    with h5py.File(atlas_path, "r") as file:
        assert file["dynamics/attractors/basin_size"].attrs["unit"] == "personas"
        assert file["dynamics"].attrs["description"]
    assert sorted(p.name for p in atlas_path.parent.iterdir()) == ["atlas.h5"]


def organized(summary: dict) -> dict:
    return {"attrs": {"organize_summary": json.dumps(summary)}}


def test_default_persona_is_the_recorded_one_else_the_catalogue_rule(tmp_path, data):
    def default(name: str, categories: list[str], **kwargs) -> str:
        changed = {**data, "personas": data["personas"].assign(category=categories)}
        with Atlas.open(write_atlas(tmp_path / f"{name}.h5", changed, **kwargs)) as atlas:
            return atlas.default_persona()

    assert default("plain", ["default", "fiction", "fiction", "art"]) == "assistant"
    assert default("named", ["default", "fiction", "default", "art"]) == "assistant"
    assert default("first", ["fiction", "default", "fiction", "default"]) == "pirate"
    recorded = organized({"persona_space": {"default_persona": "poet"}})
    assert default("recorded", ["default", "fiction", "fiction", "art"], **recorded) == "poet"
    with pytest.raises(StoreError, match="no persona of category 'default'; rebuild"):
        default("none", ["fiction", "fiction", "fiction", "art"])
    absent = organized({"persona_space": {"default_persona": "nobody"}})
    with pytest.raises(StoreError, match=r"'nobody' .* is not among its personas"):
        default("absent", ["default", "fiction", "fiction", "art"], **absent)


def test_regions_reads_the_dynamics_stage_tables(atlas_path):
    with Atlas.open(atlas_path) as atlas, pytest.raises(StoreError, match="no dynamics/regions"):
        atlas.regions()
    table = pd.DataFrame(
        {
            "id": [0, 1],
            "name": ["assistant", "pirate+1"],
            "personas": ["assistant;poet", "pirate"],
            "stationary": [0.7, 0.3],
        }
    )
    centroids = np.array([[0.5, -1.0], [2.0, 0.25]], dtype=np.float32)
    with AtlasWriter.extend(atlas_path) as writer:
        write_entry(writer, "regions", table)
        write_entry(writer, "region_centroids", centroids)
    with Atlas.open(atlas_path) as atlas:
        regions = atlas.regions()
    assert regions["personas"].tolist() == [["assistant", "poet"], ["pirate"]]
    assert regions["name"].tolist() == ["assistant", "pirate+1"]
    np.testing.assert_array_equal(np.stack(regions["centroid"].to_list()), centroids)
    pd.testing.assert_frame_equal(
        regions.drop(columns=["personas", "centroid"]), table.drop(columns=["personas"])
    )
    with AtlasWriter.extend(atlas_path) as writer:
        writer.write_dynamics("regions", np.arange(2), "not a table")
    with Atlas.open(atlas_path) as atlas, pytest.raises(StoreError, match="not a table"):
        atlas.regions()


def test_bad_files_give_one_line_errors(atlas_path, tmp_path):
    with pytest.raises(StoreError, match="no such file"):
        Atlas.open(tmp_path / "missing.h5")
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5\n")
    with pytest.raises(StoreError, match=r"not a readable HDF5 file.*truncated or damaged"):
        Atlas.open(text)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(atlas_path.read_bytes()[: atlas_path.stat().st_size // 2])
    with pytest.raises(StoreError, match="truncated or damaged") as error:
        Atlas.open(truncated)
    assert "\n" not in str(error.value)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as file:
        file.attrs["schema"] = "sae-atlas/activations"
    with pytest.raises(StoreError, match="is not a sae-atlas/atlas file"):
        Atlas.open(other)
    with h5py.File(atlas_path, "r+") as file:
        file.attrs["schema_version"] = 99
    with pytest.raises(StoreError, match="schema version 99, this sae-atlas reads version 1"):
        Atlas.open(atlas_path)


def test_open_is_lazy_and_read_only(atlas_path):
    atlas = Atlas.open(atlas_path)
    assert atlas.d_sae == D_SAE and atlas._columns == {} and atlas._datasets == {}
    with pytest.raises((OSError, ValueError)):
        atlas.file["features/density"][0] = 5.0
    with pytest.raises(KeyError, match="no write intent"):
        atlas.file.attrs["model"] = "x"
    atlas.feature(0)
    assert "features/label" not in atlas._columns  # text columns of one row are not cached
    atlas.close()
    with pytest.raises(StoreError, match="closed"):
        atlas.feature(1)
