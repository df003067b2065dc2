"""The figures a finished run gives on its own splits, and two runs side by side (the legacy
split, where held-out responses share their system prompts with train ones, against honest
splits, sae_atlas.stages.splits).

Per run: the figures its labels.h5 holds as built (tags per kind, puppeteer count, share of
personas whose best feature reaches held-out AUROC 0.9, persona decoder); the same labeling pass
recomputed with this code (format tags, the puppeteer chosen on train and confirmed on held-out
data against matched random sets, trigger tags on response tokens) without writing anything into
the run; per persona the best feature per pooling and the residual probes (response and header) on
held-out data (sae_atlas.stages.label.targets: the same rules as scripts/label_targets.py), each
share with a Wilson interval over personas. Cost: two SAE passes over the run's store (the labeling
pass and response_statistics) and a few logistic fits per persona. Returns JSON-ready dicts;
`comparison_rows` flattens two of them into rows (figure, old, new).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sae_lens import SAE

from feature_store.activations import ActivationStore
from feature_store.labels import load_labels
from sae_atlas.config import LabelConfig, load_config
from sae_atlas.errors import SaeAtlasError
from sae_atlas.personas import Catalogue
from sae_atlas.sae import load_sae
from sae_atlas.stages.label.inputs import catalogue_from_corpus, heldout_personas_from_corpus
from sae_atlas.stages.label.labeling import label
from sae_atlas.stages.label.statistics import response_statistics
from sae_atlas.stages.label.targets import auroc_share, linear_ceiling
from sae_atlas.stages.train import open_store
from sae_atlas.stats import wilson_interval


@dataclass(frozen=True)
class RunInputs:
    """A finished run's store, SAE and hook, catalogue, held-out personas (empty for a legacy
    corpus), label settings and the summary its labels.h5 holds."""

    path: Path
    store: ActivationStore
    sae: SAE[Any]
    hook: str
    catalogue: Catalogue
    heldout_personas: tuple[str, ...]
    label_config: LabelConfig
    built_summary: dict[str, Any]


def run_inputs(run: str | Path) -> RunInputs:
    """The RunInputs of the run folder `run` (SaeAtlasError naming what is missing)."""
    run = Path(run)
    for name in ("config.yaml", "transcripts.h5", "activations.h5", "sae", "labels.h5"):
        if not (run / name).exists():
            raise SaeAtlasError(f"{run}: no {name}; give a run whose label stage is complete")
    sae = load_sae(next(p for p in sorted((run / "sae").iterdir()) if p.is_dir()))
    return RunInputs(
        path=run,
        store=open_store(run / "activations.h5"),
        sae=sae,
        hook=str(sae.cfg.metadata.hook_name),
        catalogue=catalogue_from_corpus(run / "transcripts.h5"),
        heldout_personas=heldout_personas_from_corpus(run / "transcripts.h5"),
        label_config=load_config(str(run / "config.yaml")).label,
        built_summary=load_labels(run / "labels.h5").summary,
    )


def label_figures(summary: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of a labels summary (any version of it: missing ones are None)."""
    tags = summary.get("tag_counts", {})
    decoder = summary.get("decoder", {})
    puppeteer = summary.get("puppeteer", {})
    return {
        "kind_counts": summary.get("kind_counts", {}),
        "n_trigger_tags": sum(n for tag, n in tags.items() if tag.startswith("trigger:")),
        "n_puppeteer": tags.get("puppeteer", 0),
        "n_format": tags.get("format", 0),
        "share_personas_auroc_0.9": summary.get("share_personas_auroc_0.9"),
        "decoder_accuracy": decoder.get("accuracy"),
        "decoder_chance": decoder.get("chance"),
        "puppeteer_candidates": puppeteer.get("n_candidates"),
        "puppeteer_null_p": puppeteer.get("null_p"),
        "puppeteer_set_log_enrichment": puppeteer.get("set_log_enrichment"),
        "puppeteer_null_log_enrichment_95": puppeteer.get("null_log_enrichment_95"),
        "format": summary.get("format"),
        "puppeteer": puppeteer or None,
        "puppeteer_features": summary.get("puppeteer_features"),
    }


def recomputed_summary(inputs: RunInputs) -> dict[str, Any]:
    """The labels summary of the run's store and SAE under this code (nothing written)."""
    labels = label(
        inputs.store,
        inputs.sae,
        inputs.hook,
        inputs.label_config,
        catalogue=inputs.catalogue,
        heldout_personas=inputs.heldout_personas,
    )
    return labels.summary


POOLINGS: tuple[str, ...] = ("mean", "max", "rate", "first8", "first16", "first32", "header")
"""response_statistics poolings whose best feature (chosen on train) is scored held out."""
PROBES: dict[str, str] = {"response_probe": "residual", "header_probe": "header_residual"}
"""Residual probes (targets.linear_ceiling) and the response_statistics entry each reads."""


def with_interval(heldout: dict[str, float], target: float = 0.9) -> dict[str, Any]:
    """The share of personas whose held-out AUROC (`heldout`: persona -> AUROC, NaN: not
    scored) reaches `target`, its Wilson 95% interval over personas, the median and n."""
    values = np.array([v for v in heldout.values() if np.isfinite(v)])
    hits = int((values >= target).sum())
    return {
        "share": hits / len(values) if len(values) else float("nan"),
        "ci": list(wilson_interval(hits, len(values))),
        "median_auroc": float(np.median(values)) if len(values) else float("nan"),
        "n_personas": len(values),
    }


def probe_figures(inputs: RunInputs) -> tuple[dict[str, Any], pd.DataFrame]:
    """Per pooling of POOLINGS its best feature's held-out share (targets.auroc_share, the
    labeling pass's rule) and per probe of PROBES its share (targets.linear_ceiling), each
    with_interval; and the per-persona held-out AUROCs (one column each)."""
    responses, statistics = response_statistics(
        inputs.store, inputs.sae, inputs.hook, inputs.catalogue, inputs.label_config.block_tokens
    )
    per_persona: dict[str, dict[str, float]] = {}
    for pooling in POOLINGS:
        found = auroc_share(statistics[pooling], responses, inputs.label_config)
        per_persona[f"{pooling}_best_feature"] = found["heldout"]
    for probe, source in PROBES.items():
        per_persona[probe] = linear_ceiling(statistics[source], responses)["heldout"]
    shares = {name: with_interval(heldout) for name, heldout in per_persona.items()}
    return shares, pd.DataFrame(per_persona)


def comparison_rows(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows (figure, old, new) of two runs' figures, flattened one level of dicts deep (a
    figure only one run has gets None for the other)."""

    def flat(figures: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in figures.items():
            if isinstance(value, dict):
                for inner, item in value.items():
                    out[f"{key}.{inner}"] = item
            else:
                out[key] = value
        return out

    old_flat, new_flat = flat(old), flat(new)
    names = list(dict.fromkeys([*old_flat, *new_flat]))
    return [{"figure": n, "old": old_flat.get(n), "new": new_flat.get(n)} for n in names]
