"""Organize labeled SAE features into the atlas: feature clusters, a 2-D map and persona space.

Feature clusters. The decoder directions W_dec [d_sae, d_model] of the alive features (density > 0,
non-zero decoder row) are normalised to unit length; an exact cosine kNN graph (blocked matmul,
[n_alive, n_neighbors], itself included) feeds UMAP into `cluster_dims` dimensions, which HDBSCAN
clusters, and into 2-D for the map. Dead features and HDBSCAN's noise get cluster -1 (dead
features also a NaN map position). Cluster ids run from 0, largest cluster first. For a seed,
graph, embeddings and clusters are the same on every x86-64 CPU (AVX2 or AVX-512; see
`cosine_knn` and sae_atlas.reproducible).
- Persona-profile clustering: the same pipeline over each feature's persona profile (its column of
  persona_profiles [P, d_sae], z-scored across personas, so cosine is Pearson correlation) of
  the alive features whose profile varies; the adjusted mutual information (AMI) with the
  decoder clustering on those features (noise counts as one label) says how far decoder
  geometry and persona selectivity agree.
- Stability: `stability_reruns` reclusterings of a `stability_fraction` subsample, each with
  another seed; the adjusted Rand index (ARI) with the full clustering on the subsample, and per
  cluster the fraction of reruns in which it reappears (best-matching rerun cluster with Jaccard
  >= `stability_jaccard`).
- Each cluster's kind is the tag family (persona, roleplay, assistant, puppeteer, trigger) most
  significantly enriched among its members against the alive features (hypergeometric test,
  Bonferroni), "other" when none is; its dominant personas are its members' best personas
  (top_persona_index[:, 0]) with their share; its label is the most common tag of its kind (or
  its dominant persona) and its members' most common top tokens.

Persona space. PCA of the persona vectors [P, d_model] centred on their mean (component signs
chosen so that the default persona has coordinates >= 0), explained variance per component; the
assistant axis (default vector minus the mean of the role vectors, DESIGN.md) and its |cosine|
with PC1; each persona's coordinates and its projection on the unit assistant axis (centred);
the nearest and farthest personas from the default (Euclidean distance of persona vectors); and
clusters of personas (Ward agglomerative on the coordinates, the count chosen by silhouette).

`organize(labels, sae, out_atlas, config)` writes the whole atlas with `AtlasWriter` and records
the stage config (with a digest of its input), timings and the JSON summary as root attributes;
an atlas already complete for the same input and config is skipped. Cost on the 2-core
development CPU (one thread) for 16,000 features x d_model 576 and 100 personas
(scripts/bench_organize.py): about 65 s with 3 stability reruns: each rerun about 11 s (a kNN
graph and a UMAP), the profile clustering about 10 s, the kNN graph about 5 s, the two UMAPs 5-9 s
each, HDBSCAN about 1 s, persona space, kinds and labels well under a second, writing about 1 s.
A process also loads UMAP's numba kernels once (about 7-10 s from the on-disk cache; compiling them
on a fresh install takes 30-60 s). Memory: a 1,024 x n_alive block of cosines and the UMAP graph.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy.stats import hypergeom
from sklearn.cluster import AgglomerativeClustering
from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score, silhouette_score
from threadpoolctl import threadpool_limits

from feature_store.atlas import Atlas, AtlasWriter
from feature_store.labels import Labels
from feature_store.schema import ATLAS_KIND, CLUSTER_KINDS, LIST_SEPARATOR, RUNTIME_ATTR
from feature_store.transcripts import store_state
from sae_atlas.config import OrganizeConfig, to_dict
from sae_atlas.errors import SaeAtlasError
from sae_atlas.reproducible import (
    PORTABLE_CPU,
    curve_parameters,
    hdbscan_clusters,
    pin_numba_target,
    spectral_init,
)
from sae_atlas.sae import sae_weights
from sae_atlas.stages.base import Stopwatch, json_ready

FAMILIES: tuple[str, ...] = tuple(kind for kind in CLUSTER_KINDS if kind != "other")
"""Tag families that can name a cluster's kind: a tag's text before ':'."""
CLUSTER_SELECTIONS = ("eom", "leaf")
KNN_BLOCK_ROWS = 1024
"""Rows of cosines computed at a time by `cosine_knn` (memory: KNN_BLOCK_ROWS x n floats)."""
LABEL_TOKENS = 3
"""Top tokens in a cluster's label."""
TOKENS_PER_MEMBER = 3
"""Leading top tokens of each member counted for the label."""
DOMINANT_PERSONAS = 3
MIN_PERSONA_SHARE = 0.1
"""A persona is dominant in a cluster when it is the best persona of this share of its members."""
NEAREST_PERSONAS = 3
"""Nearest and farthest personas from the default reported in the summary."""
SAE_PARAMETERS = ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")
"""Parameters the atlas schema describes; any other parameter of the SAE is stored as well."""
RESULT_INDEPENDENT = ("n_jobs",)
"""Config fields that do not change the atlas (left out of the stage identity)."""

