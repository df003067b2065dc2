"""The report's figures of the selection experiment and of the attractors' return curves, each
drawn from one table as the atlas stores it (`Atlas.experiment("selection").tables[...]`,
`Atlas.experiment("attractors")` or the dynamics stage's own return_to_assistant): the decoding
curve by position, the patching effects, the assistant-axis relaxation, and P(back in the
assistant region after k turns). Drawn on matplotlib Figure objects (never pyplot) and returned
as PNG bytes; about 0.3 s each.
"""

from __future__ import annotations

import io

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def _band(axes, x, rows: pd.DataFrame, y: str, label: str, color=None) -> None:  # type: ignore[no-untyped-def]
    line = axes.plot(x, rows[y], marker="o", ms=2.5, lw=1.2, label=label, color=color)[0]
    axes.fill_between(x, rows["ci_low"], rows["ci_high"], color=line.get_color(), alpha=0.15)


def position_curve_figure(table: pd.DataFrame) -> bytes:
    """Cross-fitted decoding AUROC by position class, one line per persona, residual and SAE
    side by side (the selection experiment's `decoding` table)."""
    figure = Figure(figsize=(13, 4.5))
    panels = figure.subplots(1, 2, sharey=True)
    for axes, (source, rows) in zip(panels, table.groupby("source", sort=False), strict=False):
        for persona, block in rows.groupby("persona", sort=False):
            block = block.sort_values("position_index")
            _band(axes, block["position_index"], block, "auroc", str(persona))
        names = rows.drop_duplicates("position_index").sort_values("position_index")
        axes.set_xticks(names["position_index"], names["position"], rotation=90, fontsize=6)
        axes.axhline(0.5, color="grey", lw=0.8, ls=":")
        axes.set_title(f"persona decoded from the {source} (cross-fitted AUROC, 95% CI)")
    panels[0].set_ylabel("one-vs-rest AUROC")
    panels[0].legend(fontsize=7, ncol=2)
    return _png(figure)


def patching_figure(table: pd.DataFrame, score: str = "classifier") -> bytes:
    """Effects of each patched condition per persona with 95% CIs (the selection experiment's
    `patching` table, kind effect, one score)."""
    rows = table[(table["kind"] == "effect") & (table["score"] == score)]
    conditions = list(dict.fromkeys(rows["condition"]))
    personas = list(dict.fromkeys(rows["persona"]))
    figure = Figure(figsize=(11, 4.5))
    axes = figure.subplots()
    width = 0.8 / len(conditions)
    for k, condition in enumerate(conditions):
        block = rows[rows["condition"] == condition].set_index("persona").loc[personas]
        x = np.arange(len(personas)) + k * width
        error = [block["mean"] - block["ci_low"], block["ci_high"] - block["mean"]]
        axes.bar(x, block["mean"], width, yerr=error, capsize=2, label=condition)
    axes.set_xticks(np.arange(len(personas)) + 0.4 - width / 2, personas, rotation=30)
    axes.axhline(0, color="black", lw=0.8)
    axes.set_ylabel(f"effect on the {score} score (95% CI over questions)")
    axes.set_title("header patches against matched user-token and other-persona patches")
    axes.legend(fontsize=7, ncol=2)
    return _png(figure)


def relaxation_figure(table: pd.DataFrame) -> bytes:
    """Assistant-axis gap (default run minus condition) by response token, every persona
    pooled, one line per condition (the selection experiment's `axis_gap` table)."""
    figure = Figure(figsize=(8, 4))
    axes = figure.subplots()
    for condition, rows in table[table["persona"] == "all"].groupby("condition", sort=False):
        _band(axes, rows["token"], rows, "gap", str(condition))
    axes.axhline(0, color="black", lw=0.8)
    axes.set_xlabel("response token")
    axes.set_ylabel("default minus condition on the assistant axis")
    axes.set_title("relaxation toward the assistant along the response (95% CI)")
    axes.legend(fontsize=7)
    return _png(figure)


def return_figure(table: pd.DataFrame) -> bytes:
    """P(back in the assistant region after k turns) by region, one panel per rollout condition,
    each region's permuted-turn null dashed in its colour, one colour per region in every
    panel (a return_to_assistant table: the attractors experiment's or
    dynamics/return_to_assistant)."""
    conditions = list(dict.fromkeys(table["experiment"]))
    palette = matplotlib.colormaps["tab10"]
    colors = {r: palette(i % 10) for i, r in enumerate(dict.fromkeys(table["region_name"]))}
    figure = Figure(figsize=(4.2 * len(conditions), 4))
    panels = np.atleast_1d(figure.subplots(1, len(conditions), sharey=True))
    for axes, condition in zip(panels, conditions, strict=True):
        rows = table[(table["experiment"] == condition) & (table["pairs"] > 0)]
        for region, block in rows.groupby("region_name", sort=False):
            _band(axes, block["lag"], block, "p_return", str(region), colors[region])
            axes.plot(block["lag"], block["null"], ls="--", lw=0.7, color=colors[region])
        axes.set_title(condition)
        axes.set_xlabel("k (turns later)")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    panels[0].set_ylabel("P(in the assistant region k turns later)")
    handles = [Line2D([], [], color=c, marker="o", ms=3, label=str(r)) for r, c in colors.items()]
    panels[-1].legend(handles=handles, fontsize=6)
    return _png(figure)
