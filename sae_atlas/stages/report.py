"""Export an atlas as a static report: one self-contained HTML page and its Markdown twin.

`write_report(atlas_path, out_dir)` reads the atlas through `Atlas.open` and writes
- `out_dir/index.html`: inline CSS, figures embedded as base64 PNG, no scripts, no external URL
  (it opens offline, from a file or an e-mail attachment);
- `out_dir/report.md` with the same content, its figures as `out_dir/figures/*.png`.
Sections: overview (model, SAE config, quality numbers and build records found in the atlas),
persona space (personas on PC1/PC2 by category with the assistant axis, projections on the axis),
feature map (by cluster and by cluster kind), one section per cluster (members capped at
`max_members` by density, their top examples with the token highlighted, top personas), the
puppeteer features, and dynamics (attractors, transition matrix, stationary distribution, drift
curves; "not computed" when the atlas has no dynamics/). Every internal link is a #anchor of a
section written in the same page.

Both formats render one list of blocks (`Heading`, `Text`, `Table`, `Figure`), so they cannot
disagree. Cost: one read of the feature table, one `Atlas.feature` call per feature whose
examples are shown (about a millisecond each, at most `example_features` per cluster) and a
handful of matplotlib figures (drawn on `matplotlib.figure.Figure` objects, never pyplot, so that
importing this module leaves the caller's backend alone; about a second); a few seconds for 16k
features.
Returns a `ReportResult` with the paths written and the seconds taken.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import MaxNLocator

from feature_store.atlas import Atlas
from feature_store.schema import CLUSTER_KINDS

MAX_MEMBERS = 50
"""Members listed per cluster (densest first)."""

EXAMPLE_FEATURES = 3
"""Members per cluster (and puppeteer features) whose top examples are shown."""

EXAMPLES_PER_FEATURE = 2
"""Top examples shown per feature."""

MAX_TABLE_ROWS = 50
"""Rows shown of any other table (puppeteer features, dynamics tables)."""

QUALITY_KEYS = ("explained_variance", "l0", "mse", "dead_fraction", "dense_fraction", "ce_", "kl")
"""Key prefixes of the SAE quality numbers looked for in the SAE config and evaluation attrs."""

KIND_COLORS: dict[str, str] = {
    "persona": "#1f77b4",
    "roleplay": "#ff7f0e",
    "assistant": "#2ca02c",
    "puppeteer": "#d62728",
    "trigger": "#9467bd",
    "other": "#8c564b",
    "noise": "#c7c7c7",
}

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#222;
line-height:1.45;background:#fafafa}
main{max-width:1200px;margin:0 auto;padding:1rem 2rem 4rem;background:#fff}
h1{border-bottom:2px solid #333}h2{border-bottom:1px solid #ccc;margin-top:2.5rem}
h3{margin-top:1.8rem}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.88rem}
th,td{border:1px solid #ddd;padding:.2rem .45rem;text-align:left;vertical-align:top}
th{background:#f0f0f0}tr:nth-child(even) td{background:#fbfbfb}
code.ctx{white-space:pre-wrap;font-size:.85rem}mark{background:#ffe066;padding:0 .1rem}
figure{margin:1rem 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85rem;color:#555}nav ul{columns:2}a{color:#0b5cad}
"""


# -- the document model: both renderers read these -------------------------------------------


@dataclass(frozen=True)
class Link:
    """Text linking to the #anchor of a section in the same report."""

    text: str
    anchor: str


@dataclass(frozen=True)
class Target:
    """Text that is itself the target of `anchor` (a table row other sections link to)."""

    text: str
    anchor: str


@dataclass(frozen=True)
class Context:
    """An example context: text with the feature's token marked as [[token]]."""

    text: str


Part = str | Link


@dataclass(frozen=True)
class Heading:
    level: int
    text: str
    anchor: str


@dataclass(frozen=True)
class Text:
    parts: tuple[Part, ...]


Cell = str | Link | Target | Context | Text


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]


@dataclass(frozen=True)
class Figure:
    name: str
    png: bytes
    caption: str


Block = Heading | Text | Table | Figure


@dataclass
class ReportResult:
    """What `write_report` wrote: the HTML page, the Markdown file, its figures, and the time."""

    out_dir: Path
    html: Path
    markdown: Path
    figures: list[Path] = field(default_factory=list)
    n_clusters: int = 0
    seconds: float = 0.0


