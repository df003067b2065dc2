"""Best features against residual probes, on synthetic responses with planted personas
(sae_atlas.stages.label.carry)."""

from __future__ import annotations

import numpy as np
import pytest

from sae_atlas.config import LabelConfig
from sae_atlas.stages.label import HELDOUT, TRAIN
from sae_atlas.stages.label.carry import (
    HeldoutScores,
    carry_figures,
    feature_scores,
    paired_comparison,
    persona_table,
    ranked_features,
    sparse_scores,
)
from sae_atlas.stages.label.inputs import Responses
from sae_atlas.stages.label.targets import auroc_share

N_TRAIN, N_HELDOUT, PERSONAS = 8, 6, ("assistant", "pirate", "poet")
F, D = 12, 6
PIRATE_FEATURE, DECOY = 3, 9
CONFIG = LabelConfig()


def responses(repeats: int = 3) -> Responses:
    """`repeats` responses per persona and question; questions 0-7 train, 8-13 held out."""
    questions = np.arange(N_TRAIN + N_HELDOUT)
    persona, question = (a.ravel() for a in np.meshgrid(np.arange(3), questions, indexing="ij"))
    persona, question = np.repeat(persona, repeats), np.repeat(question, repeats)
    return Responses(
        doc=np.arange(len(persona)),
        persona=persona,
        split=np.where(question < N_TRAIN, TRAIN, HELDOUT),
        question=question.astype(str).astype(object),
        names=PERSONAS,
        default=0,
    )


def statistics(data: Responses) -> dict[str, np.ndarray]:
    """Noise, with pirate planted on one feature of every pooling and one residual axis; poet on
    nothing but, on held-out responses only, a decoy feature (a choice made on held-out data
    would take it)."""
    rng = np.random.default_rng(0)
    pirate, poet = data.persona == 1, data.persona == 2
    out = {}
    for name in ("mean", "max", "rate", "header"):
        values = rng.random((len(data), F))
        values[pirate, PIRATE_FEATURE] += 2.0
        values[poet & (data.split == HELDOUT), DECOY] += 2.0
        out[name] = values
    for name in ("residual", "header_residual"):
        values = rng.standard_normal((len(data), D))
        values[pirate, 0] += 3.0
        out[name] = values
    return out


def test_the_best_feature_is_the_labeling_pass_choice_made_on_train():
    data = responses()
    values = statistics(data)["mean"]
    ranked = ranked_features(values, data, CONFIG)
    scores, chosen = feature_scores(values, data, ranked)
    assert chosen["pirate"] == PIRATE_FEATURE
    assert chosen["poet"] != DECOY  # the decoy separates held-out responses only
    expected = auroc_share(values, data, CONFIG)["heldout"]
    assert {n: s.auroc for n, s in scores.items()} == pytest.approx(expected)
    assert scores["pirate"].auroc > 0.95
    assert scores["poet"].auroc < 0.9
    heldout_questions = {str(q) for q in range(N_TRAIN, N_TRAIN + N_HELDOUT)}
    assert set(scores["pirate"].positive_question) == heldout_questions


def test_a_one_feature_sparse_probe_ranks_as_its_feature():
    data = responses()
    values = statistics(data)["mean"]
    ranked = ranked_features(values, data, CONFIG)
    best, _ = feature_scores(values, data, ranked)
    sparse = sparse_scores(values, data, ranked, 1)
    assert sparse["pirate"].auroc == pytest.approx(best["pirate"].auroc)


def test_features_are_ranked_on_train_responses_only():
    data = responses()
    values = statistics(data)["mean"]
    ranked = ranked_features(values, data, CONFIG)
    other = values.copy()
    heldout = data.split == HELDOUT
    other[heldout] = np.random.default_rng(5).random((int(heldout.sum()), F))
    for p, order in ranked_features(other, data, CONFIG).items():
        assert (order == ranked[p]).all()


def scores_of(separation: float, n: int, seed: int) -> HeldoutScores:
    rng = np.random.default_rng(seed)
    questions = np.arange(n).astype(str)
    return HeldoutScores(rng.normal(separation, 1, n), rng.normal(0, 1, n), questions, questions)


def test_paired_comparison_counts_discordant_personas():
    names = [f"p{i}" for i in range(10)]
    strong = {n: scores_of(8.0, 6, i) for i, n in enumerate(names)}
    weak = {n: scores_of(0.0, 6, 100 + i) for i, n in enumerate(names)}
    better = paired_comparison(strong, weak, 500, 0)
    assert better["feature_share"] == 1.0 and better["probe_share"] == 0.0
    assert better["share_difference"] == 1.0 and better["share_difference_ci"] == [1.0, 1.0]
    assert better["only_feature"] == 10 and better["only_probe"] == 0
    assert better["mcnemar_p"] == pytest.approx(2 / 1024)
    assert better["at_least_equal"]
    worse = paired_comparison(weak, strong, 500, 0)
    assert worse["share_difference"] == -1.0 and not worse["at_least_equal"]
    same = paired_comparison(strong, strong, 500, 0)
    assert same["share_difference"] == 0.0 and same["mcnemar_p"] == 1.0 and same["at_least_equal"]


def test_carry_figures_put_each_method_beside_its_probe():
    data = responses()
    figures, table = carry_figures(
        statistics(data), data, CONFIG, sparse_features=4, n_bootstrap=200
    )
    methods = {
        "mean_best_feature",
        "max_best_feature",
        "rate_best_feature",
        "header_best_feature",
        "mean_sparse4",
        "max_sparse4",
        "response_probe",
        "header_probe",
    }
    assert set(figures["shares"]) == methods
    assert figures["comparisons"]["header_best_feature"]["reference"] == "header_probe"
    assert figures["comparisons"]["mean_best_feature"]["reference"] == "response_probe"
    assert "response_probe" not in figures["comparisons"]
    assert figures["shares"]["response_probe"]["n_personas"] == 2
    assert figures["shares"]["mean_best_feature"]["share"] == 0.5  # pirate, not poet
    assert set(table.index) == {"pirate", "poet"}
    assert table.loc["pirate", "response_probe"] > 0.9
    low, high = table.loc[
        "poet", ["mean_best_feature_vs_probe_low", "mean_best_feature_vs_probe_high"]
    ]
    assert low <= table.loc["poet", "mean_best_feature_vs_probe"] <= high


def test_persona_table_of_a_method_against_itself_is_zero():
    names = ["a", "b"]
    same = {n: scores_of(1.0, 8, i) for i, n in enumerate(names)}
    table = persona_table({"mean_best_feature": same, "response_probe": same}, 200, 0)
    assert (table["mean_best_feature_vs_probe"] == 0).all()
    assert (table["mean_best_feature_vs_probe_low"] == 0).all()
    assert (table["mean_best_feature_vs_probe_high"] == 0).all()
