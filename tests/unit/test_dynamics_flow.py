from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sae_atlas.stages.dynamics import flow_tables
from sae_atlas.stages.dynamics.flow import flow_of, path_arrays, permutation_flow

NAMES = ["assistant", "pirate", "villain", "poet"]


def drifting(rng: np.random.Generator, n: int, turns: int, target: int) -> np.ndarray:
    """Rollouts that start anywhere, wander, and enter `target` at a random turn for good."""
    paths = rng.integers(0, 4, (n, turns))
    for row, enter in zip(paths, rng.integers(1, turns, n), strict=True):
        row[enter:] = target
    return paths


def tables(paths: np.ndarray, experiment: str = "a") -> dict[str, pd.DataFrame]:
    meta = pd.DataFrame(
        {"experiment": experiment, "start": [f"s{i % 3}" for i in range(len(paths))]}
    )
    return flow_tables(paths, meta, NAMES, 0, 3, 1000, 0.05, seed=0)


def test_a_region_rollouts_flow_into_and_stay_in_is_claimed():
    paths = drifting(np.random.default_rng(0), 60, 8, target=2)
    flow = tables(paths)["flow"].set_index("region_name")
    assert flow.loc["villain", "attractor"]
    assert flow.loc["villain", "gain_low"] > 0 and flow.loc["villain", "hold_excess_low"] > 0
    assert not flow.drop(index="villain")["attractor"].any()


def test_a_region_rollouts_only_sit_in_is_no_attractor():
    # every rollout stays where it starts (a persona held by its prompt): order carries nothing
    rng = np.random.default_rng(1)
    paths = np.repeat(rng.integers(0, 4, (60, 1)), 8, axis=1)
    flow = tables(paths)["flow"]
    assert not flow["attractor"].any()
    np.testing.assert_allclose(flow["gain"], 0.0)
    np.testing.assert_allclose(flow["hold"].dropna(), flow["hold_null"].dropna())


def test_shuffled_rollouts_claim_nothing():
    rng = np.random.default_rng(2)
    paths = rng.permuted(drifting(rng, 60, 8, target=2), axis=1)
    assert not tables(paths)["flow"]["attractor"].any()


def test_the_null_keeps_each_rollouts_composition_and_its_expectation_is_analytic():
    rng = np.random.default_rng(3)
    paths = drifting(rng, 30, 6, target=1)
    null = permutation_flow(paths, 4, 0, 4000, seed=0)
    point = flow_of(path_arrays(paths, 4, 1).total(), 0)
    np.testing.assert_allclose(null.occupancy, point.occupancy[None].repeat(4000, 0))
    np.testing.assert_allclose(null.end.mean(0), point.occupancy, atol=0.01)
    lag_one = null.hold[..., 0]
    np.testing.assert_allclose(np.nanmean(lag_one, 0), point.hold_null[:, 0], atol=0.02)


def test_rare_exits_are_kept_and_exitless_regions_reported():
    paths = np.array([[1] * 8] * 39 + [[1] * 7 + [3]])  # one exit in 280 moves; poet only last
    out = tables(paths)
    moves = out["transitions"].set_index(["from", "to"])
    assert moves.loc[("pirate", "poet"), "count"] == 1
    assert moves.loc[("pirate", "poet"), "p"] == pytest.approx(1 / 280)
    flow = out["flow"].set_index("region_name")
    assert flow.loc["poet", "no_exit"] and np.isnan(flow.loc["poet", "stationary"])
    assert flow.loc["pirate", "leak"] == pytest.approx(1 / 280)


def test_return_to_assistant_counts_pairs_k_turns_apart():
    paths = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0]])
    back = tables(paths)["return_to_assistant"].set_index(["region_name", "lag"])
    # from pirate at t: 1 turn later in the assistant region for 3 of the 6 pirate turns
    assert back.loc[("pirate", 1), "pairs"] == 6
    assert back.loc[("pirate", 1), "p_return"] == pytest.approx(3 / 6)
    assert back.loc[("pirate", 3), "p_return"] == pytest.approx(1.0)
    assert back.loc[("pirate", 1), "ci_low"] <= 0.5 <= back.loc[("pirate", 1), "ci_high"]
    assert back.loc[("pirate", 1), "markov"] == pytest.approx(3 / 6)
