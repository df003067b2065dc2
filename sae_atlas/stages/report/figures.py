"""The report's figures, drawn on `matplotlib.figure.Figure` objects (never pyplot, so that
importing the report leaves the caller's backend alone) and returned as PNG bytes: persona space
with the assistant axis, the feature map by cluster and by kind, and the dynamics figures
(transition matrix, bars, drift curves). Cost: about a second for all of them.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import MaxNLocator

from feature_store.schema import CLUSTER_KINDS

KIND_COLORS: dict[str, str] = {
    "persona": "#1f77b4",
    "roleplay": "#ff7f0e",
    "assistant": "#2ca02c",
    "puppeteer": "#d62728",
    "trigger": "#9467bd",
    "other": "#8c564b",
    "noise": "#c7c7c7",
}


def png(figure: MplFigure) -> bytes:
    """The figure as PNG bytes (110 dpi, tight bounding box)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


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
    """A tab20 colour per distinct category, in order of first appearance."""
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
    """A square matrix [n, n] (rows: from, columns: to) as a heat map, `names` on the axes when
    n <= 30, the values written in the cells when n <= 12."""
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
    """A vector [n] as bars, `names` under them when n <= 40."""
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
