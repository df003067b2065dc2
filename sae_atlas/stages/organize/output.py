"""What organize writes: the JSON summary of the atlas, its root attributes, and the atlas file
itself (AtlasWriter: the SAE, features with their clusters and map positions, examples,
personas with their coordinates, persona space, clusters).

Cost: about a second to write the atlas of 16,000 features.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from feature_store.atlas import AtlasWriter
from feature_store.labels import Labels
from feature_store.schema import CLUSTER_KINDS, RUNTIME_ATTR
from sae_atlas.config import OrganizeConfig
from sae_atlas.stages.base import json_ready
from sae_atlas.stages.organize.features import FeatureClusters
from sae_atlas.stages.organize.inputs import persona_names
from sae_atlas.stages.organize.personas import PersonaSpace, persona_summary

SAE_PARAMETERS = ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")
"""Parameters the atlas schema describes; any other parameter of the SAE is stored as well."""


def organize_summary(
    labels: Labels,
    found: FeatureClusters,
    space: PersonaSpace,
    config: OrganizeConfig,
    default_row: int,
) -> dict[str, Any]:
    """JSON-ready: feature and cluster counts (per kind), stability, the persona-profile
    clustering and the figures of persona space."""
    kinds, clusters = found.kinds, found.table
    return json_ready(
        {
            "n_features": len(found.cluster),
            "n_alive": int(found.alive.sum()),
            "n_clustered": int((found.cluster >= 0).sum()),
            "n_clusters": len(clusters),
            "clusters_per_kind": {k: kinds.count(k) for k in CLUSTER_KINDS if k in kinds},
            "features_per_kind": {
                k: int(clusters.loc[clusters["kind"] == k, "size"].sum())
                for k in CLUSTER_KINDS
                if k in kinds
            },
            "stability": {"fraction": config.stability_fraction, **found.stable.summary()},
            "profile_clusters": {
                "n_features": int(found.compared.sum()),
                "n_clusters": int(found.profile_cluster.max()) + 1,
                "ami_with_decoder_clusters": found.ami,
            },
            "persona_space": persona_summary(
                space, labels.persona_vectors, persona_names(labels), default_row
            ),
        }
    )


def atlas_attrs(
    labels: Labels,
    summary: dict[str, Any],
    timings: dict[str, float],
    records: Mapping[str, Any] | None,
    config: OrganizeConfig,
) -> dict[str, str]:
    """The atlas's root attributes (JSON text): hook, organize's summary and timings, the labels'
    summary and config, `records` under their names, and the runtimes (the labels' and
    organize's: numpy on the CPU)."""
    runtime = {"dtype": None, "device": "cpu", "threads": config.n_jobs, "reason": "runs no model"}
    return {
        "hook": labels.hook,
        "organize_summary": json.dumps(summary),
        "organize_timings": json.dumps(timings),
        "labels_summary": json.dumps(json_ready(labels.summary)),
        "labels_config": json.dumps(json_ready(labels.config)),
        **{name: json.dumps(json_ready(value)) for name, value in (records or {}).items()},
        RUNTIME_ATTR: json.dumps({**labels.runtime, "organize": runtime}),
    }


def write_atlas(
    out: Path,
    labels: Labels,
    sae: tuple[dict[str, np.ndarray], dict[str, Any]],
    identity: dict[str, Any],
    found: FeatureClusters,
    space: PersonaSpace,
    attrs: dict[str, str],
) -> None:
    """Write the atlas at `out`: `sae` (its weights [name -> array] and config), the labels with
    what organize `found` and persona `space`, `identity` as its config, `attrs` at its root."""
    weights, sae_config = sae
    d_sae, d_model = weights["W_dec"].shape
    map_x = np.full(d_sae, np.nan, dtype=np.float32)
    map_y = np.full(d_sae, np.nan, dtype=np.float32)
    map_x[found.alive], map_y[found.alive] = found.map_xy[:, 0], found.map_xy[:, 1]
    features = labels.features.assign(
        cluster=found.cluster.astype(np.int32), map_x=map_x, map_y=map_y
    )
    personas = labels.personas[["name", "category", "prompts"]].assign(
        axis_projection=space.axis_projection
    )
    extra = {name: f"sae-lens parameter {name}" for name in weights if name not in SAE_PARAMETERS}
    with AtlasWriter(
        out, model=labels.model, config=identity, d_model=d_model, d_sae=d_sae, attrs=attrs
    ) as writer:
        writer.write_sae(weights, sae_config, extra)
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
        writer.write_clusters(found.table)
