from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from feature_store.schema import ROLE_CODE
from feature_store.transcripts import TranscriptStore
from sae_atlas.config import CorpusConfig
from sae_atlas.errors import SaeAtlasError
from sae_atlas.personas import load_catalogue
from sae_atlas.stages.corpus import (
    build_corpus,
    corpus_jobs,
    corpus_responses,
    response_text,
)

CONFIG = CorpusConfig(
    personas=("pirate", "pirate_tag", "chef"),
    n_questions=2,
    variants=2,
    max_new_tokens=8,
    batch_size=8,
    dtype="float32",
)


@pytest.fixture(scope="module")
def catalogue():
    return load_catalogue()


def test_jobs_cover_conditions_with_provenance(catalogue):
    jobs = corpus_jobs(catalogue, CONFIG)
    assert jobs == corpus_jobs(catalogue, CONFIG)
    by_condition = {c: [j for j in jobs if j.condition == c] for c in ("persona", "default")}
    assert len(by_condition["persona"]) == 3 * 2 * 4  # personas x variants x (2 train + 2 heldout)
    assert len(jobs) == 24 + 4 + 4 + 8  # + pirate_tag unwrapped: variants x questions
    assert {j.split for j in jobs} == {"train", "heldout"}
    assert len({j.seed for j in jobs}) == len(jobs)
    tagged = [j for j in by_condition["persona"] if j.persona == "pirate_tag"]
    assert all(j.user_message.startswith("<pirate>") for j in tagged)
    assert all(j.user_message.endswith("</pirate>") for j in tagged)
    unwrapped = [j for j in jobs if j.condition == "unwrapped"]
    assert {j.persona for j in unwrapped} == {"pirate_tag"}
    same_prompt = {(j.variant, j.question_id): j for j in tagged}
    for job in unwrapped:
        wrapped = same_prompt[(job.variant, job.question_id)]
        assert job.system_prompt == wrapped.system_prompt and job.split == wrapped.split
        assert wrapped.user_message == f"<pirate>{job.user_message}</pirate>"
    default = by_condition["default"]
    assert all(j.persona == "assistant" and j.system_prompt is not None for j in default)
    assert len({j.variant for j in default}) == len(default)  # variants cycle over questions
    no_system = [j for j in jobs if j.condition == "no_system"]
    assert all(j.system_prompt is None and j.variant == -1 for j in no_system)
    assert no_system[0].messages() == [{"role": "user", "content": no_system[0].user_message}]
    samples = corpus_jobs(catalogue, replace(CONFIG, samples=2, conditions=("no_system",)))
    assert len(samples) == 8 and len({j.seed for j in samples}) == 8


def test_bad_settings_are_actionable(catalogue):
    with pytest.raises(SaeAtlasError, match=r"corpus\.conditions"):
        corpus_jobs(catalogue, replace(CONFIG, conditions=("persona", "bogus")))
    with pytest.raises(SaeAtlasError, match=r"no sampled condition"):
        corpus_jobs(catalogue, replace(CONFIG, conditions=("plain_control",)))
    with pytest.raises(SaeAtlasError, match=r"corpus\.dtype"):
        corpus_jobs(catalogue, replace(CONFIG, dtype="int8"))


def test_the_recorded_config_does_not_depend_on_where_the_catalogue_was_read(tmp_path):
    from sae_atlas.personas.catalogue import shipped_data_dir
    from sae_atlas.stages.corpus import corpus_stage_config

    copy = tmp_path / "personas.yaml"
    copy.write_text((shipped_data_dir() / "personas.yaml").read_text())
    shipped, moved = load_catalogue(), load_catalogue(copy)
    assert shipped.source != moved.source
    assert corpus_stage_config(shipped, CONFIG, 7) == corpus_stage_config(moved, CONFIG, 7)


def test_store_keeps_provenance_controls_and_roles(tiny, catalogue, tmp_path):
    config = replace(CONFIG, personas=("pirate_tag",), variants=1)
    result = build_corpus(catalogue, tmp_path / "t.h5", config, handle=tiny)
    store = TranscriptStore(result.path)
    assert store.complete and store.model == "tiny-llama"
    assert store.config["catalogue_data"]["personas"][0]["name"] == "assistant"
    assert result.n_jobs == 4 + 4 + 4 + 4 and result.n_transcripts == 3 * result.n_jobs
    rows = store.provenance()
    transcripts = list(store)
    jobs = corpus_jobs(catalogue, config)
    sampled = rows[rows.condition.isin(["persona", "default", "no_system", "unwrapped"])]
    assert list(sampled.question_id) == [j.question_id for j in jobs]
    assert list(sampled.split) == [j.split for j in jobs]
    assert list(sampled.seed) == [j.seed for j in jobs]
    assert list(sampled.variant) == [j.variant for j in jobs]
    for condition, role in (("user_control", "user"), ("plain_control", "plain")):
        controls = rows[rows.condition == condition]
        assert len(controls) == len(jobs)
        for index, control in controls.iterrows():
            source = transcripts[int(control.source)]
            assert (control.persona, control.question_id, control.seed) == (
                source.persona,
                source.question_id,
                source.seed,
            )
            text = response_text(tiny, source)
            assert response_text(tiny, transcripts[index], role) == text
    first = transcripts[0]
    assert set(np.unique(first.roles)) >= {ROLE_CODE[r] for r in ("system", "user", "assistant")}
    assert response_text(tiny, first, "user").startswith("<pirate>")
    frame = corpus_responses(result.path, tiny)
    persona_jobs = [j for j in jobs if j.condition != "unwrapped"]  # only a trigger control
    assert list(frame.seed) == [j.seed for j in persona_jobs]


def test_resume_matches_an_uninterrupted_run(tiny, catalogue, tmp_path):
    config = replace(CONFIG, personas=("pirate",), variants=1, batch_size=3)
    whole = build_corpus(catalogue, tmp_path / "whole.h5", config, handle=tiny)

    def stop_after_first_batch(n_jobs):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_corpus(
            catalogue, tmp_path / "part.h5", config, handle=tiny, progress=stop_after_first_batch
        )
    assert len(TranscriptStore(tmp_path / "part.h5")) == 3 * 3
    resumed = build_corpus(catalogue, tmp_path / "part.h5", config, handle=tiny)
    assert not resumed.skipped
    for path in (tmp_path / "whole.h5", tmp_path / "part.h5"):
        assert TranscriptStore(path).complete
    a, b = TranscriptStore(whole.path), TranscriptStore(resumed.path)
    assert a.provenance().equals(b.provenance())
    for key, values in a.token_table().items():
        np.testing.assert_array_equal(values, b.token_table()[key])
    again = build_corpus(catalogue, tmp_path / "part.h5", config, handle=tiny)
    assert again.skipped and again.n_transcripts == len(b)