def text(*parts: Part) -> Text:
    return Text(tuple(parts))


def table(frame: pd.DataFrame, cells: Mapping[str, Callable[[Any], Cell]] | None = None) -> Table:
    """A Table of `frame`'s columns; `cells` maps a column to a function making its cells."""
    cells = cells or {}
    columns = [str(c) for c in frame.columns]
    rows = tuple(
        tuple(cells.get(c, fmt)(value) for c, value in zip(columns, values, strict=True))
        for values in frame.itertuples(index=False, name=None)
    )
    return Table(tuple(columns), rows)


def fmt(value: Any) -> str:
    """A value as short text: floats to 3 significant digits, NaN and None as ''."""
    if value is None:
        return ""
    if isinstance(value, float | np.floating):
        return "" if math.isnan(value) else f"{value:.3g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {fmt(v)}" for k, v in value.items())
    if isinstance(value, list | tuple | np.ndarray):
        return ", ".join(fmt(v) for v in value)
    return str(value)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def split_context(context: str) -> tuple[str, str, str]:
    """(before, token, after) of a context marked 'before[[token]]after'; no mark: (all, '', '')."""
    match = re.search(r"\[\[(.*?)\]\]", context, flags=re.DOTALL)
    if match is None:
        return context, "", ""
    return context[: match.start()], match.group(1), context[match.end() :]


def visible(piece: str) -> str:
    """Newlines shown as ↵ so that a context stays on one line."""
    return piece.replace("\r", "").replace("\n", "↵")


# -- HTML -------------------------------------------------------------------------------------


def _html_part(part: Cell) -> str:
    if isinstance(part, Link):
        return f'<a href="#{html.escape(part.anchor)}">{html.escape(part.text)}</a>'
    if isinstance(part, Target):
        return f'<span id="{html.escape(part.anchor)}">{html.escape(part.text)}</span>'
    if isinstance(part, Text):
        return "".join(_html_part(p) for p in part.parts)
    if isinstance(part, Context):
        before, token, after = (visible(p) for p in split_context(part.text))
        marked = f"<mark>{html.escape(token)}</mark>" if token else ""
        return f'<code class="ctx">{html.escape(before)}{marked}{html.escape(after)}</code>'
    return html.escape(part)


