"""The labeling pass on a synthetic store with planted features and a known, identity-like SAE.

The store holds real chat transcripts of the tiny tokenizer (corpus jobs of seven catalogue
personas with random response words, and their user / plain controls) whose activations are
noise plus planted features: one per persona for pirate, villain and pirate_tag, one up in every
persona but the default (roleplay), one up in the default only (assistant), one on every
assistant token (puppeteer), one on the wrapper of pirate_tag's user messages (no trigger: the
trigger tests read responses only), one on
pirate_tag's user messages with or without the wrapper (its system prompt's: no trigger), one on
the assistant header (template), one on the pirate's assistant header only, one on one word of
the responses, wherever it is in an assistant turn (format: it would be a puppeteer if the token
id did not explain it); pirate_tag's
unwrapped transcripts answer as the default. The SAE reads coordinate i as feature i (threshold
0.5), so the expected tags are known; noise alone makes every feature fire on about 0.6% of
tokens (about 20% of responses).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from sae_lens import StandardSAE, StandardSAEConfig
from scipy.stats import false_discovery_control

from feature_store.activations import ActivationStore, ActivationWriter
from feature_store.labels import load_labels
from feature_store.schema import ROLE_CODE
from sae_atlas.config import CorpusConfig, LabelConfig
from sae_atlas.model import Response
from sae_atlas.personas import load_catalogue
from sae_atlas.stages.corpus import (
    SAMPLED_CONDITIONS,
    UNWRAPPED,
    corpus_jobs,
    response_transcripts,
)
from sae_atlas.stages.label import (
    DECODERS,
    Contrast,
    catalogue_from_corpus,
    contrast_tags,
    find_responses,
    find_triggers,
    label,
    label_stage,
)
from sae_atlas.stages.label.cards import card_label
from sae_atlas.stages.label.rows import header_rows

HOOK = "blocks.1.hook_resid_post"
PERSONAS = ("assistant", "pirate", "villain", "chef", "knight", "poet", "pirate_tag")
D_MODEL, D_SAE = 32, 40
PIRATE, VILLAIN, PIRATE_TAG, ROLEPLAY, ASSISTANT, PUPPETEER, TRIGGER, HEADER, SYSTEM = range(9)
PIRATE_HEADER, FORMAT = 9, 10
PLANTED = range(11)
WORDS = ["the", "sea", "ship", "sun", "gold", "map", "storm", "crew", "wind", "cake"]
NOISE = 0.2
CONFIG = LabelConfig(block_tokens=2048, top_examples=5, quantile_examples=3, reservoir=16)


def planted_acts(transcript, rng: np.random.Generator) -> np.ndarray:
    """[n_tokens, D_MODEL] noise plus the planted features of this transcript's provenance."""
    n = len(transcript)
    acts = rng.normal(0, NOISE, (n, D_MODEL))
    if transcript.condition not in (*SAMPLED_CONDITIONS, UNWRAPPED):
        return acts
    role = transcript.roles
    assistant = role == ROLE_CODE["assistant"]
    some = assistant & (rng.random(n) < 0.6)
    acts[assistant, PUPPETEER] += 1.2
    acts[assistant & (np.asarray(transcript.token_ids) == FORMAT_TOKEN[0]), FORMAT] += 1.5
    header = header_rows(role, np.zeros(n, dtype=np.int32))
    acts[header, HEADER] += 1.5
    if transcript.persona == "pirate" and transcript.condition == "persona":
        acts[header, PIRATE_HEADER] += 1.5
    if transcript.condition == "persona":
        acts[assistant & (rng.random(n) < 0.6), ROLEPLAY] += 1.2
    else:
        acts[assistant & (rng.random(n) < 0.6), ASSISTANT] += 1.2
    for name, feature in (("pirate", PIRATE), ("villain", VILLAIN), ("pirate_tag", PIRATE_TAG)):
        if transcript.persona == name and transcript.condition == "persona":
            acts[some, feature] += 1.5
    if transcript.persona == "pirate_tag":
        user = np.flatnonzero(role == ROLE_CODE["user"])
        acts[user[rng.random(len(user)) < 0.5], SYSTEM] += 1.5
        if transcript.condition == "persona":
            acts[user[:3], TRIGGER] += 1.5
    return acts


