"""The repetition state (sae_atlas.stages.dynamics.repetition): verbatim and near repeats of the
previous assistant turn are marked, other turns are not; a repetition loop that would be claimed
as an attractor of the persona region it sits in is a state of its own, never claimed."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sae_atlas.stages.dynamics import flow_tables
from sae_atlas.stages.dynamics.repetition import (
    REPETITION,
    overlap,
    repeated_turns,
    state_names,
    state_paths,
)

NAMES = ["assistant", "pirate", "villain", "poet"]
SENTENCE = "I am so grateful for this moment of peace and the light we share together today"


def test_overlap_and_repeated_turns():
    near = SENTENCE.replace("today", "now")  # one word of 16 changed
    assert overlap(SENTENCE, SENTENCE) == 1.0
    assert 0.9 <= overlap(near, SENTENCE) < 1.0
    assert overlap("The capital of France is Paris.", SENTENCE) < 0.2
    assert overlap("", "") == 0.0 and overlap(SENTENCE, "") == 0.0
    texts = [
        [SENTENCE, SENTENCE, near, "Something else entirely, about the sea."],
        ["Arr!", "Ahoy there."],  # shorter than the rollout
    ]
    repeated = repeated_turns(texts, 4)
    np.testing.assert_array_equal(
        repeated, [[False, True, True, False], [False, False, False, False]]
    )


def _tables(paths: np.ndarray, names: list[str]) -> pd.DataFrame:
    starts = [f"s{i % 3}" for i in range(len(paths))]
    meta = pd.DataFrame({"experiment": "self_talk", "start": starts})
    return flow_tables(paths, meta, names, 0, 3, 1000, 0.05, seed=0)["flow"]


def test_a_repetition_loop_is_its_own_state_and_no_attractor():
    rng = np.random.default_rng(0)
    n, turns = 60, 8
    regions = rng.integers(0, 4, (n, turns))
    repeated = np.zeros((n, turns), dtype=bool)
    for row, loop, enter in zip(regions, repeated, rng.integers(1, turns - 1, n), strict=True):
        row[enter:] = 2  # the loop's turns land in the villain region...
        loop[enter + 1 :] = True  # ...and after the first, each repeats the one before
    as_regions = _tables(regions, NAMES).set_index("region_name")
    assert as_regions.loc["villain", "attractor"]  # what the loop looked like before
    states = state_paths(regions, repeated, len(NAMES))
    assert states.max() == len(NAMES) and (states == len(NAMES)).sum() == repeated.sum()
    flow = _tables(states, list(state_names(NAMES))).set_index("region_name")
    assert REPETITION in flow.index
    assert flow.loc[REPETITION, "gain_low"] > 0 and flow.loc[REPETITION, "hold_excess_low"] > 0
    assert not flow["attractor"].any()
    np.testing.assert_array_equal(state_paths(regions, None, len(NAMES)), regions)