def render_html(title: str, blocks: Sequence[Block]) -> str:
    """A standalone HTML page of `blocks`: inline CSS, figures as data: URIs, no scripts."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body><main>",
        f'<h1 id="top">{html.escape(title)}</h1>',
    ]
    for block in blocks:
        if isinstance(block, Heading):
            level = min(max(block.level, 1), 6)
            out.append(
                f'<h{level} id="{html.escape(block.anchor)}">{html.escape(block.text)}</h{level}>'
            )
        elif isinstance(block, Text):
            out.append("<p>" + "".join(_html_part(p) for p in block.parts) + "</p>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block.header)
            body = "".join(
                "<tr>" + "".join(f"<td>{_html_part(c)}</td>" for c in row) + "</tr>"
                for row in block.rows
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        else:
            data = base64.b64encode(block.png).decode("ascii")
            caption = html.escape(block.caption)
            out.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{caption}">'
                f"<figcaption>{caption}</figcaption></figure>"
            )
    out.append("</main></body></html>")
    return "\n".join(out) + "\n"


# -- Markdown ---------------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>#|])")


def md_escape(value: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", visible(value))


def _md_part(part: Cell) -> str:
    if isinstance(part, Link):
        return f"[{md_escape(part.text)}](#{part.anchor})"
    if isinstance(part, Target):
        return f'<a id="{part.anchor}"></a>{md_escape(part.text)}'
    if isinstance(part, Text):
        return "".join(_md_part(p) for p in part.parts)
    if isinstance(part, Context):
        before, token, after = split_context(part.text)
        shown = md_escape(token) if token.strip() else repr(token).replace("'", "")
        marked = f"**{shown}**" if token else ""
        return f"{md_escape(before)}{marked}{md_escape(after)}"
    return md_escape(part)


def render_markdown(title: str, blocks: Sequence[Block], figure_dir: str) -> str:
    """Markdown of `blocks`; anchors as <a id>, figures linked as `figure_dir/<name>.png`."""
    out = [f"# {md_escape(title)}", ""]
    for block in blocks:
        if isinstance(block, Heading):
            out += [
                f'<a id="{block.anchor}"></a>',
                "",
                "#" * block.level + " " + md_escape(block.text),
                "",
            ]
        elif isinstance(block, Text):
            out += ["".join(_md_part(p) for p in block.parts), ""]
        elif isinstance(block, Table):
            out.append("| " + " | ".join(md_escape(h) for h in block.header) + " |")
            out.append("|" + "---|" * len(block.header))
            out += ["| " + " | ".join(_md_part(c) for c in row) + " |" for row in block.rows]
            out.append("")
        else:
            out += [f"![{md_escape(block.caption)}]({figure_dir}/{block.name}.png)", ""]
    return "\n".join(out)


# -- figures ----------------------------------------------------------------------------------


def png(figure: MplFigure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def default_persona(personas: pd.DataFrame, attrs: Mapping[str, Any] | None = None) -> str:
    """Name of the default persona: the one organize recorded, else 'assistant' or the first of
    category 'default', else the persona with the largest assistant-axis projection."""
    summary = json_attr(attrs or {}, "organize_summary")
    recorded = summary.get("persona_space", {}).get("default_persona")
    names = personas["name"].tolist()
    if recorded in names:
        return str(recorded)
    defaults = personas.loc[personas["category"] == "default", "name"].tolist()
    if "assistant" in defaults:
        return "assistant"
    if defaults:
        return str(defaults[0])
    return str(personas.loc[personas["axis_projection"].idxmax(), "name"])


def axis_in_plane(space: Mapping[str, np.ndarray]) -> np.ndarray:
    """The assistant axis projected on the first two components: [2] (zeros if fewer)."""
    components = np.asarray(space["components"], dtype=np.float64)[:2]
    axis = np.asarray(space["assistant_axis"], dtype=np.float64)
    plane = np.zeros(2)
    plane[: len(components)] = components @ axis
    return plane


def coords_2d(personas: pd.DataFrame) -> np.ndarray:
    """Persona coordinates on PC1 and PC2: [n_personas, 2] (zeros for a missing component)."""
    coords = np.zeros((len(personas), 2))
    for row, value in enumerate(personas["coords"]):
        values = np.asarray(value, dtype=np.float64)[:2]
        coords[row, : len(values)] = values
    return coords


def category_colors(categories: Iterable[str]) -> dict[str, Any]:
    palette = matplotlib.colormaps["tab20"]
    return {c: palette(i % 20) for i, c in enumerate(dict.fromkeys(categories))}


def persona_space_figure(
    personas: pd.DataFrame, space: Mapping[str, np.ndarray], default: str
) -> bytes:
    """Left: personas on PC1/PC2 by category, the assistant axis as an arrow from the centre.
    Right: every persona's projection on the assistant axis, sorted."""
    coords = coords_2d(personas)
    variance = np.asarray(space["explained_variance"], dtype=np.float64)
    colors = category_colors(personas["category"])
    figure = MplFigure(figsize=(13, 6.5))
    left, right = figure.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    for category, color in colors.items():
        rows = (personas["category"] == category).to_numpy()
        left.scatter(coords[rows, 0], coords[rows, 1], s=30, color=color, label=category)
    small = len(personas) <= 120
    for (x, y), name in zip(coords, personas["name"], strict=True):
        if small or name == default:
            left.annotate(name, (x, y), fontsize=7, xytext=(3, 2), textcoords="offset points")
    row = personas.index[personas["name"] == default]
    if len(row):
        x, y = coords[personas.index.get_loc(row[0])]
        left.scatter([x], [y], s=180, marker="*", color="black", label=f"default ({default})")
    plane = axis_in_plane(space)
    axis_norm = float(np.linalg.norm(space["assistant_axis"]))
    if np.linalg.norm(plane) > 0:
        direction = plane / np.linalg.norm(plane)
        reach = float(np.abs(coords @ direction).max()) or 1.0
        tip = direction * reach
        share = np.linalg.norm(plane) / axis_norm if axis_norm > 0 else 0.0
        left.annotate(
            "",
            xy=(tip[0], tip[1]),
            xytext=(0, 0),
            arrowprops={"arrowstyle": "->", "color": "black", "lw": 2},
        )
        left.text(tip[0], tip[1], f" assistant axis\n ({share:.0%} in this plane)", fontsize=8)
        left.update_datalim(np.array([[0.0, 0.0], tip]))
        left.autoscale_view()
    labels = [f"PC{i + 1}" + (f" ({variance[i]:.0%})" if i < len(variance) else "") for i in (0, 1)]
    left.set_xlabel(labels[0])
    left.set_ylabel(labels[1])
    left.axhline(0, color="#ddd", lw=0.8, zorder=0)
    left.axvline(0, color="#ddd", lw=0.8, zorder=0)
    left.legend(fontsize=7, loc="best")
    left.set_title("Personas in persona space")
    order = personas.sort_values("axis_projection")
    right.barh(
        np.arange(len(order)),
        order["axis_projection"],
        color=[colors[c] for c in order["category"]],
    )
    if len(order) <= 60:
        right.set_yticks(np.arange(len(order)), order["name"], fontsize=6)
    else:
        right.set_yticks([])
    right.set_xlabel("projection on the assistant axis")
    right.set_title("Assistant-axis projection")
    return png(figure)


