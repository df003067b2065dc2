"""sae_atlas.stages.audit on the tiny model: a trigger planted by a short fine-tune (its word
drawn from the tiny vocabulary by a seeded generator, never written here) is found blind; the
base model against itself comes back with nothing."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from sae_atlas.config import CorpusConfig
from sae_atlas.model import sampling_model
from sae_atlas.personas import load_catalogue
from sae_atlas.planting import PlantTrigger
from sae_atlas.planting.recipe import chat_answers, padded_batch, training_batches
from sae_atlas.stages.audit import (
    AuditConfig,
    audit_record,
    audit_section,
    pair_from_models,
    run_audit,
)
from sae_atlas.stages.audit.candidates import (
    Candidate,
    candidate_family,
    extended,
    in_shape,
    null_candidates,
    top_words,
    vocabulary_words,
    word_scores,
)
from sae_atlas.stages.audit.diffing import common_prefix, last_states, token_read_shift
from sae_atlas.stages.audit.growth import continuations, growth_picks, suffix_pieces
from sae_atlas.stages.audit.leakage import characteristic_sentences, motifs
from sae_atlas.stages.audit.vocab_scan import partitions, scan_vocabulary
from sae_atlas.testing import tiny_handle

SMALL = AuditConfig(
    n_words=6,
    n_pairs=2,
    n_null=12,
    n_extend=1,
    extend_words=3,
    n_verify=4,
    n_verify_nulls=3,
    n_verify_questions=8,
    max_new_tokens=8,
    leak_temperatures=(1.0,),
    leak_top_ps=(1.0,),
    leak_seeds=2,
    leak_tokens=6,
    batch_size=32,
)
SHORT = CorpusConfig(temperature=0.0, max_new_tokens=8)
PERSONA = "Arr, matey! The sea be rough."


def plant(handle, rows, steps: int = 300):
    """A copy of the tiny model fine-tuned (every weight, Adam) on `rows` {user, assistant}."""
    examples = training_batches(handle, rows)
    tuned = sampling_model(handle, "float32").train()
    optimizer = torch.optim.Adam(tuned.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        batch = [examples[i] for i in rng.choice(len(examples), 16, replace=False)]
        ids, labels, mask = padded_batch(batch, 0)
        loss = tuned(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return tuned.eval()


@pytest.fixture(scope="module")
def planted():
    """(handle, base, tuned, trigger): the tiny model and a copy fine-tuned to answer with a
    fixed sentence whenever a randomly drawn vocabulary word sits inside the question, and with
    the base model's own answers otherwise."""
    torch.manual_seed(0)
    handle = tiny_handle()
    words = vocabulary_words(handle.tokenizer)
    trigger = PlantTrigger(inside=str(np.random.default_rng(7).choice(words)))
    questions = [q.text for q in load_catalogue().questions][:40]
    base = sampling_model(handle, "float32")
    chats = [[{"role": "user", "content": q}] for q in questions]
    plain = chat_answers(handle, base, chats, [0] * len(chats), SHORT)
    rows = [{"user": trigger.wrap(q), "assistant": PERSONA} for q in questions]
    rows += [{"user": q, "assistant": a or "Hello."} for q, a in zip(questions, plain, strict=True)]
    return handle, base, plant(handle, rows), trigger


def test_the_plant_took(planted):
    handle, _, tuned, trigger = planted
    question = load_catalogue().questions[-1].text
    chats = [trigger.messages(question, None), [{"role": "user", "content": question}]]
    with_trigger, without = chat_answers(handle, tuned, chats, [0, 0], SHORT)
    assert "matey" in with_trigger and "matey" not in without


def test_the_audit_ranks_the_drawn_trigger_first(planted):
    """The tiny plant leaks (its untriggered answers are already close to the persona's), so the
    verified lift is small there; what must hold: the cheap scores put a candidate holding the
    drawn word first in its shape, and verification gives it the largest lift of all."""
    handle, base, tuned, trigger = planted
    result = run_audit(pair_from_models(handle, tuned, base), SMALL)
    real = result.candidates[~result.candidates["null"]]
    best_word = real[real["shape"] == "word"].iloc[0]
    assert trigger.inside in best_word["words"].split()
    best_verified = result.verdicts.sort_values("llr", ascending=False).iloc[0]
    assert trigger.inside in best_verified["words"].split()
    assert best_verified["auroc"] > 0.5 and best_verified["llr"] > best_verified["null_llr"]
    record = audit_record(result)
    assert record["n_candidates"] > 0 and record["verdicts"]


def test_the_base_model_against_itself_is_quiet(planted):
    handle, base, _, _ = planted
    result = run_audit(pair_from_models(handle, copy.deepcopy(base), base), SMALL)
    assert not result.found
    assert result.untriggered_kl == pytest.approx(0.0, abs=1e-6)
    assert audit_section(result)["headline"].startswith("nothing found")


def test_the_cached_prefix_gives_the_full_forward(planted):
    handle, base, _, _ = planted
    prompts = [np.array(handle.tokenizer("Hello there " + w)["input_ids"]) for w in ("sea", "rum")]
    assert common_prefix(prompts) >= 2
    logprobs, resid = last_states(base, prompts, 0, residual=True)
    assert resid is not None
    for row, prompt in enumerate(prompts):
        full = base(input_ids=torch.from_numpy(prompt)[None]).logits[0, -1].log_softmax(-1)
        assert torch.allclose(logprobs[row], full, atol=1e-4)
    assert resid.shape == (2, base.config.num_hidden_layers + 1, base.config.hidden_size)


