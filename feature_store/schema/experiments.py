"""Layout of the atlas's experiments/ group: results of experiments run on a finished atlas.

The build's stages write sae/ ... dynamics/; scripts and commands that test a claim on a built
atlas (scripts/persona_selection.py, scripts/attractors.py, ..., `sae-atlas audit --atlas`) write
`experiments/<name>/`, one group per experiment of EXPERIMENTS, which no stage writes or deletes:
rerunning a stage (dynamics replaces dynamics/ whole) leaves experiments/ as it was, and writing
one experiment replaces only that experiment (atomically: the atlas is written into a copy and
renamed into place, as every atlas write is).

One experiment's group holds:
- its tables, each the same described-table convention as dynamics/: a DataFrame is a group
  `experiments/<name>/<table>/` with one dataset per column (each with a `description` and, where
  it has one, a `unit`), an array is one dataset `experiments/<name>/<table>`; every table has a
  `description`;
- `experiments/<name>/summary`: a scalar text dataset, the JSON of its headline numbers (what a
  report shows first);
- the provenance as attributes of the group (EXPERIMENT_ATTRS): what wrote it (`script`), the
  settings (`config`, JSON), how long it took (`seconds`), when (`written`, UTC) and the
  sae-atlas version, besides the `description` of the experiment.

Atlases written before experiments/ existed kept two experiments as prefixed dynamics/ entries
(dynamics/selection_*, dynamics/long_*); LEGACY_PREFIXES names them so that readers can still
show them as experiments (until a dynamics rerun wipes them: rerun the script then).
"""

from __future__ import annotations

import re

EXPERIMENTS_GROUP = "experiments"

EXPERIMENTS_DESCRIPTION = (
    "results of experiments run on this atlas after it was built (one group per experiment: "
    "described tables, a JSON summary, the provenance as attributes); no build stage writes or "
    "deletes them"
)

EXPERIMENTS: dict[str, str] = {
    "selection": "persona selection at the assistant header (scripts/persona_selection.py): "
    "persona decoding by token position, header patching against user-token and other-persona "
    "patches, relaxation toward the assistant along the response",
    "attractors": "long multi-turn rollouts (scripts/attractors.py): per rollout condition and "
    "region the flow against a permuted-turns null, transition probabilities with bootstrap "
    "intervals, the stationary distribution, P(back in the assistant region after k turns) and "
    "the attractor claims",
    "puppeteer_causal": "the puppeteer's causal test (scripts/puppeteer_causal.py): zero, "
    "resample and add the puppeteer features while the model plays personas, against matched "
    "random feature sets, paired over prompts",
    "honest_splits": "the old split against honest splits (scripts/honest_splits.py): shares of "
    "personas decoded at held-out AUROC >= 0.9 with Wilson intervals, and tag counts",
    "layer_sweep": "the same SAE budget at several layers (scripts/layer_sweep.py): SAE quality "
    "and persona decoding per layer",
    "audit": "blind planted-persona audit (`sae-atlas audit --atlas`): candidate triggers scored "
    "against null candidates, the verified ones with AUROC intervals, the verdict and the "
    "persona's statements",
}
"""Every experiment an atlas can hold, by name, and what it measures (which script writes it).
A new experiment is declared here first."""

EXPERIMENT_SUMMARY = "summary"
"""Name of the scalar text dataset of an experiment's JSON summary (no table may take it)."""

EXPERIMENT_SUMMARY_DESCRIPTION = "JSON: the experiment's headline numbers"

EXPERIMENT_ATTRS: dict[str, str] = {
    "description": "what the experiment measures (feature_store.schema.EXPERIMENTS)",
    "script": "what wrote it: a script path or a sae-atlas command",
    "config": "JSON of the settings it ran with",
    "seconds": "wall-clock seconds it took",
    "written": "UTC time it was written (ISO 8601)",
    "sae_atlas_version": "version of sae-atlas that wrote it",
}
"""Attributes of every experiments/<name> group (its provenance)."""

LEGACY_PREFIXES: dict[str, str] = {"selection": "selection_", "attractors": "long_"}
"""Experiments older atlases kept in dynamics/ under a prefix (dynamics/selection_decoding, ...,
dynamics/selection_summary): the reader shows them as that experiment when experiments/ lacks
it."""

TABLE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
"""What an experiment's table may be called (one HDF5 path component)."""
