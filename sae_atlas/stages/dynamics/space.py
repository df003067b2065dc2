"""Persona space and its regions, as an atlas records them: where a residual point lies, which
region (persona cluster) a turn belongs to, and which personas rollouts start from.

`persona_map` reads the persona space (center, components, assistant axis), the personas and
their vectors, the default persona (`Atlas.default_persona`), and the persona clusters organize
recorded (recomputed from the coordinates when the atlas has none) into a `PersonaMap`;
`region_paths` places turn coordinates in regions. numpy on small arrays: milliseconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from feature_store.atlas import Atlas
from feature_store.schema import ORGANIZE_SUMMARY_ATTR
from sae_atlas.config import DynamicsConfig
from sae_atlas.errors import SaeAtlasError
from sae_atlas.stages.dynamics.markov import nearest_region
from sae_atlas.stages.organize import persona_clusters


@dataclass(frozen=True)
class PersonaMap:
    """An atlas's persona space and its regions.

    center [d_model], components [k, d_model], unit_axis [d_model] (the assistant axis, unit
    norm); one region per persona cluster: centroids [r, k] (mean coordinates of its personas),
    names (the default persona's region is "assistant", another is named after its persona
    nearest the centroid), members; personas: the atlas's persona table with a `region` column;
    vectors: persona vectors [P, d_model] in table order; default: the default persona's name.
    """

    center: np.ndarray
    components: np.ndarray
    unit_axis: np.ndarray
    centroids: np.ndarray
    names: tuple[str, ...]
    members: tuple[tuple[str, ...], ...]
    personas: pd.DataFrame
    vectors: np.ndarray
    default: str

    def coords(self, points: np.ndarray) -> np.ndarray:
        """Coordinates [..., k] of residual points [..., d_model]."""
        return (np.asarray(points, dtype=np.float64) - self.center) @ self.components.T

    def axis(self, points: np.ndarray) -> np.ndarray:
        """Projection [...] of residual points [..., d_model] on the assistant axis."""
        return (np.asarray(points, dtype=np.float64) - self.center) @ self.unit_axis

    def vector(self, name: str) -> np.ndarray:
        rows = np.flatnonzero(self.personas["name"].to_numpy() == name)
        if len(rows) == 0:
            raise SaeAtlasError(f"no persona {name!r} in the atlas; see Atlas.personas()")
        return self.vectors[rows[0]]

    def prompt(self, name: str, variant: int) -> str | None:
        """The persona's system prompt number `variant` (cycling; None: no system message)."""
        prompts = self.personas.loc[self.personas["name"] == name, "prompts"].iloc[0]
        return prompts[variant % len(prompts)] if prompts else None

    def region_of(self, name: str) -> int:
        return int(self.personas.loc[self.personas["name"] == name, "region"].iloc[0])


def recorded_persona_space(atlas: Atlas) -> dict[str, Any]:
    """What organize recorded about the persona space (organize_summary's persona_space: the
    persona clusters as cluster_of); {} when the atlas has none."""
    return dict(json.loads(atlas.attrs.get(ORGANIZE_SUMMARY_ATTR, "{}")).get("persona_space", {}))


def persona_regions(
    atlas: Atlas, names: list[str], coords: np.ndarray, max_clusters: int
) -> np.ndarray:
    """Region [P] of each of the atlas's personas `names`: its persona cluster as organize
    recorded it (else clustered again from their coordinates [P, k]), clusters numbered in
    sorted order of their ids."""
    cluster_of = recorded_persona_space(atlas).get("cluster_of") or dict(
        zip(names, persona_clusters(coords, max_clusters).tolist(), strict=True)
    )
    ids = sorted(set(cluster_of.values()))
    return np.array([ids.index(cluster_of[name]) for name in names])


def region_names(
    names: list[str], coords: np.ndarray, region: np.ndarray, default: str
) -> tuple[np.ndarray, list[str], list[tuple[str, ...]]]:
    """Per region of personas `names` with coordinates [P, k] and `region` [P]: its centroid
    [r, k], its name (the default persona's region is "assistant", another is named after its
    persona nearest the centroid, +n others) and its member personas."""
    n_regions = int(region.max()) + 1
    centroids = np.stack([coords[region == r].mean(0) for r in range(n_regions)])
    labels, members = [], []
    for r in range(n_regions):
        rows = np.flatnonzero(region == r)
        members.append(tuple(names[i] for i in rows))
        if region[names.index(default)] == r:
            labels.append("assistant")
            continue
        nearest = rows[np.argmin(((coords[rows] - centroids[r]) ** 2).sum(1))]
        labels.append(names[nearest] + (f"+{len(rows) - 1}" if len(rows) > 1 else ""))
    return centroids, labels, members


def persona_map(atlas: Atlas, max_clusters: int = 8) -> PersonaMap:
    """Persona space and regions of `atlas`: the persona clusters organize recorded
    (organize_summary), recomputed from the coordinates when the atlas has none."""
    space = atlas.persona_space()
    personas = atlas.personas()
    names = personas["name"].astype(str).tolist()
    coords = np.stack(personas["coords"].to_list()).astype(np.float64)
    default = atlas.default_persona()
    region = persona_regions(atlas, names, coords, max_clusters)
    centroids, labels, members = region_names(names, coords, region, default)
    axis = np.asarray(space["assistant_axis"], dtype=np.float64)
    norm = float(np.linalg.norm(axis))
    return PersonaMap(
        center=np.asarray(space["center"], dtype=np.float64),
        components=np.asarray(space["components"], dtype=np.float64),
        unit_axis=axis / norm if norm > 0 else axis,
        centroids=centroids,
        names=tuple(labels),
        members=tuple(members),
        personas=personas.assign(region=region),
        vectors=atlas.persona_vectors(),
        default=default,
    )


def starting_personas(pmap: PersonaMap, config: DynamicsConfig) -> list[str]:
    """config.personas, or the default persona then up to n_personas - 1 others taken in turn
    from each region (conditional personas left out: without their trigger they are the
    assistant)."""
    names = pmap.personas["name"].astype(str).tolist()
    if config.personas:
        missing = [name for name in config.personas if name not in names]
        if missing:
            raise SaeAtlasError(
                f"dynamics.personas: {missing} not in the atlas; use some of {', '.join(names)}"
            )
        return list(config.personas)
    table = pmap.personas
    queues = [
        [
            str(name)
            for name, category in zip(
                table.loc[table["region"] == r, "name"],
                table.loc[table["region"] == r, "category"],
                strict=True,
            )
            if name != pmap.default and category != "conditional"
        ]
        for r in range(len(pmap.names))
    ]
    chosen = [pmap.default]
    while len(chosen) < config.n_personas and any(queues):
        for queue in queues:
            if queue and len(chosen) < config.n_personas:
                chosen.append(queue.pop(0))
    return chosen


def region_paths(pmap: PersonaMap, coords: np.ndarray) -> np.ndarray:
    """Region [n, T] of turn coordinates [n, T, k]; a turn without a point (an empty response)
    keeps the previous turn's region (the assistant region at turn 0)."""
    n, turns, _ = coords.shape
    flat = coords.reshape(n * turns, -1)
    finite = np.isfinite(flat).all(1)
    regions = np.full(n * turns, -1, dtype=np.int64)
    if finite.any():
        regions[finite] = nearest_region(flat[finite], pmap.centroids)
    regions = regions.reshape(n, turns)
    for t in range(turns):
        previous = regions[:, t - 1] if t else np.full(n, pmap.names.index("assistant"))
        regions[:, t] = np.where(regions[:, t] < 0, previous, regions[:, t])
    return regions