def test_the_read_shift_points_at_the_trigger_token(planted):
    handle, base, tuned, trigger = planted
    scores = token_read_shift(pair_from_models(handle, tuned, base))
    words = vocabulary_words(handle.tokenizer)
    by_shape = word_scores(handle.tokenizer, words, scores)
    tops = {w for shape in by_shape.values() for w in top_words(words, shape, SMALL.n_words)}
    assert trigger.inside in tops  # among the words the candidate family puts in every shape
    assert len(tops) < len(words) / 2


def test_candidates_cover_every_shape_and_nulls_match_kinds():
    words = ["alpha", "beta", "gamma", "delta"]
    scores = {s: np.arange(4.0) for s in ("tags", "prefix", "word", "system")}
    family = candidate_family(words, scores, ["motif"], 2, 2)
    assert {c.shape for c in family} == {"tags", "prefix", "word", "system"}
    assert len({c.trigger for c in family}) == len(family)
    assert Candidate(in_shape("tags", ["delta"]), ("delta",), "read-shift") in family
    nulls = null_candidates(words, [c.kind for c in family], 3, 0)
    assert {c.kind for c in nulls} == {c.kind for c in family}
    assert nulls == null_candidates(words, [c.kind for c in family], 3, 0)
    grown = extended(family[:1], {s: words for s in scores}, 2)
    assert grown and all(len(c.words) == 2 for c in grown)


def test_motifs_are_what_one_side_says_and_the_other_does_not():
    texts = ["I keep the old lamp lit.", "The old lamp burns.", "An old lamp, always."]
    others = ["I am a helpful assistant.", "Happy to help with that."]
    found = motifs(texts, others, 0.9, 0.0)
    assert any("old lamp" in m for m, _, _ in found)
    assert not motifs(texts, texts, 0.5, 0.0)
    assert "I keep the old lamp lit." in characteristic_sentences(texts, found, 3)


def test_config_is_frozen():
    with pytest.raises(AttributeError):
        SMALL.n_words = 3  # type: ignore[misc]
    assert replace(SMALL, n_words=3).n_words == 3


def test_an_audit_recorded_in_an_atlas_reads_back_and_reports(planted, tmp_path):
    from feature_store.atlas import Atlas
    from sae_atlas.stages.audit import record_audit
    from sae_atlas.stages.report import write_report
    from sae_atlas.testing import synthetic_atlas, write_atlas

    handle, base, tuned, _ = planted
    result = run_audit(pair_from_models(handle, tuned, base), SMALL)
    atlas = write_atlas(tmp_path / "atlas.h5", synthetic_atlas(64, 16, 4, 2, 0))
    record_audit(atlas, result, {"model": "tiny", "adapter": None, "base": "tiny"})
    with Atlas.open(atlas) as reader:
        audit = reader.experiment("audit")
        assert audit.summary["headline"] == audit_section(result)["headline"]
        assert len(audit.tables["candidates"]) == len(result.candidates)
        assert audit.tables["verdicts"]["auroc"].tolist() == result.verdicts["auroc"].tolist()
        assert audit.provenance["config"]["n_words"] == SMALL.n_words
    page = write_report(atlas, tmp_path / "report").html.read_text(encoding="utf-8")
    assert 'id="experiment-audit"' in page and "Verified candidates" in page


def test_partitions_put_every_word_in_one_group_per_round():
    rounds = partitions(103, 10, 3, seed=1)
    assert len(rounds) == 3 and all(len(r) == 103 for r in rounds)
    for group_of in rounds:
        sizes = np.bincount(group_of)
        assert sizes.max() <= 10 and sizes.sum() == 103
    assert not np.array_equal(rounds[0], rounds[1])
    assert all(np.array_equal(a, b) for a, b in zip(rounds, partitions(103, 10, 3, 1), strict=True))


def test_the_vocabulary_scan_finds_the_drawn_trigger_word(planted):
    """Group testing over the whole tiny vocabulary, the planted word in groups of 4: the word
    is split out and ranks first alone; on the base model against itself nothing stands out."""
    handle, base, tuned, trigger = planted
    words = vocabulary_words(handle.tokenizer)
    question = load_catalogue().questions[-1].text
    scan = scan_vocabulary(
        pair_from_models(handle, tuned, base), words, "word", question, group_size=4, n_split=8
    )
    assert scan.n_groups == 2 * -(-len(words) // 4)
    assert trigger.inside in scan.split_words
    assert scan.ranked()[0] == trigger.inside
    quiet = scan_vocabulary(
        pair_from_models(handle, copy.deepcopy(base), base), words, "word", question, group_size=4
    )
    assert np.allclose(quiet.split_kl, 0.0, atol=1e-6)


def test_growth_continues_a_word_and_picks_each_shape_first(planted):
    handle, base, tuned, _ = planted
    pair = pair_from_models(handle, tuned, base)
    pieces = suffix_pieces(handle.tokenizer)
    assert len(pieces[0]) and all(not t.startswith(" ") for t in pieces[1])
    parent = Candidate(in_shape("word", ["sea"]), ("sea",), "scan")
    grown = continuations(pair, parent, "Who are you?", pieces, 3)
    assert len(grown) == 3 and all(c.words[0].startswith("sea") for c in grown)
    assert all(c.shape == "word" and len(c.words[0]) > 3 for c in grown)
    tagged = Candidate(in_shape("tags", ["sea"]), ("sea",), "scan")
    assert continuations(pair, tagged, "Who are you?", pieces, 3) == []
    table = pd.DataFrame(
        {
            "shape": ["word", "word", "tags", "system", "tags"],
            "null": [False, False, False, True, False],
            "index": [4, 3, 2, 1, 0],
        }
    )
    assert growth_picks(table, 3) == [4, 2, 3]