def feature_map_figure(features: pd.DataFrame, clusters: pd.DataFrame) -> bytes | None:
    """The 2-D feature map coloured by cluster (left) and by cluster kind (right); None when no
    feature has map coordinates."""
    placed = features[np.isfinite(features["map_x"]) & np.isfinite(features["map_y"])]
    if placed.empty:
        return None
    kind_of = dict(zip(clusters["id"], clusters["kind"], strict=True))
    kinds = placed["cluster"].map(kind_of).fillna("noise")
    noise = (placed["cluster"] < 0).to_numpy()
    size = 4 if len(placed) > 2000 else 14
    figure = MplFigure(figsize=(14, 6.5))
    left, right = figure.subplots(1, 2)
    left.scatter(placed["map_x"][noise], placed["map_y"][noise], s=size, color="#ddd")
    palette = matplotlib.colormaps["tab20"]
    left.scatter(
        placed["map_x"][~noise],
        placed["map_y"][~noise],
        s=size,
        c=[palette(int(c) % 20) for c in placed["cluster"][~noise]],
    )
    for cluster_id, group in placed[~noise].groupby("cluster"):
        if len(clusters) <= 60:
            left.text(group["map_x"].median(), group["map_y"].median(), str(cluster_id), fontsize=7)
    left.set_title("Feature map by cluster (grey: noise)")
    for kind in ("noise", *CLUSTER_KINDS):
        rows = (kinds == kind).to_numpy()
        if rows.any():
            right.scatter(
                placed["map_x"][rows],
                placed["map_y"][rows],
                s=size,
                color=KIND_COLORS.get(kind, "#000"),
                label=f"{kind} ({rows.sum()})",
            )
    right.legend(fontsize=8, markerscale=2)
    right.set_title("Feature map by cluster kind")
    for axes in (left, right):
        axes.set_xticks([])
        axes.set_yticks([])
    return png(figure)


def matrix_figure(matrix: np.ndarray, title: str, names: Sequence[str] | None) -> bytes:
    figure = MplFigure(figsize=(6.5, 5.5))
    axes = figure.subplots()
    image = axes.imshow(matrix, cmap="viridis", vmin=0)
    figure.colorbar(image, ax=axes, shrink=0.8)
    n = len(matrix)
    if names is not None and n <= 30:
        axes.set_xticks(np.arange(n), names, rotation=90, fontsize=7)
        axes.set_yticks(np.arange(n), names, fontsize=7)
    if n <= 12:
        for i in range(n):
            for j in range(matrix.shape[1]):
                axes.text(
                    j,
                    i,
                    f"{matrix[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if matrix[i, j] < 0.5 * matrix.max() else "black",
                )
    axes.set_xlabel("to")
    axes.set_ylabel("from")
    axes.set_title(title)
    return png(figure)


def bars_figure(values: np.ndarray, title: str, names: Sequence[str] | None) -> bytes:
    figure = MplFigure(figsize=(8, 3.5))
    axes = figure.subplots()
    axes.bar(np.arange(len(values)), values, color="#1f77b4")
    if names is not None and len(values) <= 40:
        axes.set_xticks(np.arange(len(values)), names, rotation=90, fontsize=7)
    axes.set_title(title)
    return png(figure)


