"""The feature clusters of one SAE, step by step: decoder clusters, the 2-D map, the
persona-profile clusters, stability, and each cluster's kind and label.

The decoder directions W_dec [d_sae, d_model] of the alive features are normalised to unit
length; their exact cosine kNN graph ([n_alive, n_neighbors], itself included) feeds UMAP into
`cluster_dims` dimensions, which HDBSCAN clusters, and into 2-D for the map. Dead features and
HDBSCAN's noise get cluster -1 (dead features also a NaN map position). Cost: that of the
modules it runs (graph, clusters, cluster_stability, kinds); about 65 s for 16,000 features x
d_model 576 with 3 stability reruns on one thread.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from feature_store.labels import Labels
from sae_atlas.config import OrganizeConfig
from sae_atlas.stages.base import Stopwatch
from sae_atlas.stages.organize.cluster_stability import Stability, stability
from sae_atlas.stages.organize.clusters import hdbscan_labels, profile_clusters
from sae_atlas.stages.organize.graph import cosine_knn, embed, unit_rows
from sae_atlas.stages.organize.inputs import persona_names
from sae_atlas.stages.organize.kinds import describe_clusters


@dataclass(frozen=True)
class FeatureClusters:
    """What organize found about the features.

    alive: bool [d_sae]; cluster: int64 [d_sae] decoder cluster (-1: noise or dead); map_xy:
    float32 [n_alive, 2] map positions of the alive features; compared: bool [d_sae] the
    features whose persona profiles were clustered; profile_cluster: int64 [d_sae] (-1:
    elsewhere); ami: of the two clusterings on `compared` (None: too few); stable: the
    stability reruns; kinds: [n_clusters] each cluster's kind; table: the clusters/ table.
    """

    alive: np.ndarray
    cluster: np.ndarray
    map_xy: np.ndarray
    compared: np.ndarray
    profile_cluster: np.ndarray
    ami: float | None
    stable: Stability
    kinds: list[str]
    table: pd.DataFrame


def feature_clusters(
    labels: Labels, w_dec: np.ndarray, alive: np.ndarray, config: OrganizeConfig, clock: Stopwatch
) -> FeatureClusters:
    """Cluster the `alive` [d_sae] features of the decoder `w_dec` [d_sae, d_model] and describe
    the clusters from `labels`, timing each step on `clock` (knn, umap_nd, hdbscan, umap_2d,
    profile_clusters, stability, kinds)."""
    with clock.step("knn"):
        unit = unit_rows(w_dec[alive])
        knn = cosine_knn(unit, config.n_neighbors)
    with clock.step("umap_nd"):
        embedding = embed(
            unit, knn, config.cluster_dims, config.cluster_min_dist, config, config.seed
        )
    with clock.step("hdbscan"):
        alive_cluster = hdbscan_labels(embedding, config)
    with clock.step("umap_2d"):
        map_xy = embed(unit, knn, 2, config.map_min_dist, config, config.seed)
    cluster = np.full(len(w_dec), -1, dtype=np.int64)
    cluster[alive] = alive_cluster
    with clock.step("profile_clusters"):
        compared, profile_cluster, ami = profile_clusters(
            labels.persona_profiles, alive, cluster, config
        )
    with clock.step("stability"):
        stable = stability(unit, alive_cluster, config)
    with clock.step("kinds"):
        kinds, table = describe_clusters(
            labels.features,
            labels.top_persona_index,
            persona_names(labels),
            alive,
            cluster,
            stable.reappears,
            config,
        )
    return FeatureClusters(
        alive, cluster, map_xy, compared, profile_cluster, ami, stable, kinds, table
    )
