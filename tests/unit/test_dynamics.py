from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_atlas import atlas_data, write_atlas

from feature_store.atlas import Atlas, AtlasWriter
from sae_atlas.errors import SaeAtlasError
from sae_atlas.stages.dynamics import (
    attractor_robustness,
    closed_classes,
    drift_curves,
    find_attractors,
    nearest_region,
    relative_to_baseline,
    settle_turn,
    stationary_distribution,
    transition_matrix,
)
from sae_atlas.stages.dynamics.tables import storable_text, write_entry


def test_transition_matrix_on_a_hand_made_case():
    regions = np.array([[0, 1, 1, 2], [0, 0, 1, 2]])
    expected = np.array([[1 / 3, 2 / 3, 0], [0, 1 / 3, 2 / 3], [0, 0, 1]])
    np.testing.assert_allclose(transition_matrix(regions, 3), expected)
    with pytest.raises(SaeAtlasError, match="at least two turns"):
        transition_matrix(np.array([[0], [1]]), 2)


def test_stationary_distribution_of_known_chains():
    two_state = np.array([[0.9, 0.1], [0.5, 0.5]])  # stationary (5/6, 1/6)
    np.testing.assert_allclose(
        stationary_distribution(two_state, steps=20000), [5 / 6, 1 / 6], atol=1e-3
    )
    periodic = np.array([[0.0, 1.0], [1.0, 0.0]])
    np.testing.assert_allclose(stationary_distribution(periodic), [0.5, 0.5])
    absorbing = np.array([[0.5, 0.5, 0], [0, 0.5, 0.5], [0, 0, 1]])
    np.testing.assert_allclose(stationary_distribution(absorbing), [0, 0, 1], atol=2e-3)


def test_closed_classes_are_the_sets_never_left():
    matrix = np.array(
        [
            [0.5, 0.5, 0.0, 0.0],
            [0.0, 0.2, 0.8, 0.0],
            [0.0, 0.0, 0.6, 0.4],
            [0.0, 0.0, 0.7, 0.3],
        ]
    )
    assert closed_classes(matrix) == [[2, 3]]
    assert sorted(closed_classes(np.eye(3))) == [[0], [1], [2]]


def test_attractor_basin_and_relaxation():
    # region 0 = assistant (absorbing), 1 = pirate, 2 = villain (absorbing)
    regions = np.array(
        [
            [1, 1, 0, 0, 0],  # pirate relaxes to the assistant after 2 turns
            [1, 0, 0, 0, 0],  # ... after 1 turn
            [2, 2, 2, 2, 2],  # villain stays villain
            [0, 0, 0, 0, 0],  # the assistant stays
        ]
    )
    starts = ["pirate", "pirate", "villain", "assistant"]
    matrix, stationary, attractors = find_attractors(regions, starts, 3)
    np.testing.assert_allclose(matrix.sum(1), 1.0)
    by_regions = {a.regions: a for a in attractors}
    assert set(by_regions) == {(0,), (2,)}
    assistant = by_regions[(0,)]
    assert assistant.basin == {"pirate": 1.0, "villain": 0.0, "assistant": 1.0}
    assert assistant.relaxation == {"pirate": 1.5, "assistant": 0.0}
    assert by_regions[(2,)].basin["villain"] == 1.0
    assert np.isclose(stationary.sum(), 1.0)
    np.testing.assert_allclose(stationary, [0.75, 0.0, 0.25], atol=2e-3)  # from turn-0 regions
    unvisited = find_attractors(regions, starts, 4)[2]  # region 3: no rollout goes there
    assert {a.regions for a in unvisited} == {(0,), (2,)}
    assert settle_turn(np.array([0, 1, 0]), [1]) is None


def test_nearest_region_and_drift_curves():
    centroids = np.array([[0.0, 0.0], [10.0, 0.0]])
    points = np.array([[1.0, 1.0], [9.0, -1.0], [4.0, 0.0]])
    np.testing.assert_array_equal(nearest_region(points, centroids), [0, 1, 0])
    values = np.array([[1.0, 2.0], [3.0, 4.0], [10.0, 10.0]])
    curves = drift_curves(values, ["a", "a", "b"])
    row = curves[(curves.group == "a") & (curves.turn == 1)].iloc[0]
    assert row["mean"] == 3.0 and row["n"] == 2
    assert row["ci_low"] < 3.0 < row["ci_high"]
    assert row["ci_high"] - 3.0 == pytest.approx(12.706, abs=1e-3)  # t(0.975, 1 df) x sem (1)


def test_attractor_robustness_on_hand_made_rollouts():
    # every rollout ends in region 2 (absorbing): found in every resample
    settled = np.array([[0, 1, 2, 2], [1, 2, 2, 2], [0, 0, 2, 2], [2, 2, 2, 2]])
    found, in_attractor = attractor_robustness(settled, 3, 0.0, 200)
    assert found == {(2,): 1.0}
    np.testing.assert_allclose(in_attractor, [0.0, 0.0, 1.0])
    # one rollout of four leaves region 2 for 3 and stays: when a resample draws it, 2 leaks
    # and {3} is the attractor, else {2} is
    fragile = np.array([[2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 3, 3]])
    found, in_attractor = attractor_robustness(fragile, 4, 0.0, 2000, seed=1)
    assert set(found) == {(2,), (3,)}
    assert found[(3,)] == pytest.approx(1 - 0.75**4, abs=0.03)
    assert found[(2,)] == pytest.approx(0.75**4, abs=0.03)
    np.testing.assert_allclose(in_attractor, [0, 0, found[(2,)], found[(3,)]])


def test_relative_to_baseline_pairs_rows_by_key():
    values = np.array([[1.0, 2.0], [5.0, 7.0], [2.0, 2.0], [3.0, 3.0]])
    seeds = [0, 0, 1, 1]
    baseline = np.array([True, False, True, False])
    np.testing.assert_allclose(
        relative_to_baseline(values, seeds, baseline), [[0, 0], [4, 5], [0, 0], [1, 1]]
    )
    with pytest.raises(SaeAtlasError, match="no baseline row"):
        relative_to_baseline(values, [0, 0, 1, 2], baseline)
    with pytest.raises(SaeAtlasError, match="one baseline row"):
        relative_to_baseline(values, [0, 0, 0, 1], np.array([True, True, False, False]))


def test_sampled_text_with_a_nul_is_stored_with_the_nul_escaped(tmp_path):
    # the tiny model samples a NUL in float32; HDF5 text cannot hold one
    path = write_atlas(tmp_path / "atlas.h5", atlas_data())
    rows = pd.DataFrame({"turn": [0, 1], "text": ["Arr\x00 matey", "plain"]})
    with AtlasWriter.extend(path) as writer:
        write_entry(writer, "steering_responses", rows)
    with Atlas.open(path) as atlas:
        stored = atlas.dynamics("steering_responses")
    assert stored["text"].tolist() == ["Arr\u2400 matey", "plain"]
    assert stored["turn"].tolist() == [0, 1]
    clean = rows.assign(text=["Arr matey", "plain"])
    assert storable_text(clean) is clean  # text without a NUL is stored as it is
