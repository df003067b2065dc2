"""Recording an experiment run on a built atlas into its experiments/<name>/ group
(feature_store.schema.experiments), for the scripts and commands that run such experiments.

`record_results` makes the tables' sampled text storable (NUL escaped), the summary and config
JSON-ready, adds the provenance (what wrote it, its settings, its seconds) and writes it with
`feature_store.atlas.record_experiment`: that experiment is replaced whole, atomically, and
nothing else in the atlas changes. Cost: one copy of the atlas file plus the tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from feature_store.atlas import ExperimentRecord, record_experiment
from sae_atlas.stages.base import json_ready
from sae_atlas.stages.dynamics.tables import storable_text


def record_results(
    atlas: str | Path,
    name: str,
    tables: Mapping[str, pd.DataFrame | np.ndarray],
    summary: Mapping[str, Any],
    *,
    descriptions: Mapping[str, str],
    columns: Mapping[str, str],
    script: str,
    config: Mapping[str, Any],
    seconds: float,
    units: Mapping[str, str] | None = None,
) -> Path:
    """Write experiment `name` (one of feature_store.schema.EXPERIMENTS) into the atlas at
    `atlas`: `tables` (name -> DataFrame or array) described by `descriptions` (table name ->
    text) and `columns` (column name -> text), `summary` (headline numbers), and the provenance
    `script`, `config`, `seconds`. Raises StoreError (before writing) on anything undescribed."""
    record = ExperimentRecord(
        name=name,
        tables={
            table: storable_text(data) if isinstance(data, pd.DataFrame) else data
            for table, data in tables.items()
        },
        summary=json_ready(dict(summary)),
        descriptions=descriptions,
        columns=columns,
        script=script,
        config=json_ready(dict(config)),
        seconds=seconds,
        units=dict(units or {}),
    )
    return record_experiment(atlas, record)
