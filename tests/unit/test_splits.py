"""Honest splits: disjoint system prompts and questions between train and held-out, the quick
profile's job count kept, seeded and recorded held-out personas, the legacy split on request."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from sae_atlas.config import load_config
from sae_atlas.errors import SaeAtlasError
from sae_atlas.personas import load_catalogue
from sae_atlas.stages.corpus import corpus_jobs, corpus_stage_config
from sae_atlas.stages.splits import catalogue_plan, check_disjoint, shared_between_splits


@pytest.fixture(scope="module")
def catalogue():
    return load_catalogue()


@pytest.fixture(scope="module")
def quick():
    return load_config("quick").corpus


def test_quick_profile_shares_no_prompt_and_no_question(catalogue, quick):
    jobs = corpus_jobs(catalogue, quick)
    assert shared_between_splits(jobs) == {"questions": [], "system_prompts": []}
    legacy = corpus_jobs(catalogue, replace(quick, heldout_variant_share=0.0))
    assert len(legacy) == len(jobs)  # the same cost as the legacy corpus
    assert shared_between_splits(legacy)["system_prompts"]  # the check can fail
    with pytest.raises(SaeAtlasError, match="shares 0 question"):
        check_disjoint(legacy)


def test_each_question_gets_variants_from_its_split_pool(catalogue, quick):
    jobs = corpus_jobs(catalogue, quick)
    plan = catalogue_plan(catalogue, quick)
    persona_jobs = [j for j in jobs if j.condition == "persona"]
    per_question = Counter((j.persona, j.question_id) for j in persona_jobs)
    assert set(per_question.values()) == {quick.variants}
    for job in persona_jobs:
        assert job.variant in plan.pools[job.persona][job.split]
    pirate = {(j.split, j.variant) for j in persona_jobs if j.persona == "pirate"}
    for split in ("train", "heldout"):  # the pool is cycled: every prompt of it is used
        assert {v for s, v in pirate if s == split} == set(plan.pools["pirate"][split])
    default = [j for j in jobs if j.condition == "default"]
    assert len({j.system_prompt for j in default if j.split == "heldout"}) > 1


def test_plan_is_seeded_recorded_and_holds_out_personas(catalogue, quick):
    plan = catalogue_plan(catalogue, quick)
    assert plan == catalogue_plan(catalogue, quick)
    n_others = len(quick.personas) - 1
    assert len(plan.heldout_personas) == round(quick.heldout_personas * n_others)
    assert "assistant" not in plan.heldout_personas
    other = catalogue_plan(catalogue, replace(quick, seed=1))
    assert other.heldout_personas != plan.heldout_personas or other.pools != plan.pools
    recorded = corpus_stage_config(catalogue, quick, 1)["split_plan"]
    assert recorded["heldout_personas"] == list(plan.heldout_personas)
    none = catalogue_plan(catalogue, replace(quick, heldout_personas=0.0))
    assert none.heldout_personas == ()


def test_bad_shares_are_refused(catalogue, quick):
    with pytest.raises(SaeAtlasError, match="heldout_variant_share"):
        corpus_jobs(catalogue, replace(quick, heldout_variant_share=1.0))
    with pytest.raises(SaeAtlasError, match="heldout_personas"):
        corpus_jobs(catalogue, replace(quick, heldout_personas=-0.1))
