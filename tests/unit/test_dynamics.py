from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_atlas import atlas_data, write_atlas

from feature_store.atlas import Atlas, AtlasWriter
from sae_atlas.errors import SaeAtlasError
from sae_atlas.stages.dynamics import (
    drift_curves,
    nearest_region,
    predicted_return,
    relative_to_baseline,
    stationary_distribution,
    transition_matrix,
)
from sae_atlas.stages.dynamics.tables import storable_text, write_entry


def test_transition_matrix_from_counts_leaves_a_region_without_exit_unknown():
    regions = np.array([[0, 1, 1, 2], [0, 0, 1, 2]])  # region 2 is only seen at last turns
    matrix = transition_matrix(regions, 3)
    np.testing.assert_allclose(matrix[:2], [[1 / 3, 2 / 3, 0], [0, 1 / 3, 2 / 3]])
    assert np.isnan(matrix[2]).all()  # no invented self-loop
    with pytest.raises(SaeAtlasError, match="at least two turns"):
        transition_matrix(np.array([[0], [1]]), 2)


def test_stationary_distribution_of_known_chains_and_leaks():
    two_state = np.array([[0.9, 0.1], [0.5, 0.5]])  # stationary (5/6, 1/6)
    share, leak = stationary_distribution(two_state, steps=20000)
    np.testing.assert_allclose(share, [5 / 6, 1 / 6], atol=1e-3)
    np.testing.assert_allclose(leak, 0.0)
    periodic = np.array([[0.0, 1.0], [1.0, 0.0]])
    np.testing.assert_allclose(stationary_distribution(periodic)[0], [0.5, 0.5])
    unknown = np.array([[0.5, 0.25, 0.25], [0.5, 0.5, 0.0], [np.nan] * 3])
    share, leak = stationary_distribution(unknown, steps=20000)
    assert np.isnan(share[2]) and np.isnan(leak[2])
    np.testing.assert_allclose(leak[:2], [0.25, 0.0])
    np.testing.assert_allclose(share[:2], [0.6, 0.4], atol=1e-3)  # rows renormalised: 2/3, 1/3


def test_predicted_return_is_the_matrix_power_column():
    matrix = np.array([[1.0, 0.0], [0.5, 0.5]])
    np.testing.assert_allclose(predicted_return(matrix, 0, 3), [[1, 1, 1], [0.5, 0.75, 0.875]])
    assert np.isnan(predicted_return(np.array([[1.0, 0.0], [np.nan, np.nan]]), 0, 2)[1]).all()


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