if TYPE_CHECKING:
    from sae_lens import SAE

Progress = Callable[[str], None]
ORGANIZE_STEPS = (
    "knn",
    "umap_nd",
    "hdbscan",
    "umap_2d",
    "profile_clusters",
    "stability",
    "kinds",
    "persona_space",
    "write",
)
"""The steps `organize` reports to `progress`, in order."""


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


@dataclass(frozen=True)
class OrganizeResult:
    """The atlas written (or found complete), the seconds per step and the JSON summary."""

    path: Path
    skipped: bool
    seconds: float
    timings: dict[str, float]
    summary: dict[str, Any]


def check_config(config: OrganizeConfig) -> None:
    """SaeAtlasError for settings that cannot run, before any work."""
    if config.cluster_selection not in CLUSTER_SELECTIONS:
        raise SaeAtlasError(
            f"organize: cluster_selection {config.cluster_selection!r}; use one of "
            f"{', '.join(CLUSTER_SELECTIONS)}"
        )
    checks = {
        "n_neighbors >= 2": config.n_neighbors >= 2,
        "cluster_dims >= 2": config.cluster_dims >= 2,
        "n_epochs >= 1": config.n_epochs >= 1,
        "min_cluster_size >= 2": config.min_cluster_size >= 2,
        "min_samples >= 1": config.min_samples >= 1,
        "stability_reruns >= 0": config.stability_reruns >= 0,
        "0 < stability_fraction < 1": 0 < config.stability_fraction < 1,
        "0 < stability_jaccard <= 1": 0 < config.stability_jaccard <= 1,
        "n_components >= 1": config.n_components >= 1,
        "max_persona_clusters >= 1": config.max_persona_clusters >= 1,
        "n_jobs >= 1": config.n_jobs >= 1,
    }
    failed = [rule for rule, ok in checks.items() if not ok]
    if failed:
        raise SaeAtlasError(f"organize: config needs {', '.join(failed)}")


def min_points(config: OrganizeConfig) -> int:
    """Fewest rows the clustering pipeline accepts: a kNN graph and two minimal clusters."""
    return max(config.n_neighbors + 1, 2 * config.min_cluster_size)


# -- feature clusters -------------------------------------------------------------------------


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """float32 [n, d]: rows scaled to unit length (zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def cosine_knn(unit: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest rows of `unit` [n, d] by cosine, each row itself first.

    Returns indices int64 [n, k] and cosine distances (1 - cosine) float32 [n, k], nearest
    first, ties by index. A float32 matmul in blocks of KNN_BLOCK_ROWS rows (n^2 d
    multiply-adds) picks 2k candidates per row; their cosines are recomputed in float64 (n 2k d)
    and rounded to float32, so the graph does not depend on the CPU's BLAS kernel, whose float32
    rounding does (and which UMAP's layout amplifies).
    """
    n = len(unit)
    n_candidates = min(2 * k, n)
    unit64 = unit.astype(np.float64)
    indices = np.empty((n, k), dtype=np.int64)
    distances = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, KNN_BLOCK_ROWS):
        rows = np.arange(start, min(start + KNN_BLOCK_ROWS, n))
        cosine = unit[rows] @ unit.T
        cosine[np.arange(len(rows)), rows] = np.inf
        candidates = np.argpartition(-cosine, n_candidates - 1, axis=1)[:, :n_candidates]
        exact = np.stack(
            [np.einsum("ij,ij->i", unit64[rows], unit64[column]) for column in candidates.T], 1
        ).astype(np.float32)
        exact[candidates == rows[:, None]] = np.inf
        order = np.lexsort((candidates, -exact), axis=1)[:, :k]
        indices[rows] = np.take_along_axis(candidates, order, axis=1)
        distance = 1.0 - np.take_along_axis(exact, order, axis=1)
        distance[:, 0] = 0.0
        distances[rows] = np.clip(distance, 0.0, 2.0)
    return indices, distances


