"""Clusters of rows by cosine: the kNN graph, a UMAP embedding, HDBSCAN on it; and the same
pipeline over the features' persona profiles, compared with the decoder clusters.

Cluster ids run from 0, largest cluster first; noise is -1. HDBSCAN gives the same clusters on
every CPU (sae_atlas.reproducible). Persona-profile clustering: each alive feature's column of
persona_profiles [P, d_sae], z-scored across personas (so cosine is Pearson correlation), for
the features whose profile varies; the adjusted mutual information (AMI) with the decoder
clustering on those features (noise counts as one label) says how far decoder geometry and
persona selectivity agree. Cost: a kNN graph and a UMAP per clustering (about 10 s for the
profiles of 16,000 features), HDBSCAN about 1 s.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import adjusted_mutual_info_score

from sae_atlas.config import OrganizeConfig
from sae_atlas.reproducible import hdbscan_clusters
from sae_atlas.stages.organize.graph import cosine_knn, embed, unit_rows


def min_points(config: OrganizeConfig) -> int:
    """Fewest rows the clustering pipeline accepts: a kNN graph and two minimal clusters."""
    return max(config.n_neighbors + 1, 2 * config.min_cluster_size)


def by_size(labels: np.ndarray) -> np.ndarray:
    """`labels` [n] renumbered 0, 1, ... from the largest cluster down (ties: first member
    first); -1 stays -1."""
    clustered = labels >= 0
    ids, first, counts = np.unique(labels[clustered], return_index=True, return_counts=True)
    order = np.lexsort((first, -counts))
    new_id = np.empty(len(ids), dtype=np.int64)
    new_id[order] = np.arange(len(ids))
    out = np.full(len(labels), -1, dtype=np.int64)
    out[clustered] = new_id[np.searchsorted(ids, labels[clustered])]
    return out


def hdbscan_labels(embedding: np.ndarray, config: OrganizeConfig) -> np.ndarray:
    """int64 [n]: HDBSCAN clusters of `embedding` [n, dims], ordered by size (-1: noise), the
    same on every CPU (sae_atlas.reproducible)."""
    return by_size(
        hdbscan_clusters(
            embedding,
            config.min_cluster_size,
            config.min_samples,
            config.cluster_selection,
            config.n_jobs,
        )
    )


def cluster_rows(vectors: np.ndarray, config: OrganizeConfig, seed: int) -> np.ndarray:
    """int64 [n]: clusters of the rows of `vectors` [n, d] by cosine (kNN, UMAP, HDBSCAN)."""
    unit = unit_rows(vectors)
    knn = cosine_knn(unit, config.n_neighbors)
    embedding = embed(unit, knn, config.cluster_dims, config.cluster_min_dist, config, seed)
    return hdbscan_labels(embedding, config)


def zscored_profiles(profiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each feature's persona profile z-scored across personas.

    profiles [P, d_sae] -> (varying: bool [d_sae], the features whose profile varies;
    z float32 [d_sae, P], zero for the others)."""
    profiles = np.asarray(profiles, dtype=np.float64)
    spread = profiles.std(axis=0)
    varying = spread > 1e-12 * np.maximum(np.abs(profiles).max(axis=0), 1e-30)
    z = (profiles - profiles.mean(axis=0)) / np.where(varying, spread, 1.0)
    return varying, np.where(varying, z, 0.0).T.astype(np.float32)


def profile_clusters(
    profiles: np.ndarray, alive: np.ndarray, cluster: np.ndarray, config: OrganizeConfig
) -> tuple[np.ndarray, np.ndarray, float | None]:
    """Cluster the alive features by their z-scored persona profiles [P, d_sae] and compare
    with the decoder clusters `cluster` [d_sae].

    Returns (compared: bool [d_sae], alive features whose profile varies; profile cluster
    [d_sae], -1 elsewhere; AMI of the two clusterings on `compared`, None when too few)."""
    varying, z = zscored_profiles(profiles)
    compared = alive & varying
    labels = np.full(len(compared), -1, dtype=np.int64)
    if compared.sum() < min_points(config):
        return compared, labels, None
    labels[compared] = cluster_rows(z[compared], config, config.seed)
    return compared, labels, float(adjusted_mutual_info_score(cluster[compared], labels[compared]))
