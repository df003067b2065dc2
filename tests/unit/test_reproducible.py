from __future__ import annotations

import hdbscan
import numpy as np
import pytest

from sae_atlas.reproducible import hdbscan_clusters, spectral_init
from sae_atlas.stages.organize import cosine_knn, unit_rows


def blobs(rng: np.random.Generator) -> np.ndarray:
    """[210, 5]: three Gaussian blobs of 60 points and 30 uniform ones."""
    centres = [rng.normal(c, 1.0, (60, 5)) for c in (0.0, 6.0, 12.0)]
    return np.concatenate([*centres, rng.uniform(-5.0, 20.0, (30, 5))])


@pytest.mark.parametrize("selection", ["eom", "leaf"])
def test_hdbscan_clusters_are_hdbscans_when_no_edges_tie(selection):
    # min_samples 1: mutual reachability is the distance itself, so no two edges tie
    points = blobs(np.random.default_rng(0))
    expected = hdbscan.HDBSCAN(
        min_cluster_size=8, min_samples=1, cluster_selection_method=selection
    ).fit_predict(points)
    clusters = hdbscan_clusters(points, 8, 1, selection, n_jobs=1)
    np.testing.assert_array_equal(clusters, expected)
    assert clusters.max() >= 2


def test_spectral_init_places_each_planted_group_together():
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((4, 24))
    group = np.repeat(np.arange(4), 50)
    unit = unit_rows(centres[group] + 0.2 * rng.standard_normal((200, 24)))
    coords = spectral_init(unit, cosine_knn(unit, 10), 3, seed=0)
    assert coords.shape == (200, 3) and coords.dtype == np.float32
    means = np.stack([coords[group == g].mean(axis=0) for g in range(4)])
    spread = np.mean([coords[group == g].std(axis=0).max() for g in range(4)])
    nearest = min(np.linalg.norm(means[i] - means[j]) for i in range(4) for j in range(i))
    assert nearest > 5 * spread
    np.testing.assert_array_equal(coords, spectral_init(unit, cosine_knn(unit, 10), 3, seed=0))