def embed(
    unit: np.ndarray,
    knn: tuple[np.ndarray, np.ndarray],
    n_components: int,
    min_dist: float,
    config: OrganizeConfig,
    seed: int,
) -> np.ndarray:
    """UMAP of `unit` [n, d] from its cosine kNN graph into float32 [n, n_components].

    The same on every x86-64 CPU for a seed (sae_atlas.reproducible): numba compiles UMAP's
    kernels for a fixed target, the layout starts from `spectral_init`, and UMAP's curve
    parameters are rounded."""
    if not pin_numba_target():
        warnings.warn(
            "organize: numba compiles for another CPU than the portable one, so UMAP's "
            "layouts may differ between CPU kinds; for the same layouts everywhere, set "
            f"NUMBA_CPU_NAME={PORTABLE_CPU} before Python starts",
            RuntimeWarning,
            stacklevel=2,
        )
    import umap

    a, b = curve_parameters(min_dist)
    reducer = umap.UMAP(
        n_neighbors=knn[0].shape[1],
        n_components=n_components,
        min_dist=min_dist,
        a=a,
        b=b,
        init=spectral_init(unit, knn, n_components, seed),
        metric="cosine",
        n_epochs=config.n_epochs,
        random_state=seed,
        n_jobs=config.n_jobs,
        low_memory=True,
        precomputed_knn=knn,
    )
    with warnings.catch_warnings():
        # the precomputed graph has no search index (no transform needed), and a fixed
        # random_state makes UMAP single-threaded: both are warned about and both are intended
        warnings.filterwarnings("ignore", category=UserWarning, module="umap")
        return np.asarray(reducer.fit_transform(unit), dtype=np.float32)


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


# -- cluster kinds, personas, labels ----------------------------------------------------------


def tag_families(tags: Sequence[str]) -> np.ndarray:
    """bool [n, len(FAMILIES)]: which tag families each ';'-separated tag list holds."""
    out = np.zeros((len(tags), len(FAMILIES)), dtype=bool)
    column = {family: f for f, family in enumerate(FAMILIES)}
    for row, tag_list in enumerate(tags):
        for tag in tag_list.split(";"):
            f = column.get(tag.split(":", 1)[0].strip())
            if f is not None:
                out[row, f] = True
    return out


def cluster_kinds(
    labels: np.ndarray, families: np.ndarray, config: OrganizeConfig
) -> tuple[list[str], np.ndarray]:
    """The kind of each cluster of `labels` [n] (ids 0..n_clusters-1, -1 noise) from the tag
    families [n, F] of the same n features (the population the base rates come from).

    Returns the kinds and -log10 p-values [n_clusters, F] of the enrichment of each family."""
    n_clusters = int(labels.max()) + 1
    population = len(labels)
    tagged = families.sum(axis=0)
    threshold = config.kind_alpha / max(n_clusters * len(FAMILIES), 1)
    kinds: list[str] = []
    scores = np.zeros((n_clusters, len(FAMILIES)))
    for cluster in range(n_clusters):
        members = labels == cluster
        size = int(members.sum())
        hits = families[members].sum(axis=0)
        p_value = hypergeom.sf(hits - 1, population, tagged, size)
        scores[cluster] = -np.log10(np.maximum(p_value, 1e-300))
        share = hits / size
        base = tagged / population
        qualifies = (
            (hits > 0)
            & (p_value < threshold)
            & (share >= config.kind_share)
            & (share >= config.kind_enrichment * base)
        )
        if qualifies.any():
            candidates = np.flatnonzero(qualifies)
            best = max(candidates, key=lambda f: (scores[cluster, f], share[f]))
            kinds.append(FAMILIES[best])
        else:
            kinds.append("other")
    return kinds, scores