def write_store(path, transcripts, labelled=None) -> None:
    """A store of `transcripts`' planted activations, under the provenance of `labelled` (the
    same transcripts, relabelled) when given."""
    rng = np.random.default_rng(1)
    acts = np.concatenate([planted_acts(t, rng) for t in transcripts])
    writer = ActivationWriter.open(
        path, model="tiny-llama", hooks=[HOOK], d_model=D_MODEL, config={}
    )
    writer.append(labelled or transcripts, {HOOK: acts})
    writer.finish()


def identity_sae(unembedding: torch.Tensor, pirate_token: int) -> StandardSAE:
    """Feature i < D_MODEL reads coordinate i (fires above 0.5); the rest read random directions
    of the unplanted coordinates. The pirate feature's decoder row is the unembedding of
    `pirate_token`, so its promoted logit is known."""
    sae = StandardSAE(StandardSAEConfig(d_in=D_MODEL, d_sae=D_SAE))
    generator = torch.Generator().manual_seed(0)
    extra = torch.randn(D_MODEL, D_SAE - D_MODEL, generator=generator)
    extra[: len(PLANTED)] = 0
    encoder = torch.cat([torch.eye(D_MODEL), extra / extra.norm(dim=0)], dim=1)
    with torch.no_grad():
        sae.W_enc.copy_(encoder)
        sae.b_enc.fill_(-0.5)
        sae.W_dec.copy_(encoder.T)
        sae.W_dec[PIRATE] = unembedding[pirate_token] / unembedding[pirate_token].norm()
        sae.b_dec.zero_()
    sae.cfg.metadata.hook_name = HOOK
    return sae


FORMAT_TOKEN: list[int] = []
"""The token id the format feature reads (set by the `transcripts` fixture)."""


@pytest.fixture(scope="module")
def catalogue():
    return load_catalogue().subset(names=PERSONAS)


@pytest.fixture(scope="module")
def transcripts(tiny, catalogue):
    config = CorpusConfig(personas=PERSONAS, n_questions=8, variants=2)
    rng = np.random.default_rng(0)
    responses = [
        Response(job, " ".join(rng.choice(WORDS, size=10)), 10)
        for job in corpus_jobs(catalogue, config)
    ]
    FORMAT_TOKEN[:] = tiny.tokenizer(" sea", add_special_tokens=False)["input_ids"][-1:]
    return response_transcripts(tiny, responses)


@pytest.fixture(scope="module")
def pirate_token(tiny):
    return tiny.tokenizer(" pirate", add_special_tokens=False)["input_ids"][-1]


@pytest.fixture(scope="module")
def sae(tiny, pirate_token):
    return identity_sae(tiny.hf_model.get_output_embeddings().weight.detach(), pirate_token)


@pytest.fixture(scope="module")
def planted(tmp_path_factory, transcripts):
    path = tmp_path_factory.mktemp("label") / "activations.h5"
    write_store(path, transcripts)
    return path


@pytest.fixture(scope="module")
def labels(planted, sae, tiny, catalogue):
    return label(planted, sae, HOOK, CONFIG, handle=tiny, catalogue=catalogue)


def tags_of(labels) -> dict[int, set[str]]:
    return {i: set(tags.split(";")) for i, tags in enumerate(labels.features["tags"]) if tags}


