"""Best feature and residual probes per persona on held-out data: a persona signal carries over,
a signal of the train system prompts only does not."""

from __future__ import annotations

import numpy as np

from sae_atlas.stages.label.inputs import HELDOUT, TRAIN, Responses
from sae_atlas.stages.label.probes import persona_table, target_shares


def responses_and_statistics(seed: int = 0) -> tuple[Responses, dict[str, np.ndarray]]:
    """3 personas (0: default) x 2 splits x 8 questions x 2 variants; residual dim 0 carries
    persona 1 everywhere, dim 1 carries persona 2 on train rows only (its train prompts);
    feature 0 follows persona 1, feature 1 persona 2's train prompts."""
    rng = np.random.default_rng(seed)
    persona, split, question = [], [], []
    for p in range(3):
        for s in (TRAIN, HELDOUT):
            for q in range(8):
                for _ in range(2):
                    persona.append(p)
                    split.append(s)
                    question.append(f"{'th'[s]}{q}")
    persona_array, split_array = np.array(persona), np.array(split)
    n = len(persona)
    residual = rng.normal(size=(n, 16))
    residual[:, 0] += 4.0 * (persona_array == 1)
    residual[:, 1] += 3.0 * ((persona_array == 2) & (split_array == TRAIN))
    codes = np.maximum(rng.normal(size=(n, 6)), 0)
    codes[:, 0] += 3.0 * (persona_array == 1)
    codes[:, 1] += 3.0 * ((persona_array == 2) & (split_array == TRAIN))
    responses = Responses(
        doc=np.arange(n),
        persona=persona_array,
        split=split_array,
        question=np.array(question, dtype=object),
        names=("assistant", "pirate", "chef"),
        default=0,
    )
    return responses, {"mean": codes, "residual": residual, "header_residual": residual[:, ::-1]}


def test_signals_of_the_train_prompts_do_not_carry_over():
    responses, statistics = responses_and_statistics()
    table = persona_table(responses, statistics).set_index("persona")
    assert table.loc["pirate", "mean_feature"] == 0
    assert table.loc["pirate", "mean_heldout"] > 0.95
    assert table.loc["pirate", "response_probe"] > 0.95
    assert table.loc["chef", "mean_feature"] == 1 and table.loc["chef", "mean_train"] > 0.95
    assert table.loc["chef", "mean_heldout"] < 0.8  # chosen on train prompts, fails held out
    assert table.loc["chef", "response_probe"] < 0.8
    shares = target_shares(table.reset_index())
    assert shares["mean_heldout"]["share"] == 0.5 and shares["n_personas"] == 2
    low, high = shares["response_probe"]["ci"]
    assert low < 0.5 < high
