from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from feature_store.errors import StoreError
from feature_store.labels import (
    EXAMPLE_COLUMNS,
    FEATURE_COLUMNS,
    PERSONA_COLUMNS,
    Labels,
    load_labels,
    save_labels,
)


def synthetic_labels(d_sae: int = 6, n_personas: int = 3, d_model: int = 4) -> Labels:
    rng = np.random.default_rng(0)
    features = pd.DataFrame({c: rng.random(d_sae) for c in FEATURE_COLUMNS})
    for column in ("tags", "label", "top_tokens", "pos_logits", "neg_logits"):
        features[column] = [f"{column} {i}" for i in range(d_sae)]
    examples = pd.DataFrame(
        {
            "feature": [0, 0, 3],
            "kind": ["top", "quantile", "top"],
            "rank": [0, 0, 0],
            "doc": [1, 2, 3],
            "pos": [4, 5, 6],
            "activation": [1.0, 0.5, 2.0],
            "context": ["a [[b]] c", "d [[e]]", "[[f]] g"],
        }
    )
    personas = pd.DataFrame(
        {
            "name": ["assistant", "pirate", "villain"][:n_personas],
            "category": ["default", "fictional", "dark"][:n_personas],
            "prompts": ['["You are an assistant."]'] * n_personas,
            "n_responses": [10] * n_personas,
        }
    )
    assert set(examples) == set(EXAMPLE_COLUMNS) and set(personas) == set(PERSONA_COLUMNS)
    return Labels(
        hook="blocks.1.hook_resid_post",
        model="tiny",
        features=features,
        top_persona_index=np.full((d_sae, 2), -1, dtype=np.int32),
        top_persona_score=np.full((d_sae, 2), np.nan, dtype=np.float32),
        examples=examples,
        personas=personas,
        persona_vectors=rng.random((n_personas, d_model)).astype(np.float32),
        persona_profiles=rng.random((n_personas, d_sae)).astype(np.float32),
        default_persona="assistant",
        summary={"share_auroc_0.9": 0.5},
        config={"seed": 0},
    )


def test_round_trip(tmp_path):
    labels = synthetic_labels()
    save_labels(labels, tmp_path / "labels.h5")
    back = load_labels(tmp_path / "labels.h5")
    pd.testing.assert_frame_equal(back.features, labels.features, check_dtype=False)
    pd.testing.assert_frame_equal(back.examples, labels.examples, check_dtype=False)
    pd.testing.assert_frame_equal(back.personas, labels.personas, check_dtype=False)
    np.testing.assert_array_equal(back.persona_profiles, labels.persona_profiles)
    assert (back.summary, back.config, back.default_persona) == (
        labels.summary,
        labels.config,
        "assistant",
    )
    assert not (tmp_path / "labels.h5.tmp").exists()


def test_wrong_file_kind(tmp_path):
    from feature_store.transcripts import TranscriptWriter
    from sae_atlas.testing import random_transcripts

    writer = TranscriptWriter.open(tmp_path / "t.h5", model="m", config={})
    writer.append(random_transcripts(2))
    writer.finish()
    with pytest.raises(StoreError, match="not a sae-atlas/labels file"):
        load_labels(tmp_path / "t.h5")


def test_the_storage_package_imports_no_model_code():
    modules = "feature_store.labels, feature_store.atlas, feature_store.activations"
    code = (
        f"import sys, {modules}, feature_store.transcripts\n"
        "heavy = {'torch', 'sae_atlas', 'sae_lens', 'transformers', 'sklearn', 'scipy'}\n"
        "print(sorted(heavy & {name.split('.')[0] for name in sys.modules}))"
    )
    root = Path(__file__).parents[2]
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True
    )
    assert result.stdout.strip() == "[]"