def dominant_personas(best_persona: np.ndarray, names: Sequence[str]) -> list[tuple[str, float]]:
    """The personas that are the best persona (index, -1: none) of at least MIN_PERSONA_SHARE
    of a cluster's members, with that share, most first (at most DOMINANT_PERSONAS)."""
    counts = np.bincount(best_persona[best_persona >= 0], minlength=len(names))
    order = np.argsort(-counts, kind="stable")[:DOMINANT_PERSONAS]
    size = max(len(best_persona), 1)
    return [
        (str(names[p]), counts[p] / size) for p in order if counts[p] / size >= MIN_PERSONA_SHARE
    ]


def common_tokens(top_tokens: Sequence[str]) -> list[str]:
    """The LABEL_TOKENS most common among the leading TOKENS_PER_MEMBER top tokens of each
    member (' | '-separated lists; whitespace-only tokens skipped)."""
    counter: Counter[str] = Counter()
    for tokens in top_tokens:
        leading = [t.strip() for t in tokens.split(LIST_SEPARATOR)[:TOKENS_PER_MEMBER]]
        counter.update(t for t in leading if t)
    return [token for token, _ in counter.most_common(LABEL_TOKENS)]


def cluster_label(
    kind: str, tags: Sequence[str], personas: Sequence[str], tokens: Sequence[str]
) -> str:
    """'persona:pirate: ahoy, matey, ship': the most common member tag of the kind's family
    (kind other: the dominant persona, else 'other'), then the common top tokens."""
    head = personas[0] if kind == "other" and personas else kind
    if kind != "other":
        family_tags = Counter(
            t for tag_list in tags for t in tag_list.split(";") if t.split(":", 1)[0] == kind
        )
        if family_tags:
            head = family_tags.most_common(1)[0][0]
    return f"{head}: {', '.join(tokens)}" if tokens else head


def cluster_table(
    cluster: np.ndarray,
    features: pd.DataFrame,
    best_persona: np.ndarray,
    persona_names: Sequence[str],
    kinds: Sequence[str],
    reappears: np.ndarray,
) -> pd.DataFrame:
    """The clusters/ table: id, kind, size, label, dominant_personas, stability; `cluster`
    [d_sae] ids, `best_persona` [d_sae] each feature's best persona (-1: none)."""
    rows = []
    tags = features["tags"].to_numpy()
    top_tokens = features["top_tokens"].to_numpy()
    for c, kind in enumerate(kinds):
        members = np.flatnonzero(cluster == c)
        dominant = dominant_personas(best_persona[members], persona_names)
        rows.append(
            {
                "id": c,
                "kind": kind,
                "size": len(members),
                "label": cluster_label(
                    kind,
                    tags[members],
                    [name for name, _ in dominant],
                    common_tokens(top_tokens[members]),
                ),
                "dominant_personas": ";".join(f"{n}:{s:.2f}" for n, s in dominant),
                "stability": float(reappears[c]),
            }
        )
    columns = ["id", "kind", "size", "label", "dominant_personas", "stability"]
    return pd.DataFrame(rows, columns=columns)


# -- persona space ----------------------------------------------------------------------------


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


# -- the stage --------------------------------------------------------------------------------


def input_digest(labels: Labels, weights: dict[str, np.ndarray]) -> str:
    """sha1 of what the atlas is computed from: the labels' tables and arrays, the SAE."""
    digest = hashlib.sha1()
    for table in (labels.features, labels.examples, labels.personas):
        digest.update(pd.util.hash_pandas_object(table, index=False).to_numpy().tobytes())
    arrays = [labels.top_persona_index, labels.top_persona_score, labels.persona_vectors]
    arrays += [labels.persona_profiles, *(weights[name] for name in sorted(weights))]
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    digest.update(f"{labels.hook}|{labels.model}|{labels.default_persona}".encode())
    return digest.hexdigest()


