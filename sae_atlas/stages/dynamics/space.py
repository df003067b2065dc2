"""Persona space and its regions, as an atlas records them: where a residual point lies, which
region (persona cluster) a turn belongs to, and which personas rollouts start from.

`persona_map` reads the persona space (center, components, assistant axis), the personas and
their vectors and the default persona (`Atlas.default_persona`), and divides the personas into
n_regions regions (Ward clusters of their coordinates, conditional personas placed in their
nearest) into a `PersonaMap`; `region_paths` places turn coordinates in regions, by the
regions' centroid at each turn when the map has them (`calibration`: centroids from multi-turn
chats), else by the personas' own single-turn centroid. numpy and scipy on small arrays:
milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import fcluster, linkage

from feature_store.atlas import Atlas
from sae_atlas.config import DynamicsConfig
from sae_atlas.errors import SaeAtlasError
from sae_atlas.stages.dynamics.markov import nearest_region


@dataclass(frozen=True)
class PersonaMap:
    """An atlas's persona space and its regions.

    center [d_model], components [k, d_model], unit_axis [d_model] (the assistant axis, unit
    norm); one region per persona cluster: centroids [r, k] (mean coordinates of its personas),
    names (the default persona's region is "assistant", another is named after its persona
    nearest the centroid), members; personas: the atlas's persona table with a `region` column;
    vectors: persona vectors [P, d_model] in table order; default: the default persona's name;
    turn_centroids: [T, r, k] each region's centroid at turn t of multi-turn chats (None: the
    single-turn centroids serve every turn).
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
    turn_centroids: np.ndarray | None = None

    def centroids_at(self, turn: int) -> np.ndarray:
        """[r, k]: the regions' centroids at `turn` (the last calibrated turn beyond them)."""
        if self.turn_centroids is None:
            return self.centroids
        return self.turn_centroids[min(turn, len(self.turn_centroids) - 1)]

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


def persona_regions(coords: np.ndarray, conditional: np.ndarray, n_regions: int) -> np.ndarray:
    """Region [P] of each persona with coordinates [P, k]: Ward clusters of the personas that
    are not `conditional` [P] bool (at most n_regions of them), numbered by first appearance;
    a conditional persona (without its trigger it is the assistant) joins the region of its
    nearest clustered persona."""
    core = np.flatnonzero(~conditional)
    if len(core) < 2:
        return np.zeros(len(coords), dtype=np.int64)
    labels = fcluster(linkage(coords[core], "ward"), min(n_regions, len(core)), "maxclust")
    order = {label: i for i, label in enumerate(dict.fromkeys(labels.tolist()))}
    region = np.empty(len(coords), dtype=np.int64)
    region[core] = [order[label] for label in labels]
    for i in np.flatnonzero(conditional):
        region[i] = region[core[np.argmin(((coords[core] - coords[i]) ** 2).sum(1))]]
    return region


def region_names(
    names: list[str], coords: np.ndarray, region: np.ndarray, default: str
) -> tuple[np.ndarray, list[str], list[tuple[str, ...]]]:
    """Per region of personas `names` with coordinates [P, k] and `region` [P]: its centroid
    [r, k], its name (the default persona's region is "assistant", another is named after its
    two personas nearest the centroid, +n others) and its member personas."""
    n_regions = int(region.max()) + 1
    centroids = np.stack([coords[region == r].mean(0) for r in range(n_regions)])
    labels, members = [], []
    for r in range(n_regions):
        rows = np.flatnonzero(region == r)
        members.append(tuple(names[i] for i in rows))
        if region[names.index(default)] == r:
            labels.append("assistant")
            continue
        nearest = rows[np.argsort(((coords[rows] - centroids[r]) ** 2).sum(1))[:2]]
        more = f"+{len(rows) - len(nearest)}" if len(rows) > len(nearest) else ""
        labels.append("/".join(names[i] for i in nearest) + more)
    return centroids, labels, members


def persona_map(atlas: Atlas, n_regions: int = 8) -> PersonaMap:
    """Persona space and regions of `atlas`: its personas in n_regions regions
    (`persona_regions`)."""
    space = atlas.persona_space()
    personas = atlas.personas()
    names = personas["name"].astype(str).tolist()
    coords = np.stack(personas["coords"].to_list()).astype(np.float64)
    default = atlas.default_persona()
    conditional = (personas["category"].astype(str) == "conditional").to_numpy()
    region = persona_regions(coords, conditional, n_regions)
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
    """Region [n, T] of turn coordinates [n, T, k] (the nearest of the regions' centroids at
    that turn); a turn without a point (an empty response) keeps the previous turn's region
    (the assistant region at turn 0)."""
    n, turns, _ = coords.shape
    regions = np.full((n, turns), -1, dtype=np.int64)
    for t in range(turns):
        finite = np.isfinite(coords[:, t]).all(1)
        if finite.any():
            regions[finite, t] = nearest_region(coords[finite, t], pmap.centroids_at(t))
    for t in range(turns):
        previous = regions[:, t - 1] if t else np.full(n, pmap.names.index("assistant"))
        regions[:, t] = np.where(regions[:, t] < 0, previous, regions[:, t])
    return regions
