"""The report's experiment sections: one section per experiment the atlas holds
(`Atlas.experiments()`, experiments/<name>/), each rendered by its own function (`RENDERERS`:
selection, attractors, puppeteer_causal, honest_splits, audit) or, for any other experiment,
generically (its summary's scalars and the head of each table). Every section opens with what
the experiment measures and its provenance (what wrote it, when, how long it took). An atlas
without experiments gets no section at all. Cost: reading the experiments' tables (small) and a
few figures, about a second each.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from feature_store.atlas import Atlas, Experiment
from sae_atlas.stages.report.audit_section import audit_blocks
from sae_atlas.stages.report.document import (
    MAX_TABLE_ROWS,
    Block,
    Heading,
    Table,
    fmt,
    head_table,
    text,
)
from sae_atlas.stages.report.label_sections import causal_blocks, honest_blocks
from sae_atlas.stages.report.reading import flatten
from sae_atlas.stages.report.selection_sections import attractor_blocks, selection_blocks

TITLES: dict[str, str] = {
    "selection": "Persona selection at the assistant header",
    "attractors": "Long rollouts and attractors",
    "puppeteer_causal": "The puppeteer's causal test",
    "honest_splits": "Old split against honest splits",
    "layer_sweep": "Layer sweep",
    "audit": "Planted-persona audit",
}
"""Section title of each experiment (others: 'Experiment: <name>')."""

RENDERERS: dict[str, Callable[[Experiment], list[Block]]] = {
    "selection": selection_blocks,
    "attractors": attractor_blocks,
    "puppeteer_causal": causal_blocks,
    "honest_splits": honest_blocks,
    "audit": audit_blocks,
}
"""The blocks of each experiment with its own figures and tables (others: `generic_blocks`)."""


def experiment_sections(atlas: Atlas) -> list[Block]:
    """One level-2 section per experiment of the atlas, in schema order; [] when it has none."""
    blocks: list[Block] = []
    for name in atlas.experiments():
        experiment = atlas.experiment(name)
        blocks += [
            Heading(2, TITLES.get(name, f"Experiment: {name}"), f"experiment-{name}"),
            text(experiment.description[:1].upper() + experiment.description[1:] + "."),
            text(provenance_line(experiment)),
            *RENDERERS.get(name, generic_blocks)(experiment),
        ]
    return blocks


def provenance_line(experiment: Experiment) -> str:
    """'Recorded by <script> on <when> in <s> s (atlas path:group).' from its provenance."""
    record = experiment.provenance
    parts = [f"Recorded by {record.get('script', 'an unknown script')}"]
    if record.get("written"):
        parts.append(f" on {record['written']}")
    seconds = record.get("seconds")
    if isinstance(seconds, int | float) and np.isfinite(seconds):
        parts.append(f" in {seconds:.0f} s")
    return "".join(parts) + f" ({record.get('source', '')})."


def generic_blocks(experiment: Experiment) -> list[Block]:
    """The summary's scalars as a table, then each table's head (an array: its shape)."""
    blocks: list[Block] = []
    flat = flatten(experiment.summary)
    if flat:
        rows = tuple((key, fmt(value)) for key, value in list(flat.items())[:MAX_TABLE_ROWS])
        blocks.append(Table(("summary", "value"), rows))
    for name, data in experiment.tables.items():
        blocks.append(Heading(3, name, f"experiment-{experiment.name}-{name}"))
        if isinstance(data, pd.DataFrame):
            blocks += head_table(data)
        else:
            blocks.append(text(f"array of shape {np.shape(data)}"))
    return blocks