def check_inputs(labels: Labels, weights: dict[str, np.ndarray]) -> int:
    """SaeAtlasError when labels and SAE do not fit together; returns the default's row."""
    d_sae, d_model = weights["W_dec"].shape
    if labels.d_sae != d_sae:
        raise SaeAtlasError(
            f"organize: the labels describe {labels.d_sae} features but the SAE has {d_sae}; "
            "give the SAE the labels were computed with"
        )
    n_personas = len(labels.personas)
    if labels.persona_vectors.shape != (n_personas, d_model):
        raise SaeAtlasError(
            f"organize: persona vectors have shape {labels.persona_vectors.shape}, expected "
            f"({n_personas}, {d_model}) (personas x the SAE's d_model)"
        )
    if labels.persona_profiles.shape != (n_personas, d_sae):
        raise SaeAtlasError(
            f"organize: persona profiles have shape {labels.persona_profiles.shape}, expected "
            f"({n_personas}, {d_sae})"
        )
    names = labels.personas["name"].astype(str).tolist()
    if labels.default_persona not in names:
        raise SaeAtlasError(
            f"organize: the default persona {labels.default_persona!r} is not among the "
            f"personas ({', '.join(names[:5])}, ...); relabel with the default included"
        )
    if n_personas < 2:
        raise SaeAtlasError("organize: persona space needs the default and at least one role")
    return names.index(labels.default_persona)


def _read_summary(path: Path) -> OrganizeResult:
    with Atlas.open(path) as atlas:
        summary = json.loads(atlas.attrs["organize_summary"])
        timings = json.loads(atlas.attrs["organize_timings"])
    return OrganizeResult(path, skipped=True, seconds=0.0, timings=timings, summary=summary)