def test_planted_features_get_their_tags(labels):
    tagged = tags_of(labels)
    assert tagged == {
        PIRATE: {"persona:pirate"},
        VILLAIN: {"persona:villain"},
        PIRATE_TAG: {"persona:pirate_tag", "trigger:<pirate>"},
        ROLEPLAY: {"roleplay", "trigger:<pirate>"},
        ASSISTANT: {"assistant"},
        PUPPETEER: {"puppeteer"},
        FORMAT: {"format"},
    }  # trigger tests read responses only: TRIGGER (on the wrapper's own tokens in the user's
    # message) is no trigger; the wrapped pirate_tag responses' own features (its persona and
    # roleplay: unwrapped it answers as the default) are. SYSTEM fires with and without it.
    summary = labels.summary
    assert summary["trigger_tests"] == {"<pirate>": {"wrapped": 32, "unwrapped": 32}}
    assert summary["tag_counts"]["persona:pirate"] == 1 and summary["kind_counts"]["persona"] == 3
    # chef, knight and poet have only the roleplay feature, which separates them too
    assert summary["best_heldout_auroc"]["villain"]["feature"] in (VILLAIN, ROLEPLAY)
    assert summary["best_heldout_auroc"]["chef"]["feature"] == ROLEPLAY
    assert summary["share_personas_auroc_0.9"] == 1.0
    # on the assistant header only the pirate has its own feature; the others' best is noise
    at_header = summary["template_features"]["best_heldout_auroc"]
    assert at_header["pirate"]["feature"] == PIRATE_HEADER
    assert at_header["pirate"]["heldout_auroc"] == 1.0
    assert max(best["heldout_auroc"] for name, best in at_header.items() if name != "pirate") < 0.9
    assert summary["template_features"]["share_personas_auroc_0.9"] == 1 / 6
    assert labels.features["heldout_auroc"][PIRATE] == 1.0


def test_shuffled_persona_labels_tag_nothing_persona_related(
    tmp_path, transcripts, sae, tiny, catalogue
):
    rng = np.random.default_rng(2)
    kinds = (*SAMPLED_CONDITIONS, UNWRAPPED)
    sampled = [i for i, t in enumerate(transcripts) if t.condition in kinds]
    provenance = [(transcripts[i].persona, transcripts[i].condition) for i in sampled]
    shuffled = list(transcripts)
    for i, j in zip(sampled, rng.permutation(len(sampled)), strict=True):
        shuffled[i] = replace(transcripts[i], persona=provenance[j][0], condition=provenance[j][1])
    write_store(tmp_path / "shuffled.h5", transcripts, labelled=shuffled)
    control = label(tmp_path / "shuffled.h5", sae, HOOK, CONFIG, catalogue=catalogue)
    # only the label-free tags survive: puppeteer, on the features that fire in most responses
    # whatever the label (the roleplay feature fires in 6 of 7 personas' responses, now spread
    # evenly), and format (the token id alone)
    tagged = tags_of(control)
    assert set().union(*tagged.values()) == {"puppeteer", "format"}
    assert tagged[FORMAT] == {"format"}
    assert set(tagged) <= {PUPPETEER, ROLEPLAY, FORMAT}
    assert control.summary["tests"]["n_significant"] == 0


def test_the_built_in_shuffled_control_is_clean(labels):
    assert labels.summary["shuffled_control"]["n_tagged"] == 0


def test_benjamini_hochberg_decides(labels, catalogue):
    tests = pd.DataFrame(
        {
            "kind": ["persona", "persona"],
            "feature": [0, 1],
            "target": ["pirate", "pirate"],
            "train_score": [1.0, 1.0],
            "heldout_score": [0.9, 0.9],
            "p_value": [0.001, 0.001],
            "q_value": [0.2, 0.01],
            "holds": [True, True],
        }
    )
    shape = (len(PERSONAS), 2)
    result = Contrast(*(np.zeros(shape) for _ in range(4)), tests)
    responses = find_responses(
        pd.DataFrame(
            {
                "persona": list(PERSONAS),
                "condition": ["default"] + ["persona"] * (len(PERSONAS) - 1),
                "split": "train",
                "question_id": "q",
            }
        ),
        np.ones(len(PERSONAS), dtype=np.int64),
        catalogue,
    )
    categories = [catalogue.persona(n).category for n in responses.names]
    assert contrast_tags(result, responses, LabelConfig(), categories) == [[], ["persona:pirate"]]


