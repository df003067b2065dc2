"""How well the feature clusters hold up: `stability_reruns` reclusterings of a
`stability_fraction` subsample, each with another seed.

Per rerun the adjusted Rand index (ARI) with the full clustering on the subsample; per cluster
the fraction of reruns in which it reappears (its best-matching rerun cluster has Jaccard >=
`stability_jaccard`). Cost: a kNN graph and a UMAP per rerun (about 11 s each for 16,000
features x d_model 576).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import adjusted_rand_score

from sae_atlas.config import OrganizeConfig
from sae_atlas.stages.organize.clusters import cluster_rows


@dataclass(frozen=True)
class Stability:
    """How the clustering holds up over `reruns` reclusterings of subsamples.

    ari: [reruns] adjusted Rand index of each rerun with the full clustering on its subsample
    (noise counts as one label); ari_clustered: [reruns] the same on the features both cluster;
    reappears: [n_clusters] fraction of reruns in which the cluster reappears; best_jaccard:
    [n_clusters] mean Jaccard of its best match (NaN: never in a subsample or no reruns).
    """

    ari: list[float]
    ari_clustered: list[float]
    reappears: np.ndarray
    best_jaccard: np.ndarray

    def summary(self) -> dict[str, Any]:
        """JSON-ready: reruns, ARIs and their means, mean cluster stability and Jaccard."""
        measured = bool(self.ari) and len(self.reappears) > 0

        def mean(values: Any) -> float | None:
            return float(np.nanmean(values)) if measured else None

        return {
            "reruns": len(self.ari),
            "ari": self.ari,
            "mean_ari": mean(self.ari),
            "ari_clustered": self.ari_clustered,
            "mean_ari_clustered": mean(self.ari_clustered),
            "mean_cluster_stability": mean(self.reappears),
            "mean_best_jaccard": mean(self.best_jaccard),
        }


def best_jaccard(reference: np.ndarray, other: np.ndarray, n_reference: int) -> np.ndarray:
    """float64 [n_reference]: for each cluster of `reference` [m], the largest Jaccard index
    with a cluster of `other` [m] (noise -1 is no cluster); NaN when it has no member here."""
    ref_size = np.bincount(reference[reference >= 0], minlength=n_reference)
    n_other = int(other.max()) + 1 if len(other) else 0
    best = np.zeros(n_reference)
    if n_other:
        other_size = np.bincount(other[other >= 0], minlength=n_other)
        both = (reference >= 0) & (other >= 0)
        shared = np.bincount(
            reference[both] * n_other + other[both], minlength=n_reference * n_other
        ).reshape(n_reference, n_other)
        union = ref_size[:, None] + other_size[None, :] - shared
        best = (shared / np.maximum(union, 1)).max(axis=1)
    return np.where(ref_size > 0, best, np.nan)


def stability(vectors: np.ndarray, labels: np.ndarray, config: OrganizeConfig) -> Stability:
    """Recluster `stability_reruns` random subsamples (stability_fraction of the rows of
    `vectors` [n, d]) with seeds seed+1, seed+2, ... and compare with `labels` [n] on each
    subsample; no reruns when `labels` has no cluster."""
    n_clusters = int(labels.max()) + 1
    reruns = config.stability_reruns if n_clusters else 0
    rng = np.random.default_rng(config.seed)
    size = round(len(vectors) * config.stability_fraction)
    ari: list[float] = []
    ari_clustered: list[float] = []
    jaccard = np.full((reruns, n_clusters), np.nan)
    for rerun in range(reruns):
        keep = np.sort(rng.choice(len(vectors), size=size, replace=False))
        again = cluster_rows(vectors[keep], config, seed=config.seed + 1 + rerun)
        ari.append(float(adjusted_rand_score(labels[keep], again)))
        both = (labels[keep] >= 0) & (again >= 0)
        ari_clustered.append(float(adjusted_rand_score(labels[keep][both], again[both])))
        jaccard[rerun] = best_jaccard(labels[keep], again, n_clusters)
    present = ~np.isnan(jaccard)
    n_present = present.sum(axis=0)
    reappears = np.where(
        n_present > 0,
        (present & (np.nan_to_num(jaccard) >= config.stability_jaccard)).sum(axis=0)
        / np.maximum(n_present, 1),
        np.nan,
    )
    mean_jaccard = np.where(
        n_present > 0, np.nan_to_num(jaccard).sum(axis=0) / np.maximum(n_present, 1), np.nan
    )
    return Stability(
        ari=ari, ari_clustered=ari_clustered, reappears=reappears, best_jaccard=mean_jaccard
    )
