"""Layout of atlas.h5 (kind sae-atlas/atlas): written once by feature_store.atlas.AtlasWriter,
then read-only.

Unlike the append-only stores, the atlas is written whole into a temporary file and renamed into
place, so its strings are variable length and its shapes are known when written. Each dataset is
an `ArraySpec` whose `shape` names its axes; the writer binds the sizes (d_sae, n_personas, ...)
on first sight and checks every later dataset against them. Here: personas/, persona_space/,
clusters/, the group and root attribute descriptions, and ATLAS_SPECS, every dataset of the
atlas (sae/ and features/ are declared in feature_store.schema.atlas_features; experiments/,
whose tables are described by what writes them, in feature_store.schema.experiments).
"""

from __future__ import annotations

from feature_store.schema.atlas_features import (
    EXAMPLE_COLUMNS,
    EXAMPLE_INDEX,
    FEATURE_COLUMNS,
    FEATURE_PERSONA_ARRAYS,
    SAE_ARRAYS,
)
from feature_store.schema.base import ROOT_ATTRS, ArraySpec
from feature_store.schema.experiments import EXPERIMENTS_DESCRIPTION, EXPERIMENTS_GROUP

ATLAS_KIND = "sae-atlas/atlas"

CLUSTER_KINDS: tuple[str, ...] = (
    "persona",
    "roleplay",
    "assistant",
    "puppeteer",
    "trigger",
    "other",
)

PERSONA_COLUMNS: tuple[ArraySpec, ...] = (
    ArraySpec("personas/name", "text", ("n_personas",), "persona name (unique)"),
    ArraySpec("personas/category", "text", ("n_personas",), "category of the persona"),
    ArraySpec(
        "personas/prompts",
        "text",
        ("n_personas",),
        "JSON list of the persona's system-prompt variants",
    ),
    ArraySpec(
        "personas/axis_projection",
        "float32",
        ("n_personas",),
        "projection of the persona vector on persona_space/assistant_axis",
        "model units",
    ),
)
"""One value per persona: the columns of the DataFrame given to AtlasWriter.write_personas."""

PERSONA_ARRAYS: tuple[ArraySpec, ...] = (
    ArraySpec(
        "personas/vector",
        "float32",
        ("n_personas", "d_model"),
        "persona vector: mean residual activation over the persona's response tokens",
        "model units",
    ),
    ArraySpec(
        "personas/profile",
        "float32",
        ("n_personas", "d_sae"),
        "SAE profile: mean activation of each feature over the persona's response tokens",
        "SAE activation",
    ),
    ArraySpec(
        "personas/coords",
        "float32",
        ("n_personas", "n_components"),
        "coordinates in persona space: the centred persona vector projected on "
        "persona_space/components",
        "model units",
    ),
)

PERSONA_SPACE_ARRAYS: tuple[ArraySpec, ...] = (
    ArraySpec(
        "persona_space/assistant_axis",
        "float32",
        ("d_model",),
        "assistant axis: default persona vector minus the mean of the role persona vectors",
        "model units",
    ),
    ArraySpec(
        "persona_space/center",
        "float32",
        ("d_model",),
        "mean persona vector, subtracted before projecting on the components",
        "model units",
    ),
    ArraySpec(
        "persona_space/components",
        "float32",
        ("n_components", "d_model"),
        "principal components of the persona vectors (unit rows), most variance first",
    ),
    ArraySpec(
        "persona_space/explained_variance",
        "float32",
        ("n_components",),
        "fraction of the persona vectors' variance each component explains",
        "fraction",
    ),
)

CLUSTER_COLUMNS: tuple[ArraySpec, ...] = (
    ArraySpec("clusters/id", "int32", ("n_clusters",), "cluster id, as in features/cluster"),
    ArraySpec(
        "clusters/kind",
        "text",
        ("n_clusters",),
        "kind of cluster: " + ", ".join(CLUSTER_KINDS),
    ),
    ArraySpec("clusters/size", "int32", ("n_clusters",), "number of features in the cluster"),
    ArraySpec("clusters/label", "text", ("n_clusters",), "short human-readable label"),
    ArraySpec(
        "clusters/dominant_personas",
        "text",
        ("n_clusters",),
        "personas most of its features are tagged for, with the share of its features: "
        "'pirate:0.40;villain:0.25'",
    ),
    ArraySpec(
        "clusters/stability",
        "float32",
        ("n_clusters",),
        "fraction of resampled clusterings in which the cluster reappears",
        "fraction",
    ),
)

ATLAS_SPECS: tuple[ArraySpec, ...] = (
    SAE_ARRAYS
    + FEATURE_COLUMNS
    + FEATURE_PERSONA_ARRAYS
    + EXAMPLE_INDEX
    + EXAMPLE_COLUMNS
    + PERSONA_COLUMNS
    + PERSONA_ARRAYS
    + PERSONA_SPACE_ARRAYS
    + CLUSTER_COLUMNS
)

ATLAS_GROUP_DESCRIPTIONS: dict[str, str] = {
    "sae": "the sparse autoencoder the atlas describes: its parameters, and its config as JSON in "
    "the `config` attribute",
    "features": "one row per SAE feature: statistics, tags, cluster, map position, label, logit "
    "effects, top personas, held-out AUROC",
    "features/examples": "top and quantile example contexts of every feature, sorted by feature; "
    "features/example_start and example_count index them",
    "personas": "one row per persona: name, category, prompts, persona vector, SAE profile, "
    "coordinates in persona space",
    "persona_space": "the space personas are placed in: assistant axis and principal components "
    "of the persona vectors",
    "clusters": "one row per feature cluster: id, kind, size, label, dominant personas, stability",
    "dynamics": "where multi-turn conversations flow in persona space: trajectories, transition "
    "matrix, stationary distribution, attractors",
    EXPERIMENTS_GROUP: EXPERIMENTS_DESCRIPTION,
}

ATLAS_ROOT_ATTRS: dict[str, str] = {
    "schema": f"kind of file ({ATLAS_KIND})",
    "schema_version": ROOT_ATTRS["schema_version"],
    "created": ROOT_ATTRS["created"],
    "sae_atlas_version": ROOT_ATTRS["sae_atlas_version"],
    "model": "model id the SAE was trained on",
    "config": ROOT_ATTRS["config"],
    "complete": "always true: the atlas is written whole and renamed into place",
    "d_model": "width of the model's residual stream",
    "d_sae": "number of SAE features",
    "runtime": "JSON {stage: {dtype, device, threads, reason}}: how label, organize and dynamics "
    "ran",
    "organize_summary": "JSON of what organize found; persona_space.default_persona names the "
    "default persona",
}

ORGANIZE_SUMMARY_ATTR = "organize_summary"
"""Root attribute organize writes: JSON of its summary. `Atlas.default_persona` reads the default
persona's name from it (persona_space.default_persona)."""

DEFAULT_CATEGORY = "default"
"""personas/category of the default persona and of the neutral assistant personas."""

DEFAULT_PERSONA_NAME = "assistant"
"""Name of the default persona among those of DEFAULT_CATEGORY (the persona catalogue's rule,
and the atlas's when organize recorded none)."""

REGIONS_ENTRY = "regions"
"""dynamics/ table of the regions of persona space, one row per row of transition_matrix: id,
name, personas (';'-separated), stationary, in_attractor (`Atlas.regions`)."""

REGION_CENTROIDS_ENTRY = "region_centroids"
"""dynamics/ array [n_regions, n_components]: each region's centroid in persona space."""