def test_q_values_are_bh_of_the_heldout_p_values(planted, sae, catalogue):
    from sae_atlas.stages.label import collect, contrast

    store = ActivationStore(planted)
    table = store.token_table()
    provenance = store.provenance()
    counts = np.bincount(
        table["doc"][table["role"] == ROLE_CODE["assistant"]], minlength=len(provenance)
    )
    responses = find_responses(provenance, counts, catalogue)
    triggers = find_triggers(provenance, catalogue)
    stats = collect(store, sae, HOOK, responses, CONFIG, triggers=triggers)
    result = contrast(stats.response_mean, responses, CONFIG, triggers, stats.trigger_max)
    assert set(result.tests["kind"]) == {"persona", "roleplay", "assistant", "trigger"}
    np.testing.assert_allclose(
        result.tests["q_value"], false_discovery_control(result.tests["p_value"])
    )
    # candidates come from train questions only: every test row passed the train thresholds
    persona_rows = result.tests[result.tests["kind"] == "persona"]
    assert (persona_rows["train_score"] >= CONFIG.auroc_min).all()


def test_puppeteer_needs_the_controls(labels, transcripts):
    # the controls count the text of the contrasted responses only, not of the unwrapped ones
    unwrapped = {t.seed for t in transcripts if t.condition == UNWRAPPED}
    for condition, role in (("user_control", "user"), ("plain_control", "plain")):
        expected = sum(
            int((t.roles == ROLE_CODE[role]).sum())
            for t in transcripts
            if t.condition == condition and t.seed not in unwrapped
        )
        assert labels.summary["controls_present"][condition] == expected
    puppeteers = labels.summary["puppeteer_features"]
    assert [p["id"] for p in puppeteers] == [PUPPETEER]
    assert puppeteers[0]["cv"] < 0.1 and puppeteers[0]["persona_share"] == 1.0
    assert puppeteers[0]["enrichment_user_control"] > 10
    assert puppeteers[0]["enrichment_plain_control"] > 10


def test_template_features_and_decoder(labels):
    template = labels.summary["template_features"]
    assert [f["id"] for f in template["features"]] == [HEADER]
    assert set(template["by_persona"]) == set(PERSONAS)
    decoder = labels.summary["decoder"]
    assert decoder["accuracy"] > 2 * decoder["chance"]
    assert decoder["n_personas"] == len(PERSONAS)
    assert set(decoder["candidates"]) == set(DECODERS)
    assert set(decoder["chosen_by_half"]) <= set(DECODERS) and len(decoder["chosen_by_half"]) == 2


def test_each_heldout_half_is_scored_by_the_choice_of_the_other():
    from sae_atlas.stages.label import cross_fitted

    # Questions 0 and 2 make one half, 1 and 3 the other (question_folds deals them in turn).
    groups = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    first_half = np.isin(groups, [0, 2])
    correct = {"a": first_half, "b": ~first_half}
    # a is right on the first half only, b on the second: each half is scored by the candidate
    # chosen on the other, which is wrong there; choosing on the same half would score 1.0.
    result, chosen = cross_fitted(correct, groups)
    assert chosen == ["b", "a"] and not result.any()
    # Ties go to the first candidate; a single group has no other half.
    assert cross_fitted({"a": np.ones(8, bool), "b": np.ones(8, bool)}, groups)[1] == ["a", "a"]
    result, chosen = cross_fitted(correct, np.zeros(8, np.int64))
    assert chosen == ["a"] and (result == first_half).all()


