"""The report's dynamics section: every entry of the atlas's dynamics/ group as a table, a figure
(drift curves per turn, the return to the assistant region, a square matrix such as the
transition matrix, bars for a vector) or the flattened JSON summary; an older atlas's
experiment entries (dynamics/selection_*, long_*) are left to the experiment sections. Cost:
reading dynamics/ (small) and a figure per array entry.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from feature_store.atlas import Atlas
from feature_store.schema import LEGACY_PREFIXES
from sae_atlas.stages.report.document import (
    MAX_TABLE_ROWS,
    Block,
    Figure,
    Heading,
    Table,
    fmt,
    table,
    text,
)
from sae_atlas.stages.report.figures import bars_figure, drift_figure, matrix_figure
from sae_atlas.stages.report.reading import flatten, json_attr
from sae_atlas.stages.selection.figures import return_figure


def dynamics_section(atlas: Atlas) -> list[Block]:
    """The Attractors and drift section: one subsection per entry of the atlas's dynamics/
    group (tables, drift curves, matrices, bars, the JSON summary); "not computed" without it."""
    blocks: list[Block] = [Heading(2, "Attractors and drift", "dynamics")]
    legacy = tuple(LEGACY_PREFIXES.values())
    names = [name for name in atlas.dynamics_names() if not name.startswith(legacy)]
    if not names:
        blocks.append(text("Dynamics: not computed (the atlas has no dynamics/ group)."))
        return blocks
    entries = {name: atlas.dynamics(name) for name in names}
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
        blocks += dynamics_entry(name, value, region_names)
    return blocks


def dynamics_entry(
    name: str, value: np.ndarray | pd.DataFrame, region_names: list[str] | None
) -> list[Block]:
    """The blocks of the dynamics/ entry `name`: drift curves (a table of group, turn, mean) as
    a figure, other tables as a table, a JSON text as a table of its scalars, a square matrix or
    a vector as a figure (`region_names` on its axes when they fit)."""
    if isinstance(value, pd.DataFrame):
        if name == "return_to_assistant" and not value.empty:
            return [
                text(
                    "P(in the assistant region k turns later | in the region now), bootstrap "
                    "95% intervals over rollouts; dashed: the permuted-turns null."
                ),
                Figure(f"dynamics_{name}", return_figure(value), name),
            ]
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
    names = region_names if region_names is not None and len(region_names) == len(value) else None
    if value.ndim == 2 and value.shape[0] == value.shape[1]:
        return [Figure(f"dynamics_{name}", matrix_figure(value, name, names), name)]
    if value.ndim == 1:
        blocks: list[Block] = [Figure(f"dynamics_{name}", bars_figure(value, name, names), name)]
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