def organize(
    labels: Labels,
    sae: SAE[Any],
    out_atlas: str | Path,
    config: OrganizeConfig,
    progress: Progress | None = None,
    records: Mapping[str, Any] | None = None,
) -> OrganizeResult:
    """Cluster the features, build persona space and write the atlas to `out_atlas`.

    `labels`: the label stage's result; `sae`: the sae-lens SAE it describes (W_dec [d_sae,
    d_model]); `progress(step)` is called as each step starts (knn, umap_nd, hdbscan, umap_2d,
    profile_clusters, stability, kinds, persona_space, write). Skipped when `out_atlas` is
    complete for the same input and config; StoreError when it holds another one. `records`:
    JSON-ready records of earlier stages (SAE training and evaluation, build timings), stored as
    root attributes of the atlas under their names.
    """
    started = time.perf_counter()
    check_config(config)
    out = Path(out_atlas)
    weights, sae_config = sae_weights(sae)
    default_row = check_inputs(labels, weights)
    stage_config = {
        **{k: v for k, v in to_dict(config).items() if k not in RESULT_INDEPENDENT},
        "hook": labels.hook,
        "input_digest": input_digest(labels, weights),
    }
    if store_state(out, ATLAS_KIND, labels.model, stage_config) == "complete":
        return _read_summary(out)
    clock = Stopwatch(progress)
    d_sae, d_model = weights["W_dec"].shape
    density = labels.features["density"].to_numpy(dtype=np.float64)
    alive = (density > 0) & (np.linalg.norm(weights["W_dec"], axis=1) > 0)
    n_alive = int(alive.sum())
    if n_alive < min_points(config):
        raise SaeAtlasError(
            f"organize: only {n_alive} of {d_sae} features are alive (density > 0); clustering "
            f"needs at least {min_points(config)}: lower organize.n_neighbors or "
            "organize.min_cluster_size, or label on more tokens"
        )
    names = labels.personas["name"].astype(str).tolist()
    with threadpool_limits(config.n_jobs):
        with clock.step("knn"):
            unit = unit_rows(weights["W_dec"][alive])
            knn = cosine_knn(unit, config.n_neighbors)
        with clock.step("umap_nd"):
            embedding = embed(
                unit, knn, config.cluster_dims, config.cluster_min_dist, config, config.seed
            )
        with clock.step("hdbscan"):
            alive_cluster = hdbscan_labels(embedding, config)
        with clock.step("umap_2d"):
            map_xy = embed(unit, knn, 2, config.map_min_dist, config, config.seed)
        cluster = np.full(d_sae, -1, dtype=np.int64)
        cluster[alive] = alive_cluster
        with clock.step("profile_clusters"):
            compared, profile_cluster, ami = profile_clusters(
                labels.persona_profiles, alive, cluster, config
            )
        with clock.step("stability"):
            stable = stability(unit, alive_cluster, config)
        with clock.step("kinds"):
            tags = labels.features["tags"].fillna("").astype(str).tolist()
            families = tag_families(tags)
            kinds, _ = cluster_kinds(alive_cluster, families[alive], config)
            top = np.asarray(labels.top_persona_index)
            best_persona = top[:, 0] if top.shape[1] else np.full(d_sae, -1)
            clusters = cluster_table(
                cluster, labels.features, best_persona, names, kinds, stable.reappears
            )
        with clock.step("persona_space"):
            space = persona_space(
                labels.persona_vectors,
                default_row,
                config.n_components,
                config.max_persona_clusters,
            )
    summary = json_ready(
        {
            "n_features": d_sae,
            "n_alive": n_alive,
            "n_clustered": int((cluster >= 0).sum()),
            "n_clusters": len(clusters),
            "clusters_per_kind": {k: kinds.count(k) for k in CLUSTER_KINDS if k in kinds},
            "features_per_kind": {
                k: int(clusters.loc[clusters["kind"] == k, "size"].sum())
                for k in CLUSTER_KINDS
                if k in kinds
            },
            "stability": {"fraction": config.stability_fraction, **stable.summary()},
            "profile_clusters": {
                "n_features": int(compared.sum()),
                "n_clusters": int(profile_cluster.max()) + 1,
                "ami_with_decoder_clusters": ami,
            },
            "persona_space": persona_summary(space, labels.persona_vectors, names, default_row),
        }
    )
    map_x = np.full(d_sae, np.nan, dtype=np.float32)
    map_y = np.full(d_sae, np.nan, dtype=np.float32)
    map_x[alive], map_y[alive] = map_xy[:, 0], map_xy[:, 1]
    features = labels.features.assign(cluster=cluster.astype(np.int32), map_x=map_x, map_y=map_y)
    personas = labels.personas[["name", "category", "prompts"]].assign(
        axis_projection=space.axis_projection
    )
    extra = [name for name in weights if name not in SAE_PARAMETERS]
    runtime = {"dtype": None, "device": "cpu", "threads": config.n_jobs, "reason": "runs no model"}
    attrs = {
        "hook": labels.hook,
        "organize_summary": json.dumps(summary),
        "organize_timings": json.dumps(clock.seconds),
        "labels_summary": json.dumps(json_ready(labels.summary)),
        "labels_config": json.dumps(json_ready(labels.config)),
        **{name: json.dumps(json_ready(value)) for name, value in (records or {}).items()},
        RUNTIME_ATTR: json.dumps({**labels.runtime, "organize": runtime}),
    }
    with (
        clock.step("write"),
        AtlasWriter(
            out, model=labels.model, config=stage_config, d_model=d_model, d_sae=d_sae, attrs=attrs
        ) as writer,
    ):
        writer.write_sae(
            weights, sae_config, {name: f"sae-lens parameter {name}" for name in extra}
        )
        writer.write_features(features, labels.top_persona_index, labels.top_persona_score)
        writer.write_examples(labels.examples)
        writer.write_personas(
            personas,
            vectors=labels.persona_vectors,
            profiles=labels.persona_profiles,
            coords=space.coords,
        )
        writer.write_persona_space(
            assistant_axis=space.assistant_axis,
            center=space.center,
            components=space.components,
            explained_variance=space.explained_variance,
        )
        writer.write_clusters(clusters)
    return OrganizeResult(out, False, time.perf_counter() - started, clock.seconds, summary)