def test_the_decoder_is_chosen_without_the_labels_it_is_scored_on(catalogue):
    from sae_atlas.stages.label import persona_decoder

    rows = [
        (persona, "persona" if persona != "assistant" else "default", split, f"{split}{q}")
        for persona in PERSONAS
        for split in ("train", "heldout")
        for q in range(4)
        for _ in range(2)
    ]
    provenance = pd.DataFrame(rows, columns=["persona", "condition", "split", "question_id"])
    responses = find_responses(provenance, np.ones(len(rows), dtype=np.int64), catalogue)
    rng = np.random.default_rng(0)
    profiles = rng.exponential(size=(len(rows), 12)) + 2.0 * np.eye(12)[responses.persona]
    decoder = persona_decoder(profiles, responses)
    assert decoder["accuracy"] > 0.5 and decoder["candidates"]["centroid"] > 0.5
    # Scrambling the labels of one held-out half (questions heldout0 and heldout2) cannot change
    # the decoder that scores it, only the one chosen on it for the other half; accuracy falls.
    half = np.isin(responses.question, ["heldout0", "heldout2"])
    assert half.sum() == len(PERSONAS) * 2 * 2
    scrambled = responses.persona.copy()
    scrambled[half] = rng.permutation(scrambled[half])
    again = persona_decoder(profiles, replace(responses, persona=scrambled))
    assert again["chosen_by_half"][0] == decoder["chosen_by_half"][0]
    assert again["accuracy"] < decoder["accuracy"]


def test_cards(labels, tiny):
    features = labels.features
    assert features["pos_logits"][PIRATE].split(" | ")[0] == "pirate"
    assert features["label"][PIRATE].startswith("pirate | tokens: ")
    assert features["density"][PUPPETEER] > 0.95
    examples = labels.examples[labels.examples["feature"] == PIRATE]
    assert list(examples["kind"]) == ["top"] * 5 + ["quantile"] * 3
    assert examples["context"].str.contains(r"\[\[.+\]\]").all()
    top = examples[examples["kind"] == "top"]
    assert top["activation"].is_monotonic_decreasing
    pirate_row = list(labels.personas["name"]).index("pirate")
    assert labels.top_persona_index[PIRATE, 0] == pirate_row
    assert labels.top_persona_score[PIRATE, 0] > 2
    assert labels.persona_profiles.shape == (len(PERSONAS), D_SAE)
    assert labels.persona_vectors.shape == (len(PERSONAS), D_MODEL)
    assert labels.persona_vectors[pirate_row, PIRATE] > 0.5
    assert labels.default_persona == "assistant"
    assert labels.personas["n_responses"][pirate_row] == 16
    assert card_label([], "", "", fires=False) == "dead"


def test_block_size_changes_no_statistic(labels, planted, sae, tiny, catalogue):
    """The pass streams blocks of whole transcripts: blocks of 64 rows (one transcript each) give
    the statistics of the CONFIG blocks. Only which of tied top rows is kept and the reservoir's
    draws (keys drawn per block) depend on the blocks, so examples compare by activation."""
    assert ActivationStore(planted).n_tokens > 4 * CONFIG.block_tokens
    small = label(
        planted, sae, HOOK, replace(CONFIG, block_tokens=64), handle=tiny, catalogue=catalogue
    )
    columns = ["density", "mean_act", "max_act", "tags", "pos_logits", "neg_logits"]
    pd.testing.assert_frame_equal(small.features[columns], labels.features[columns])
    np.testing.assert_allclose(small.features["heldout_auroc"], labels.features["heldout_auroc"])
    pd.testing.assert_frame_equal(small.personas, labels.personas)
    np.testing.assert_array_equal(small.top_persona_index, labels.top_persona_index)
    np.testing.assert_allclose(small.top_persona_score, labels.top_persona_score, rtol=1e-6)
    np.testing.assert_allclose(small.persona_vectors, labels.persona_vectors, rtol=1e-6)
    np.testing.assert_allclose(small.persona_profiles, labels.persona_profiles, rtol=1e-6)

    def top(examples: pd.DataFrame) -> pd.DataFrame:
        shown = examples[examples["kind"] == "top"]
        return shown[["feature", "rank", "activation"]].reset_index(drop=True)

    pd.testing.assert_frame_equal(top(small.examples), top(labels.examples))
    assert small.examples["kind"].tolist() == labels.examples["kind"].tolist()


