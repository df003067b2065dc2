"""The report's sections about the atlas's features and personas: persona space (figure and
table), the feature map, one section per cluster (its members, top personas and top examples),
and the puppeteer features; with the links between them (a persona's row, a cluster's section).

`ReportBuilder` reads the feature, cluster and persona tables once; each section is a method
returning its blocks. Cost: one `Atlas.feature` call per feature whose examples are shown (about
a millisecond each, at most `example_features` per cluster) and two figures.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from feature_store.atlas import Atlas
from sae_atlas.stages.report.document import (
    MAX_TABLE_ROWS,
    Block,
    Cell,
    Context,
    Figure,
    Heading,
    Link,
    Part,
    Table,
    Target,
    Text,
    fmt,
    plural,
    table,
    text,
)
from sae_atlas.stages.report.figures import coords_2d, feature_map_figure, persona_space_figure
from sae_atlas.stages.report.reading import parse_personas

MAX_MEMBERS = 50
"""Members listed per cluster (densest first)."""

EXAMPLE_FEATURES = 3
"""Members per cluster (and puppeteer features) whose top examples are shown."""

EXAMPLES_PER_FEATURE = 2
"""Top examples shown per feature."""


class ReportBuilder:
    """Reads one open atlas and returns the report's blocks, section by section."""

    def __init__(self, atlas: Atlas, max_members: int, example_features: int) -> None:
        self.atlas = atlas
        self.max_members = max_members
        self.example_features = example_features
        self.features = atlas.features()
        self.clusters = atlas.clusters()
        self.personas = atlas.personas()
        self.persona_anchor = {n: f"persona-{i}" for i, n in enumerate(self.personas["name"])}
        self.cluster_ids = {int(c) for c in self.clusters["id"]}

    # links

    def persona_link(self, name: str, suffix: str = "") -> Part:
        anchor = self.persona_anchor.get(name)
        return Link(name + suffix, anchor) if anchor else name + suffix

    def cluster_link(self, cluster: Any) -> Cell:
        cluster = int(cluster)
        if cluster in self.cluster_ids:
            return Link(str(cluster), f"cluster-{cluster}")
        return "noise" if cluster < 0 else str(cluster)

    def personas_cell(self, listed: str) -> Cell:
        """'pirate:0.93;villain:0.71' as links to the personas' rows."""
        parts: list[Part] = []
        for i, (name, score) in enumerate(parse_personas(listed)):
            parts += ["; " if i else "", self.persona_link(name, f":{fmt(score)}")]
        return Text(tuple(parts))

    def members_table(self, members: pd.DataFrame) -> Table:
        columns = ["label", "tags", "cluster", "density", "max_act", "heldout_auroc"]
        frame = members[[*columns, "top_personas"]].reset_index()
        return table(
            frame,
            {
                "feature": lambda v: str(int(v)),
                "cluster": self.cluster_link,
                "top_personas": self.personas_cell,
            },
        )

    def examples_table(self, feature_ids: Iterable[int]) -> Table | None:
        rows: list[tuple[Cell, ...]] = []
        for feature in feature_ids:
            examples = self.atlas.feature(int(feature)).examples
            top = examples[examples["kind"] == "top"].head(EXAMPLES_PER_FEATURE)
            for example in top.itertuples(index=False):
                rows.append((str(int(feature)), fmt(example.activation), Context(example.context)))
        return Table(("feature", "activation", "context"), tuple(rows)) if rows else None

    # sections

    def persona_space(self) -> list[Block]:
        space = self.atlas.persona_space()
        default = self.atlas.default_persona()
        variance = np.asarray(space["explained_variance"], dtype=np.float64)
        blocks: list[Block] = [
            Heading(2, "Persona space", "persona-space"),
            text(
                f"{len(self.personas)} personas; default persona: ",
                self.persona_link(default),
                ". Explained variance of the components: "
                + ", ".join(f"PC{i + 1} {v:.1%}" for i, v in enumerate(variance))
                + ".",
            ),
            Figure(
                "persona_space",
                persona_space_figure(self.personas, space, default),
                "Personas on PC1/PC2 coloured by category, with the assistant axis; right: "
                "projections on the assistant axis",
            ),
            Heading(3, "Personas", "personas"),
        ]
        coords = coords_2d(self.personas)
        rows = []
        for row, persona in self.personas.sort_values(
            "axis_projection", ascending=False
        ).iterrows():
            index = self.personas.index.get_loc(row)
            rows.append(
                (
                    Target(persona["name"], self.persona_anchor[persona["name"]]),
                    fmt(persona["category"]),
                    fmt(persona["axis_projection"]),
                    fmt(coords[index, 0]),
                    fmt(coords[index, 1]),
                    str(int(persona["n_features"])),
                )
            )
        blocks.append(
            Table(("persona", "category", "axis projection", "PC1", "PC2", "features"), tuple(rows))
        )
        return blocks

    def feature_map(self) -> list[Block]:
        blocks: list[Block] = [Heading(2, "Feature map", "feature-map")]
        image = feature_map_figure(self.features, self.clusters)
        if image is None:
            blocks.append(text("No feature has map coordinates."))
        else:
            blocks.append(
                Figure("feature_map", image, "Features on the 2-D map by cluster and by kind")
            )
        return blocks

    def cluster_sections(self) -> list[Block]:
        blocks: list[Block] = [Heading(2, "Clusters", "clusters")]
        ordered = self.clusters.sort_values("id")
        n_noise = int((self.features["cluster"] < 0).sum())
        blocks.append(
            text(
                f"{plural(len(ordered), 'cluster')}; "
                f"{plural(n_noise, 'feature')} in no cluster (noise)."
            )
        )
        blocks.append(
            table(
                ordered[["id", "kind", "size", "label", "dominant_personas", "stability"]],
                {"id": self.cluster_link, "dominant_personas": self.personas_cell},
            )
        )
        by_cluster = self.features.groupby("cluster")
        for cluster in ordered.itertuples(index=False):
            blocks += self.cluster_section(cluster, by_cluster)
        return blocks

    def cluster_section(self, cluster: Any, by_cluster: Any) -> list[Block]:
        cluster_id = int(cluster.id)
        blocks: list[Block] = [
            Heading(
                3,
                f"Cluster {cluster_id}: {cluster.label} ({cluster.kind})",
                f"cluster-{cluster_id}",
            ),
        ]
        members = (
            by_cluster.get_group(cluster_id)
            if cluster_id in by_cluster.groups
            else self.features.iloc[:0]
        )
        members = members.sort_values("density", ascending=False, kind="stable")
        shown = members.head(self.max_members)
        blocks.append(
            text(
                f"{plural(len(members), 'feature')}, stability "
                f"{fmt(cluster.stability)}; showing {len(shown)} by density. Back to ",
                Link("all clusters", "clusters"),
                ".",
            )
        )
        votes: dict[str, list[float]] = {}
        for listed in members["top_personas"]:
            for name, score in parse_personas(listed):
                votes.setdefault(name, []).append(score)
        if votes:
            top = sorted(votes.items(), key=lambda item: (-len(item[1]), item[0]))[:5]
            parts: list[Part] = ["Top personas of its features: "]
            for i, (name, scores) in enumerate(top):
                finite = [s for s in scores if math.isfinite(s)]
                mean = fmt(sum(finite) / len(finite)) if finite else "n/a"
                parts += [", " if i else "", self.persona_link(name)]
                parts.append(f" ({plural(len(scores), 'feature')}, mean score {mean})")
            blocks.append(Text(tuple(parts)))
        else:
            blocks.append(text("No persona is among its features' top personas."))
        if not shown.empty:
            blocks.append(self.members_table(shown))
            examples = self.examples_table(shown.index[: self.example_features])
            if examples is not None:
                blocks += [text("Top examples (the feature's token highlighted):"), examples]
        return blocks

    def puppeteer(self) -> list[Block]:
        puppeteer = self.atlas.puppeteer().sort_values("density", ascending=False, kind="stable")
        blocks: list[Block] = [
            Heading(2, "Puppeteer", "puppeteer"),
            text(
                "Features tagged puppeteer fire in assistant responses under nearly every persona,"
                " the default included: the slant post-training leaves on every persona."
            ),
        ]
        kinds = self.clusters[self.clusters["kind"] == "puppeteer"]
        if not kinds.empty:
            parts: list[Part] = ["Puppeteer clusters: "]
            for i, cluster_id in enumerate(kinds["id"]):
                parts += [
                    ", " if i else "",
                    Link(str(int(cluster_id)), f"cluster-{int(cluster_id)}"),
                ]
            blocks.append(Text((*parts, ".")))
        if puppeteer.empty:
            blocks.append(text("No feature is tagged puppeteer."))
            return blocks
        shown = puppeteer.head(MAX_TABLE_ROWS)
        blocks += [
            text(f"{plural(len(puppeteer), 'feature')}; showing {len(shown)} by density."),
            self.members_table(shown),
        ]
        examples = self.examples_table(shown.index[: self.example_features])
        if examples is not None:
            blocks += [text("Top examples:"), examples]
        return blocks
