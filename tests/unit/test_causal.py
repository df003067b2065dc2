"""The puppeteer's causal test on the tiny model: every condition answered and paired by prompt,
KL zero for the unedited model and positive under an edit, effects for every edit and score
with BH q-values; the edits do what they say."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sae_lens import StandardSAE, StandardSAEConfig

from feature_store.atlas import Atlas
from sae_atlas.classifier import train_classifier
from sae_atlas.config import CorpusConfig, load_config
from sae_atlas.model import intervene, sampling_model
from sae_atlas.personas import load_catalogue
from sae_atlas.stages.label.causal import (
    SCORES,
    CausalSetup,
    Prompt,
    causal_prompts,
    puppeteer_causal,
)
from sae_atlas.stages.label.edits import EDITS, add_features, cap_features, resample_features
from sae_atlas.stages.label.figures import causal_figure
from sae_atlas.stages.label.records import CAUSAL_COLUMNS, CAUSAL_DESCRIPTIONS, causal_tables
from sae_atlas.stages.record import record_results
from sae_atlas.stages.splits import catalogue_plan
from sae_atlas.testing import synthetic_atlas, write_atlas

HOOK = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def sae():
    sae = StandardSAE(StandardSAEConfig(d_in=32, d_sae=12))
    with torch.no_grad():
        sae.b_enc.fill_(0.1)
    sae.cfg.metadata.hook_name = HOOK
    return sae


def test_edits_change_the_residual_as_described(tiny, sae):
    tokens = torch.tensor([[1, 5, 7, 9]])
    base = tiny.bridge.run_with_cache(tokens, names_filter=[HOOK], stop_at_layer=2)[1][HOOK]
    scale = np.arange(12, dtype=np.float32)
    with intervene(tiny, [add_features(HOOK, sae, [2, 3], scale)]):
        added = tiny.bridge.run_with_cache(tokens, names_filter=[HOOK], stop_at_layer=2)[1][HOOK]
    expected = 2 * sae.W_dec[2] + 3 * sae.W_dec[3]
    assert torch.allclose(added - base, expected.expand_as(base), atol=1e-4)
    bank = np.zeros((4, 12), np.float32)  # resampling from all-zero codes is zero ablation
    with intervene(tiny, [resample_features(HOOK, sae, [2, 3], bank, 0)]):
        resampled = tiny.bridge.run_with_cache(tokens, names_filter=[HOOK], stop_at_layer=2)[1][
            HOOK
        ]
    codes = sae.encode(base)[..., [2, 3]]
    assert torch.allclose(base - resampled, codes @ sae.W_dec[[2, 3]], atol=1e-4)


def _resid(tiny, tokens, interventions=()):
    with intervene(tiny, list(interventions)):
        return tiny.bridge.run_with_cache(tokens, names_filter=[HOOK], stop_at_layer=2)[1][HOOK]


def test_cap_changes_only_codes_above_the_ceiling(tiny, sae):
    tokens = torch.tensor([[1, 5, 7, 9, 11, 13, 17, 19, 23, 29]])
    base = _resid(tiny, tokens)
    codes = sae.encode(base)[0][:, [2, 3]]
    ceiling = np.zeros(12, np.float32)
    ceiling[[2, 3]] = codes.median(0).values.detach().numpy()
    capped = _resid(tiny, tokens, [cap_features(HOOK, sae, [2, 3], ceiling)])[0]
    excess = (codes - torch.from_numpy(ceiling[[2, 3]])).clamp(min=0)
    above = (excess > 0).any(1)
    assert above.any() and (~above).any()  # both kinds of position are present
    assert torch.equal(capped[~above], base[0][~above])  # at or below the cap: untouched
    assert (capped[above] - base[0][above]).norm(dim=1).min() > 1e-4  # above: moved
    assert torch.allclose(base[0] - capped, excess @ sae.W_dec[[2, 3]], atol=1e-4)


def test_causal_run_pairs_every_condition(tiny, sae, tmp_path):
    texts = ["arr the sea", "ahoy ship", "the cake", "a nice cake"] * 4
    personas = ["pirate", "pirate", "chef", "chef"] * 4
    classifier = train_classifier(texts, personas, ["train"] * 8 + ["heldout"] * 8)
    setup = CausalSetup(
        handle=tiny,
        model=sampling_model(tiny, "float32"),
        sae=sae,
        hook=HOOK,
        classifier=classifier,
        axis=np.ones(32, np.float32),
        bank=np.abs(np.random.default_rng(0).normal(size=(16, 12))).astype(np.float32),
        scale=np.ones(12, np.float32),
        ceiling=np.full(12, 0.05, np.float32),
        sampling=CorpusConfig(max_new_tokens=4, batch_size=8, dtype="float32"),
    )
    prompts = [
        Prompt("pirate", "You are a pirate.", "q1", "Hello?", 1),
        Prompt("chef", "You are a chef.", "q2", "Lunch?", 2),
        Prompt("chef", None, "q3", "Dinner?", 3),
    ]
    scored, effects = puppeteer_causal(setup, prompts, np.array([0, 1]), np.array([[2, 3], [4, 5]]))
    assert len(scored) == (1 + len(EDITS) * 3) * len(prompts)
    conditions = 1 + len(EDITS) * 3
    assert (scored.groupby("condition")["prompt"].apply(sorted) == [[0, 1, 2]] * conditions).all()
    assert (scored.loc[scored["condition"] == "unedited", "kl"] == 0).all()
    assert (scored.loc[scored["condition"] == "zero:puppeteer", "kl"] > 0).all()
    assert len(effects) == len(EDITS) * len(SCORES)
    assert effects["q_value"].between(0, 1).all()
    figure = causal_figure(effects)
    assert len(figure.axes) == len(SCORES)
    tables = causal_tables(
        effects, scored, [p.persona for p in prompts], np.array([0, 1]), np.array([[2, 3], [4, 5]])
    )
    assert tables["answers"]["persona"].tolist()[:3] == ["pirate", "chef", "chef"]
    atlas = write_atlas(tmp_path / "atlas.h5", synthetic_atlas(64, 16, 4, 2, 0))
    record_results(atlas, "puppeteer_causal", tables, {}, descriptions=CAUSAL_DESCRIPTIONS,
                   columns=CAUSAL_COLUMNS, script="test", config={}, seconds=0.0)  # fmt: skip
    with Atlas.open(atlas) as reader:  # every table and column the test writes is described
        stored = reader.experiment("puppeteer_causal").tables["effects"]
        assert stored["difference"].tolist() == effects["difference"].tolist()


def test_causal_prompts_are_heldout_persona_runs():
    catalogue = load_catalogue()
    config = load_config("quick").corpus
    prompts = causal_prompts(catalogue, config, n_personas=10, n_questions=3)
    plan = catalogue_plan(catalogue, config)
    assert [p.persona for p in prompts[::3]][: len(plan.heldout_personas)] == list(
        plan.heldout_personas
    )
    heldout = {q.id for q in catalogue.split("heldout")}
    for prompt in prompts:
        assert prompt.question_id in heldout
        persona = catalogue.persona(prompt.persona)
        assert persona.prompts.index(prompt.system_prompt) in plan.pools[prompt.persona]["heldout"]
