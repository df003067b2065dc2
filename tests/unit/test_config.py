from __future__ import annotations

import pytest

from sae_atlas.config import (
    BuildConfig,
    HarvestConfig,
    dump_config,
    from_dict,
    load_config,
    on_device,
)
from sae_atlas.errors import SaeAtlasError


def test_profiles_load_and_round_trip(tmp_path):
    for profile in ("quick", "full"):
        config = load_config(profile)
        path = tmp_path / f"{profile}.yaml"
        path.write_text(dump_config(config))
        assert load_config(str(path)) == config
    assert load_config("quick").corpus.personas[0] == "assistant"


def test_bad_configs_name_the_key(tmp_path):
    with pytest.raises(SaeAtlasError, match=r"config.harvest: unknown key\(s\) \['hook'\]"):
        from_dict(BuildConfig, {"harvest": {"hook": "x"}})
    with pytest.raises(SaeAtlasError, match="unknown profile 'huge'"):
        load_config("huge")
    bad = tmp_path / "bad.yaml"
    bad.write_text("harvest: [unclosed")
    with pytest.raises(SaeAtlasError, match="not valid YAML"):
        load_config(str(bad))
    assert from_dict(HarvestConfig, {"hooks": "blocks.1.hook_resid_post"}).hooks == (
        "blocks.1.hook_resid_post",
    )


def test_on_device_reaches_every_torch_stage():
    config = on_device(load_config("quick"), "cuda:1", "bfloat16")
    assert config.model.device == config.train.device == config.label.device == "cuda:1"
    assert config.model.dtype == config.corpus.dtype == config.dynamics.dtype == "bfloat16"
    assert config.train.dtype == "bfloat16"
    assert on_device(config, dtype="float16").train.dtype == "bfloat16"  # sae-lens autocast
    assert on_device(config, dtype="float32").train.dtype == "float32"
    assert on_device(config) == config