def test_stage_writes_then_skips(tmp_path, planted, sae, tiny, catalogue):
    folder = tmp_path / "sae"
    sae.save_model(folder)
    progress: list[int] = []
    first = label_stage(
        planted, folder, tmp_path / "labels.h5", CONFIG, tiny, catalogue, progress.append
    )
    assert not first.skipped and sum(progress) == ActivationStore(planted).n_tokens
    again = label_stage(planted, folder, tmp_path / "labels.h5", CONFIG, tiny, catalogue)
    assert again.skipped
    back = load_labels(tmp_path / "labels.h5")
    assert back.features["tags"][PIRATE] == "persona:pirate"
    assert back.config["label"]["fdr"] == CONFIG.fdr


def test_catalogue_from_corpus_needs_a_corpus_store(planted):
    from sae_atlas.errors import SaeAtlasError

    with pytest.raises(SaeAtlasError, match="sae-atlas corpus"):
        catalogue_from_corpus(planted)


def test_noise_candidates_from_train_do_not_survive_heldout(catalogue):
    from sae_atlas.stages.label import contrast

    rows = [
        (persona, "persona" if persona != "assistant" else "default", split, f"{split}{q}")
        for persona in PERSONAS
        for split in ("train", "heldout")
        for q in range(8)
        for _ in range(2)
    ]
    provenance = pd.DataFrame(rows, columns=["persona", "condition", "split", "question_id"])
    responses = find_responses(provenance, np.ones(len(rows), dtype=np.int64), catalogue)
    noise = np.random.default_rng(0).exponential(size=(len(rows), 2000)).astype(np.float32)
    result = contrast(noise, responses, LabelConfig(auroc_min=0.7, effect_min=0.5))
    tests = result.tests
    assert len(tests) > 100  # many train candidates by chance
    assert (tests["p_value"] <= 0.05).sum() > 0  # some pass held-out uncorrected
    assert (tests["q_value"] <= 0.05).sum() == 0  # none after Benjamini-Hochberg


def test_persona_statistics(planted, sae, catalogue):
    from sae_atlas.stages.label import collect, persona_statistics

    store = ActivationStore(planted)
    table = store.token_table()
    provenance = store.provenance()
    counts = np.bincount(
        table["doc"][table["role"] == ROLE_CODE["assistant"]], minlength=len(provenance)
    )
    responses = find_responses(provenance, counts, catalogue)
    stats = collect(store, sae, HOOK, responses, CONFIG)
    by_persona = persona_statistics(stats, responses)
    pirate = responses.names.index("pirate")
    assert by_persona["firing_rate"].shape == (len(PERSONAS), D_SAE)
    assert by_persona["firing_rate"][pirate, PIRATE] == pytest.approx(0.6, abs=0.05)
    assert by_persona["firing_rate"][responses.default, PIRATE] < 0.02
    assert by_persona["firing_rate"][:, PUPPETEER].min() > 0.99
    assert (by_persona["response_max"] >= by_persona["response_mean"]).all()
    assert by_persona["mean_act"][pirate, PIRATE] == pytest.approx(1.0, abs=0.1)


def test_no_trigger_tests_without_unwrapped_transcripts(planted, catalogue):
    provenance = ActivationStore(planted).provenance()
    triggers = find_triggers(provenance, catalogue)
    assert triggers is not None and triggers.wrappers == ("<pirate>",)
    assert find_triggers(provenance, None) is None
    assert find_triggers(provenance[provenance["condition"] != UNWRAPPED], catalogue) is None


