"""The organize stage: labels and SAE in, the atlas out.

`organize(labels, sae, out_atlas, config)` checks its inputs, skips when the atlas at
`out_atlas` is complete for the same input and config (`store_state`), clusters the features
(`features`), builds persona space (`personas`), and writes the whole atlas with the stage
config (with a digest of its input), timings and the JSON summary as root attributes
(`output`). Cost on the 2-core development CPU (one thread) for 16,000 features x d_model 576 and
100 personas (scripts/bench_organize.py): about 65 s with 3 stability reruns: each rerun about
11 s (a kNN graph and a UMAP), the profile clustering about 10 s, the kNN graph about 5 s, the two
UMAPs 5-9 s each, HDBSCAN about 1 s, persona space, kinds and labels well under a second, writing
about 1 s. A process also loads UMAP's numba kernels once (about 7-10 s from the on-disk cache;
compiling them on a fresh install takes 30-60 s). Memory: a 1,024 x n_alive block of cosines and
the UMAP graph.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from threadpoolctl import threadpool_limits

from feature_store.appendable import store_state
from feature_store.atlas import Atlas
from feature_store.labels import Labels
from feature_store.schema import ATLAS_KIND
from sae_atlas.config import OrganizeConfig
from sae_atlas.sae import sae_weights
from sae_atlas.stages.base import StageResult, StepProgress, Stopwatch
from sae_atlas.stages.organize.features import feature_clusters
from sae_atlas.stages.organize.inputs import (
    alive_features,
    check_config,
    check_inputs,
    stage_identity,
)
from sae_atlas.stages.organize.output import atlas_attrs, organize_summary, write_atlas
from sae_atlas.stages.organize.personas import persona_space

if TYPE_CHECKING:
    from sae_lens import SAE

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
class OrganizeResult(StageResult):
    """The atlas written (or found complete), its seconds, the seconds per step and the JSON
    summary."""

    timings: dict[str, float]
    summary: dict[str, Any]


def completed(path: Path) -> OrganizeResult:
    """The result of the complete atlas at `path` (skipped): its recorded timings and summary."""
    with Atlas.open(path) as atlas:
        summary = json.loads(atlas.attrs["organize_summary"])
        timings = json.loads(atlas.attrs["organize_timings"])
    return OrganizeResult(path, seconds=0.0, skipped=True, timings=timings, summary=summary)


def organize(
    labels: Labels,
    sae: SAE[Any],
    out_atlas: str | Path,
    config: OrganizeConfig,
    *,
    progress: StepProgress | None = None,
    records: Mapping[str, Any] | None = None,
) -> OrganizeResult:
    """Cluster the features, build persona space and write the atlas to `out_atlas`.

    `labels`: the label stage's result; `sae`: the sae-lens SAE it describes (W_dec [d_sae,
    d_model]); `progress(step)` is called as each step starts (ORGANIZE_STEPS). Skipped when
    `out_atlas` is complete for the same input and config; StoreError when it holds another one.
    `records`: JSON-ready records of earlier stages (SAE training and evaluation, build
    timings), stored as root attributes of the atlas under their names.
    """
    started = time.perf_counter()
    check_config(config)
    out = Path(out_atlas)
    weights, sae_config = sae_weights(sae)
    default_row = check_inputs(labels, weights)
    identity = stage_identity(labels, weights, config)
    if store_state(out, ATLAS_KIND, labels.model, identity) == "complete":
        return completed(out)
    clock = Stopwatch(progress)
    alive = alive_features(labels, weights["W_dec"], config)
    with threadpool_limits(config.n_jobs):
        found = feature_clusters(labels, weights["W_dec"], alive, config, clock)
        with clock.step("persona_space"):
            space = persona_space(
                labels.persona_vectors,
                default_row,
                config.n_components,
                config.max_persona_clusters,
            )
    summary = organize_summary(labels, found, space, config, default_row)
    attrs = atlas_attrs(labels, summary, dict(clock.seconds), records, config)
    with clock.step("write"):
        write_atlas(out, labels, (weights, sae_config), identity, found, space, attrs)
    return OrganizeResult(
        out,
        seconds=time.perf_counter() - started,
        skipped=False,
        timings=clock.seconds,
        summary=summary,
    )