def drift_figure(curves: pd.DataFrame, title: str) -> bytes:
    """Mean per turn with its 95% CI band, one line per group (at most 20 groups)."""
    figure = MplFigure(figsize=(9, 4.5))
    axes = figure.subplots()
    for group, rows in list(curves.groupby("group", sort=False))[:20]:
        rows = rows.sort_values("turn")
        line = axes.plot(rows["turn"], rows["mean"], marker="o", ms=3, label=str(group))[0]
        if {"ci_low", "ci_high"} <= set(rows.columns):
            axes.fill_between(
                rows["turn"], rows["ci_low"], rows["ci_high"], color=line.get_color(), alpha=0.15
            )
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("turn")
    axes.set_ylabel("mean (95% CI)")
    axes.legend(fontsize=7, ncol=2)
    axes.set_title(title)
    return png(figure)


# -- reading the atlas ------------------------------------------------------------------------


def json_attr(attrs: Mapping[str, Any], key: str) -> dict[str, Any]:
    """attrs[key] parsed as a JSON object; {} when absent or not a JSON object."""
    value = attrs.get(key)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return {}
    try:
        parsed = json.loads(value)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Scalars of a nested mapping under dotted keys (lists of scalars joined, others skipped)."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out |= flatten(value, name + ".")
        elif isinstance(value, list):
            if len(value) <= 10 and all(not isinstance(v, dict | list) for v in value):
                out[name] = fmt(value)
        else:
            out[name] = value
    return out


def parse_personas(listed: str) -> list[tuple[str, float]]:
    """[('pirate', 0.93), ...] from 'pirate:0.93;villain:0.71'."""
    pairs = []
    for item in listed.split(";"):
        name, _, score = item.rpartition(":")
        if name:
            try:
                pairs.append((name, float(score)))
            except ValueError:
                pairs.append((item, float("nan")))
    return pairs


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

    def overview(self) -> list[Block]:
        atlas = self.atlas
        info = atlas.info()
        blocks: list[Block] = [Heading(2, "Overview", "overview")]
        rows = [(k, fmt(v)) for k, v in info.items() if k != "path"]
        if atlas.attrs.get("hook"):
            rows.insert(1, ("hook", fmt(atlas.attrs["hook"])))
        blocks.append(Table(("", "value"), tuple(rows)))
        sae_config = json_attr(atlas.file["sae"].attrs, "config")
        blocks.append(Heading(3, "SAE", "sae"))
        if sae_config:
            flat = flatten(sae_config)
            shown = [(k, fmt(v)) for k, v in flat.items() if fmt(v) != ""][:MAX_TABLE_ROWS]
            blocks.append(Table(("config", "value"), tuple(shown)))
        else:
            blocks.append(text("The atlas records no SAE config."))
        quality = self.quality(sae_config)
        blocks.append(Heading(3, "SAE quality", "sae-quality"))
        if quality:
            blocks.append(Table(("measure", "value"), tuple(quality)))
        else:
            blocks.append(text("No SAE quality numbers are recorded in this atlas."))
        records = [k for k in sorted(atlas.attrs) if k != "config" and json_attr(atlas.attrs, k)]
        if records:
            blocks.append(Heading(3, "Build records", "build-records"))
            for key in records:
                flat = flatten(json_attr(atlas.attrs, key))
                shown = [(k, fmt(v)) for k, v in flat.items()][:MAX_TABLE_ROWS]
                more = f" (first {len(shown)} of {len(flat)})" if len(flat) > len(shown) else ""
                blocks += [text(f"{key}{more}:"), Table(("entry", "value"), tuple(shown))]
        return blocks

    def quality(self, sae_config: Mapping[str, Any]) -> list[tuple[str, str]]:
        """SAE quality numbers: matching keys of the SAE config and of attrs about evaluation."""
        sources = {"sae config": sae_config}
        for key in self.atlas.attrs:
            if any(word in key.lower() for word in ("eval", "quality", "train")):
                sources[key] = json_attr(self.atlas.attrs, key)
        rows = []
        for source, mapping in sources.items():
            for key, value in flatten(mapping).items():
                last = key.rsplit(".", 1)[-1].lower()
                number = isinstance(value, int | float) and not isinstance(value, bool)
                if number and any(last.startswith(q) for q in QUALITY_KEYS):
                    rows.append((f"{source}: {key}", fmt(value)))
        return rows

    def persona_space(self) -> list[Block]:
        space = self.atlas.persona_space()
        default = default_persona(self.personas, self.atlas.attrs)
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

    def dynamics(self) -> list[Block]:
        blocks: list[Block] = [Heading(2, "Attractors and drift", "dynamics")]
        names = self.atlas.dynamics_names()
        if not names:
            blocks.append(text("Dynamics: not computed (the atlas has no dynamics/ group)."))
            return blocks
        entries = {name: self.atlas.dynamics(name) for name in names}
        region_names = next(
            (
                [str(v) for v in value]
                for key, value in entries.items()
                if "region" in key and isinstance(value, np.ndarray) and value.dtype == object
            ),
            None,
        )
        for name, value in entries.items():
            blocks.append(Heading(3, name, f"dynamics-{re.sub(r'[^A-Za-z0-9_-]', '-', name)}"))
            blocks += self.dynamics_entry(name, value, region_names)
        return blocks

    def dynamics_entry(
        self, name: str, value: np.ndarray | pd.DataFrame, region_names: list[str] | None
    ) -> list[Block]:
        if isinstance(value, pd.DataFrame):
            if {"group", "turn", "mean"} <= set(value.columns):
                return [Figure(f"dynamics_{name}", drift_figure(value, name), f"{name}: per turn")]
            shown = value.head(MAX_TABLE_ROWS)
            note = f"{len(value)} rows" + (
                f", first {len(shown)} shown" if len(shown) < len(value) else ""
            )
            return [text(note), table(shown)]
        if isinstance(value, str):  # a text entry, e.g. dynamics/summary (JSON)
            flat = flatten(json_attr({name: value}, name))
            if not flat:
                return [text(value)]
            return [Table(("", "value"), tuple((k, fmt(v)) for k, v in flat.items()))]
        if value.dtype == object or value.ndim == 0:
            return [text(fmt(value.tolist()))]
        names = (
            region_names if region_names is not None and len(region_names) == len(value) else None
        )
        if value.ndim == 2 and value.shape[0] == value.shape[1]:
            return [Figure(f"dynamics_{name}", matrix_figure(value, name, names), name)]
        if value.ndim == 1:
            blocks: list[Block] = [
                Figure(f"dynamics_{name}", bars_figure(value, name, names), name)
            ]
            if len(value) <= 30:
                labels = names or [str(i) for i in range(len(value))]
                blocks.append(
                    Table(
                        ("", "value"),
                        tuple((n, fmt(v)) for n, v in zip(labels, value, strict=True)),
                    )
                )
            return blocks
        return [text(f"array of shape {value.shape}, dtype {value.dtype}")]