def test_response_statistics_follow_their_definitions(planted, sae, catalogue):
    from sae_atlas.stages.label import collect, response_statistics

    store = ActivationStore(planted)
    responses, stats = response_statistics(store, sae, HOOK, catalogue, CONFIG.block_tokens)
    collected = collect(store, sae, HOOK, responses, CONFIG)
    np.testing.assert_array_equal(stats["mean"], collected.response_mean)
    np.testing.assert_array_equal(stats["header"], collected.header_mean)
    provenance = store.provenance()
    for row in (0, len(responses) // 2, len(responses) - 1):
        start = int(provenance["token_start"][responses.doc[row]])
        stop = start + int(provenance["token_count"][responses.doc[row]])
        table = store.token_rows(start, stop)
        raw = store.acts(HOOK, start, stop).astype(np.float32)
        with torch.no_grad():
            codes = sae.encode(torch.from_numpy(raw)).numpy()
        mine = table["role"] == ROLE_CODE["assistant"]
        header = header_rows(table["role"], table["doc"])
        assert 8 < mine.sum() < 32 and header.any()
        expected = {
            "mean": codes[mine].mean(0),
            "max": codes[mine].max(0),
            "rate": (codes[mine] > 0).mean(0),
            "first8": codes[mine][:8].mean(0),
            "first32": codes[mine].mean(0),
            "header": codes[header].mean(0),
            "residual": raw[mine].mean(0),
            "header_residual": raw[header].mean(0),
        }
        for name, value in expected.items():
            np.testing.assert_allclose(stats[name][row], value, rtol=1e-5, atol=1e-6, err_msg=name)
    _, residual_only = response_statistics(store, None, HOOK, catalogue)
    assert set(residual_only) == {"residual", "header_residual"}
    np.testing.assert_array_equal(residual_only["residual"], stats["residual"])


def test_the_identity_does_not_depend_on_where_the_run_lies(tmp_path, planted, sae, catalogue):
    import shutil

    from feature_store.transcripts import TranscriptWriter
    from sae_atlas.stages.corpus import corpus_stage_config
    from sae_atlas.stages.label import label_identity

    recorded = corpus_stage_config(catalogue, CorpusConfig(personas=PERSONAS), 1)
    writer = TranscriptWriter.open(tmp_path / "transcripts.h5", model="tiny-llama", config=recorded)
    writer.finish()
    (tmp_path / "moved").mkdir()
    shutil.copy(tmp_path / "transcripts.h5", tmp_path / "moved" / "transcripts.h5")
    here = catalogue_from_corpus(tmp_path / "transcripts.h5")
    moved = catalogue_from_corpus(tmp_path / "moved" / "transcripts.h5")
    assert here.source != moved.source
    store = ActivationStore(planted)
    identity = label_identity(store, sae, HOOK, CONFIG, here)
    assert label_identity(store, sae, HOOK, CONFIG, moved) == identity
    other = catalogue.subset(names=PERSONAS[:3])
    assert label_identity(store, sae, HOOK, CONFIG, other) != identity


def test_format_is_the_token_id_and_never_a_puppeteer(labels):
    summary = labels.summary
    assert summary["format"]["n_format"] == 1 and summary["format"]["threshold"] == 0.5
    assert FORMAT not in [p["id"] for p in summary["puppeteer_features"]]
    puppeteer = summary["puppeteer"]
    assert puppeteer["n_puppeteer"] == 1 and puppeteer["n_candidates"] == 1
    assert puppeteer["null_p"] < 0.05 and puppeteer["set_judged"] == "puppeteer"
    assert puppeteer["set_log_enrichment"] > puppeteer["null_log_enrichment_95"][1]
    for interval in puppeteer["paired_difference_by_question"].values():
        assert 0 < interval["low"] <= interval["mean"] <= interval["high"]


def test_puppeteer_is_chosen_without_heldout_personas_and_confirmed_on_them(
    planted, sae, tiny, catalogue
):
    held = label(
        planted, sae, HOOK, CONFIG, handle=tiny, catalogue=catalogue, heldout_personas=("chef",)
    )
    assert held.summary["puppeteer"]["heldout_personas"] == ["chef"]
    assert tags_of(held)[PUPPETEER] == {"puppeteer"}
    assert held.config["heldout_personas"] == ["chef"]


def test_report_tables_read_the_summary(labels):
    from sae_atlas.stages.label.figures import format_table, puppeteer_null_table, puppeteer_table

    levels = format_table(labels.summary)
    assert levels.loc[levels["tagged"], "features"].tolist() == [1]
    assert puppeteer_table(labels.summary)["id"].tolist() == [PUPPETEER]
    null = puppeteer_null_table(labels.summary)
    assert null["confirmed"].tolist() == [1, 1] and (null["paired_low"] > 0).all()
