from __future__ import annotations

import numpy as np
import pandas as pd

from sae_atlas.stages.dynamics import PersonaMap, region_paths
from sae_atlas.stages.dynamics.calibration import resolution, turn_centroids
from sae_atlas.stages.dynamics.space import persona_regions


def test_ward_regions_keep_conditional_personas_with_their_nearest():
    coords = np.array([[0.0, 0], [0.1, 0], [5, 5], [5.1, 5], [10, 0], [0.05, 0.1]])
    conditional = np.array([False, False, False, False, False, True])
    region = persona_regions(coords, conditional, 3)
    assert len(set(region[:5])) == 3 and region[0] == region[1] and region[2] == region[3]
    assert region[5] == region[0]  # the conditional persona joins its nearest's region
    assert persona_regions(coords, conditional, 8).max() == 4  # at most one per persona


def toy_map(turn_centroids_: np.ndarray | None = None) -> PersonaMap:
    centroids = np.array([[0.0, 0.0], [10.0, 0.0]])
    return PersonaMap(
        center=np.zeros(2),
        components=np.eye(2),
        unit_axis=np.array([1.0, 0.0]),
        centroids=centroids,
        names=("assistant", "pirate"),
        members=(("assistant",), ("pirate",)),
        personas=pd.DataFrame({"name": ["assistant", "pirate"], "region": [0, 1]}),
        vectors=np.zeros((2, 2)),
        default="assistant",
        turn_centroids=turn_centroids_,
    )


def test_turn_centroids_place_later_turns_by_their_own_position():
    # every turn after the first moves +6 along x (a context-length shift, not a persona)
    coords = np.array([[[0.0, 0], [6, 0]], [[10, 0], [16, 0]]])  # [chat, turn, k]
    region = np.array([0, 1])
    centroids = turn_centroids(coords, region, toy_map().centroids)
    np.testing.assert_allclose(centroids[1], [[6, 0], [16, 0]])
    shifted = np.array([[[0.5, 0], [6.5, 0]]])  # an assistant rollout
    assert region_paths(toy_map(), shifted).tolist() == [[0, 1]]  # single-turn: wrong
    assert region_paths(toy_map(centroids), shifted).tolist() == [[0, 0]]


def test_resolution_cross_fits_turn_centroids_over_folds():
    rng = np.random.default_rng(0)
    region = np.array([0, 0, 1, 1] * 3)
    fold = np.array([0, 1] * 6)
    coords = (region[:, None, None] * 10.0 + np.array([0.0, 6.0])[None, :, None]) * np.array(
        [1.0, 0.0]
    ) + rng.normal(0, 0.5, (12, 2, 2))
    table = resolution(coords, pd.DataFrame({"region": region, "fold": fold}), toy_map())
    by = table.set_index(["method", "turn"])["accuracy"]
    assert by[("multi_turn", 0)] == 1.0 and by[("multi_turn", 1)] == 1.0
    assert by[("single_turn", 1)] == 0.5  # the shift puts every assistant turn with the pirate
    assert (table["chance"] == 0.5).all()
