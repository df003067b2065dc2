"""Persona space: PCA of the persona vectors, the assistant axis, and clusters of personas.

PCA of the persona vectors [P, d_model] centred on their mean (component signs chosen so that
the default persona has coordinates >= 0), explained variance per component; the assistant axis
(default vector minus the mean of the role vectors, DESIGN.md) and its |cosine| with PC1; each
persona's coordinates and its projection on the unit assistant axis (centred); the nearest and
farthest personas from the default (Euclidean distance of persona vectors); and clusters of
personas (Ward agglomerative on the coordinates, the count chosen by silhouette). Cost: one SVD
of [P, d_model] and a Ward clustering per candidate count, well under a second for 100 personas.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.cluster import AgglomerativeClustering
from sklearn.metrics import silhouette_score

from sae_atlas.stages.organize.clusters import by_size

NEAREST_PERSONAS = 3
"""Nearest and farthest personas from the default reported in the summary."""


@dataclass(frozen=True)
class PersonaSpace:
    """Persona space of P persona vectors [P, d_model], k components.

    center [d_model]: mean persona vector; components [k, d_model]: unit rows, most variance
    first; explained_variance [k]: fraction of the total variance; coords [P, k]; assistant_axis
    [d_model]: default minus the mean of the role vectors; axis_projection [P]: centred vector
    on the unit axis; axis_pc1_cosine: |cosine(axis, PC1)|; clusters [P]: persona cluster ids.
    """

    center: np.ndarray
    components: np.ndarray
    explained_variance: np.ndarray
    coords: np.ndarray
    assistant_axis: np.ndarray
    axis_projection: np.ndarray
    axis_pc1_cosine: float
    clusters: np.ndarray


def persona_clusters(coords: np.ndarray, max_clusters: int) -> np.ndarray:
    """int64 [P]: Ward clusters of persona coordinates [P, k], the count (2..max_clusters, at
    most P-1) with the best silhouette; one cluster when P < 4 or max_clusters < 2."""
    n = len(coords)
    best_labels = np.zeros(n, dtype=np.int64)
    if n < 4 or max_clusters < 2 or np.ptp(coords, axis=0).max() == 0:
        return best_labels
    best_score = -np.inf
    for n_clusters in range(2, min(max_clusters, n - 1) + 1):
        labels = AgglomerativeClustering(n_clusters=n_clusters, linkage="ward").fit_predict(coords)
        score = silhouette_score(coords, labels)
        if score > best_score:
            best_score, best_labels = score, labels
    return by_size(best_labels)


def persona_space(
    vectors: np.ndarray, default_row: int, n_components: int, max_clusters: int
) -> PersonaSpace:
    """PCA, assistant axis and persona clusters of persona vectors [P, d_model]; the row
    `default_row` is the default persona, every other row a role."""
    vectors = np.asarray(vectors, dtype=np.float64)
    center = vectors.mean(axis=0)
    centred = vectors - center
    _, singular, rows = np.linalg.svd(centred, full_matrices=False)
    total = float((singular**2).sum())
    rank = int((singular > 1e-9 * max(singular[0], 1e-30)).sum()) if len(singular) else 0
    k = max(1, min(n_components, rank))
    components = rows[:k]
    signs = np.where(centred[default_row] @ components.T < 0, -1.0, 1.0)
    components = components * signs[:, None]
    explained = singular[:k] ** 2 / total if total > 0 else np.zeros(k)
    coords = centred @ components.T
    roles = np.delete(vectors, default_row, axis=0)
    axis = vectors[default_row] - roles.mean(axis=0)
    axis_norm = float(np.linalg.norm(axis))
    unit_axis = axis / axis_norm if axis_norm > 0 else axis
    return PersonaSpace(
        center=center.astype(np.float32),
        components=components.astype(np.float32),
        explained_variance=explained.astype(np.float32),
        coords=coords.astype(np.float32),
        assistant_axis=axis.astype(np.float32),
        axis_projection=(centred @ unit_axis).astype(np.float32),
        axis_pc1_cosine=float(abs(unit_axis @ components[0])),
        clusters=persona_clusters(coords, max_clusters),
    )


def persona_summary(
    space: PersonaSpace, vectors: np.ndarray, names: Sequence[str], default_row: int
) -> dict[str, Any]:
    """JSON-ready figures of persona space: explained variance, axis-PC1 cosine, personas
    nearest to and farthest from the default, persona clusters."""
    vectors = np.asarray(vectors, dtype=np.float64)
    distance = np.linalg.norm(vectors - vectors[default_row], axis=1)
    others = np.array([p for p in np.argsort(distance, kind="stable") if p != default_row])

    def listed(rows: np.ndarray) -> list[dict[str, Any]]:
        return [{"persona": str(names[int(p)]), "distance": float(distance[p])} for p in rows]

    clusters = []
    for c in range(int(space.clusters.max()) + 1):
        members = np.flatnonzero(space.clusters == c)
        clusters.append(
            {
                "id": c,
                "personas": [str(names[int(p)]) for p in members],
                "mean_axis_projection": float(space.axis_projection[members].mean()),
                "has_default": bool(default_row in members),
            }
        )
    return {
        "n_personas": len(names),
        "default_persona": str(names[default_row]),
        "n_components": len(space.components),
        "explained_variance": [float(v) for v in space.explained_variance],
        "explained_variance_pc1": float(space.explained_variance[0]),
        "axis_norm": float(np.linalg.norm(space.assistant_axis)),
        "axis_pc1_cosine": space.axis_pc1_cosine,
        "nearest_to_default": listed(others[:NEAREST_PERSONAS]),
        "farthest_from_default": listed(others[::-1][:NEAREST_PERSONAS]),
        "clusters": clusters,
        "cluster_of": {str(names[p]): int(c) for p, c in enumerate(space.clusters)},
    }
