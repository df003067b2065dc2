"""What organize checks before any work and what decides its output: the config, labels and SAE
fitting together, the stage identity (config and a digest of the inputs), the alive features.

Cost: one pass over the labels' tables and arrays and the SAE's parameters for the digest (well
under a second for 16,000 features).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd

from feature_store.labels import Labels
from sae_atlas.config import OrganizeConfig, to_dict
from sae_atlas.errors import SaeAtlasError
from sae_atlas.stages.organize.clusters import min_points

CLUSTER_SELECTIONS = ("eom", "leaf")
RESULT_INDEPENDENT = ("n_jobs",)
"""Config fields that do not change the atlas (left out of the stage identity)."""


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


def stage_identity(
    labels: Labels, weights: dict[str, np.ndarray], config: OrganizeConfig
) -> dict[str, Any]:
    """What decides the atlas (its recorded config): the config but RESULT_INDEPENDENT, the
    hook, and the `input_digest` of labels and SAE."""
    return {
        **{k: v for k, v in to_dict(config).items() if k not in RESULT_INDEPENDENT},
        "hook": labels.hook,
        "input_digest": input_digest(labels, weights),
    }


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
    names = persona_names(labels)
    if labels.default_persona not in names:
        raise SaeAtlasError(
            f"organize: the default persona {labels.default_persona!r} is not among the "
            f"personas ({', '.join(names[:5])}, ...); relabel with the default included"
        )
    if n_personas < 2:
        raise SaeAtlasError("organize: persona space needs the default and at least one role")
    return names.index(labels.default_persona)


def persona_names(labels: Labels) -> list[str]:
    """The personas' names, in the order of the labels' persona rows."""
    return labels.personas["name"].astype(str).tolist()


def alive_features(labels: Labels, w_dec: np.ndarray, config: OrganizeConfig) -> np.ndarray:
    """bool [d_sae]: the features that fire (density > 0) and have a non-zero decoder row
    `w_dec` [d_sae, d_model]; SaeAtlasError when too few are alive to cluster."""
    density = labels.features["density"].to_numpy(dtype=np.float64)
    alive = (density > 0) & (np.linalg.norm(w_dec, axis=1) > 0)
    n_alive = int(alive.sum())
    if n_alive < min_points(config):
        raise SaeAtlasError(
            f"organize: only {n_alive} of {len(w_dec)} features are alive (density > 0); "
            f"clustering needs at least {min_points(config)}: lower organize.n_neighbors or "
            "organize.min_cluster_size, or label on more tokens"
        )
    return alive