def contents(blocks: Sequence[Block]) -> list[Block]:
    """A table of contents linking every level-2 heading."""
    parts: list[Part] = ["Contents: "]
    for i, block in enumerate(b for b in blocks if isinstance(b, Heading) and b.level == 2):
        parts += [" · " if i else "", Link(block.text, block.anchor)]
    return [Text(tuple(parts))]


def write_report(
    atlas_path: str | Path,
    out_dir: str | Path,
    *,
    max_members: int = MAX_MEMBERS,
    example_features: int = EXAMPLE_FEATURES,
) -> ReportResult:
    """Write index.html, report.md and figures/*.png for the atlas at `atlas_path` into `out_dir`
    (created if needed). An earlier report there is replaced, figures/*.png included."""
    started = time.perf_counter()
    out = Path(out_dir)
    with Atlas.open(atlas_path) as atlas:
        builder = ReportBuilder(atlas, max_members, example_features)
        title = f"sae-atlas report: {atlas.attrs.get('model', 'unknown model')}"
        body = [
            *builder.overview(),
            *builder.persona_space(),
            *builder.feature_map(),
            *builder.cluster_sections(),
            *builder.puppeteer(),
            *builder.dynamics(),
        ]
        n_clusters = len(builder.clusters)
    blocks = [*contents(body), *body]
    figure_dir = out / "figures"
    figure_dir.mkdir(parents=True, exist_ok=True)
    for stale in figure_dir.glob("*.png"):
        stale.unlink()
    figures = []
    for block in blocks:
        if isinstance(block, Figure):
            path = figure_dir / f"{block.name}.png"
            path.write_bytes(block.png)
            figures.append(path)
    html_path = out / "index.html"
    markdown_path = out / "report.md"
    html_path.write_text(render_html(title, blocks), encoding="utf-8")
    markdown_path.write_text(render_markdown(title, blocks, "figures"), encoding="utf-8")
    return ReportResult(
        out_dir=out,
        html=html_path,
        markdown=markdown_path,
        figures=figures,
        n_clusters=n_clusters,
        seconds=time.perf_counter() - started,
    )
