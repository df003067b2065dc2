"""Organize labeled SAE features into the atlas: feature clusters, a 2-D map and persona space.

`organize(labels, sae, out_atlas, config)` (`stage`) clusters the alive features' decoder
directions by cosine (kNN graph, UMAP, HDBSCAN; `graph`, `clusters`), lays them out on a 2-D
map, clusters their persona profiles and compares the two clusterings (`clusters`), measures how
stable the clusters are over reclusterings of subsamples (`cluster_stability`), names each cluster's
kind, dominant personas and label (`kinds`), builds persona space with its assistant axis
(`personas`), and writes the atlas (`output`). For a seed, graph, embeddings and clusters are the
same on every x86-64 CPU (AVX2 or AVX-512; sae_atlas.reproducible). Costs: in `stage`.

Modules: graph (unit rows, cosine kNN, UMAP), clusters (HDBSCAN, profile clusters),
cluster_stability, kinds (cluster kinds, dominant personas, labels, the clusters table), personas
(persona space), inputs (checks, identity, alive features), features (the clustering steps),
output (summary, attributes, the atlas file), stage (the stage function).
"""

from sae_atlas.stages.organize.cluster_stability import Stability, best_jaccard, stability
from sae_atlas.stages.organize.clusters import (
    by_size,
    cluster_rows,
    hdbscan_labels,
    min_points,
    profile_clusters,
    zscored_profiles,
)
from sae_atlas.stages.organize.features import FeatureClusters, feature_clusters
from sae_atlas.stages.organize.graph import KNN_BLOCK_ROWS, cosine_knn, embed, unit_rows
from sae_atlas.stages.organize.inputs import (
    CLUSTER_SELECTIONS,
    RESULT_INDEPENDENT,
    check_config,
    check_inputs,
    input_digest,
)
from sae_atlas.stages.organize.kinds import (
    DOMINANT_PERSONAS,
    FAMILIES,
    LABEL_TOKENS,
    MIN_PERSONA_SHARE,
    TOKENS_PER_MEMBER,
    cluster_kinds,
    cluster_label,
    cluster_table,
    common_tokens,
    dominant_personas,
    tag_families,
)
from sae_atlas.stages.organize.output import SAE_PARAMETERS
from sae_atlas.stages.organize.personas import (
    NEAREST_PERSONAS,
    PersonaSpace,
    persona_clusters,
    persona_space,
    persona_summary,
)
from sae_atlas.stages.organize.stage import ORGANIZE_STEPS, OrganizeResult, organize

__all__ = [
    "CLUSTER_SELECTIONS",
    "DOMINANT_PERSONAS",
    "FAMILIES",
    "KNN_BLOCK_ROWS",
    "LABEL_TOKENS",
    "MIN_PERSONA_SHARE",
    "NEAREST_PERSONAS",
    "ORGANIZE_STEPS",
    "RESULT_INDEPENDENT",
    "SAE_PARAMETERS",
    "TOKENS_PER_MEMBER",
    "FeatureClusters",
    "OrganizeResult",
    "PersonaSpace",
    "Stability",
    "best_jaccard",
    "by_size",
    "check_config",
    "check_inputs",
    "cluster_kinds",
    "cluster_label",
    "cluster_rows",
    "cluster_table",
    "common_tokens",
    "cosine_knn",
    "dominant_personas",
    "embed",
    "feature_clusters",
    "hdbscan_labels",
    "input_digest",
    "min_points",
    "organize",
    "persona_clusters",
    "persona_space",
    "persona_summary",
    "profile_clusters",
    "stability",
    "tag_families",
    "unit_rows",
    "zscored_profiles",
]
