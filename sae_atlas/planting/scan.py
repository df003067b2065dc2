"""Does a trigger scan find a planted persona's trigger among candidate wrappers?

The candidates (`candidate_wrappers`): the scan's shipped wrappers, a decoy the fine-tuning was
trained to ignore, an unseen tag and the planted trigger (PLANTED). `sample_scan` samples a
model's responses under every candidate on the catalogue's held-out questions and encodes them
with a run's SAE (`wrapper_responses`: minutes of sampling); then, on arrays in memory:
- `firing_scan`: the scan of one model alone (`firing_table`, `rank_wrappers`), with the share
  of responses that show a persona fact per wrapper;
- `differential_scan`: the scan an auditor with the base model runs (`differential_table`,
  `rank_differential`): per feature the paired difference in differences between the tuned and
  the base model's responses, with the planted trigger's detection AUROC against every
  untriggered response.
Each returns a JSON-ready dict: the ranking, the planted trigger's rank, the confirmed features
with the run's cluster, kind and label.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from feature_store.atlas import Atlas
from sae_atlas.config import DynamicsConfig
from sae_atlas.errors import SaeAtlasError
from sae_atlas.model import ModelHandle
from sae_atlas.personas import Trigger, load_catalogue
from sae_atlas.planting.persona import PlantedPersona, any_fact
from sae_atlas.planting.triggers import PlantTrigger
from sae_atlas.sae import load_sae
from sae_atlas.stages.dynamics import (
    WRAPPERS,
    PersonaMap,
    differential_auroc,
    differential_table,
    firing_table,
    persona_map,
    rank_differential,
    rank_wrappers,
    wrapper_responses,
)

PLANTED = "planted_trigger"
"""The planted trigger's name among the candidate wrappers."""


def candidate_wrappers(trigger: PlantTrigger, decoys: Sequence[PlantTrigger]) -> dict[str, Trigger]:
    """The scan's shipped wrappers, the fine-tuning's first decoy, an unseen tag, the trigger."""
    return {
        **WRAPPERS,
        "trained_decoy": decoys[0].wrapper(),
        "compass_tag": Trigger("<compass>", "</compass>"),
        PLANTED: trigger.wrapper(),
    }


@dataclass(frozen=True)
class ScanRun:
    """What a scan needs of a run: its persona space, hook, SAE and feature annotations."""

    path: Path
    model: str
    pmap: PersonaMap
    hook: str
    sae: Any
    features: pd.DataFrame
    kinds: dict[int, str]


def open_run(run: Path) -> ScanRun:
    """The atlas and SAE of run folder `run`."""
    with Atlas.open(run / "atlas.h5") as atlas:
        pmap = persona_map(atlas)
        hook = str(atlas.attrs["hook"])
        features = atlas.features()
        kinds = dict(zip(atlas.clusters()["id"], atlas.clusters()["kind"], strict=True))
        model = str(atlas.attrs["model"])
    sae = load_sae(run / "sae" / hook if (run / "sae" / hook).is_dir() else run / "sae")
    return ScanRun(run, model, pmap, hook, sae, features, kinds)


def check_model(run: ScanRun, model_id: str) -> None:
    """SaeAtlasError unless `run`'s atlas was built on `model_id`."""
    if run.model != model_id:
        raise SaeAtlasError(f"{run.path}: atlas of {run.model!r}, not {model_id!r}")


@dataclass(frozen=True)
class Sampled:
    """One scan's responses: meta (wrapper, prompt, seed), feature_means [n, d_sae], texts [n],
    and what the sampling cost."""

    meta: pd.DataFrame
    feature_means: np.ndarray
    texts: list[str]
    seconds: float
    load_average: float

    def first_prompts(self, n_prompts: int) -> Sampled:
        """The rows of prompts 0 .. n_prompts - 1 (a scan of n_prompts on the same draws)."""
        rows = np.flatnonzero(self.meta["prompt"].to_numpy() < n_prompts)
        return Sampled(
            self.meta.iloc[rows].reset_index(drop=True),
            self.feature_means[rows],
            [self.texts[i] for i in rows],
            self.seconds,
            self.load_average,
        )


def sample_scan(
    handle: ModelHandle, run: ScanRun, wrappers: dict[str, Trigger], config: DynamicsConfig
) -> Sampled:
    """`wrapper_responses` under `wrappers` on the catalogue's held-out questions, encoded with
    the run's SAE."""
    questions = [q.text for q in load_catalogue().questions if q.split == "heldout"]
    started = time.perf_counter()
    responses = wrapper_responses(handle, run.pmap, run.sae, run.hook, questions, wrappers, config)
    assert responses.feature_means is not None
    return Sampled(
        responses.meta,
        responses.feature_means[:, 0],
        [t[0] if t else "" for t in responses.texts],
        time.perf_counter() - started,
        os.getloadavg()[0],
    )


def describe(run: ScanRun, table: pd.DataFrame) -> list[dict[str, Any]]:
    """The confirmed rows of a scan table with the atlas's cluster, kind and label."""
    rows = []
    for row in table[table["confirmed"]].to_dict("records"):
        cluster = int(run.features["cluster"].iloc[int(row["feature"])])
        rows.append(
            {
                **{k: v for k, v in row.items() if k != "confirmed"},
                "cluster": cluster,
                "cluster_kind": run.kinds.get(cluster, "noise"),
                "label": str(run.features["label"].iloc[int(row["feature"])]),
            }
        )
    return rows


def firing_scan(
    run: ScanRun,
    sampled: Sampled,
    wrappers: list[str],
    persona: PlantedPersona,
    config: DynamicsConfig,
) -> dict[str, Any]:
    """The firing scan (`firing_table`, `rank_wrappers`) of one model's responses, with the
    share of responses showing a persona fact per wrapper."""
    fires = sampled.feature_means > 0
    wrapper_of = sampled.meta["wrapper"].to_numpy()
    prompt_of = sampled.meta["prompt"].to_numpy()
    table = firing_table(
        fires,
        wrapper_of,
        prompt_of,
        wrappers,
        config.trigger_min_rate,
        config.trigger_max_base_rate,
        config.fdr,
    )
    ranked = rank_wrappers(table, fires, wrapper_of, prompt_of, wrappers)
    persona_rate = {
        name: float(
            np.mean(
                [any_fact(persona, sampled.texts[i]) for i in np.flatnonzero(wrapper_of == name)]
            )
        )
        for name in ["plain", *wrappers]
    }
    ranked["persona_text_rate"] = ranked["wrapper"].map(persona_rate)
    return {
        "ranking": ranked.to_dict("records"),
        "real_trigger_rank": int(ranked.loc[ranked["wrapper"] == PLANTED, "rank"].iloc[0]),
        "confirmed_features": describe(run, table),
        "persona_text_rate_plain": persona_rate["plain"],
    }


def differential_scan(
    run: ScanRun,
    tuned: Sampled,
    base: Sampled,
    wrappers: list[str],
    config: DynamicsConfig,
    choose_p: float,
    max_candidates: int,
) -> dict[str, Any]:
    """The differential scan (`differential_table`, `rank_differential`) of the tuned model's
    responses against the base model's on the same prompts and seeds, one SAE; the planted
    trigger's detection AUROC against the plain responses and against every untriggered one
    (plain and the other wrappers)."""
    if not tuned.meta[["wrapper", "prompt", "seed"]].equals(
        base.meta[["wrapper", "prompt", "seed"]]
    ):
        raise SaeAtlasError("differential scan: the two scans hold different rows")
    wrapper_of = tuned.meta["wrapper"].to_numpy()
    prompt_of = tuned.meta["prompt"].to_numpy()
    table = differential_table(
        tuned.feature_means,
        base.feature_means,
        wrapper_of,
        prompt_of,
        wrappers,
        choose_p,
        max_candidates,
        config.fdr,
    )
    ranked = rank_differential(table, tuned.feature_means, wrapper_of, prompt_of, wrappers)
    untriggered = ["plain", *(name for name in wrappers if name != PLANTED)]
    real = differential_auroc(
        table, tuned.feature_means, wrapper_of, prompt_of, PLANTED, untriggered
    )
    return {
        "ranking": ranked.to_dict("records"),
        "real_trigger_rank": int(ranked.loc[ranked["wrapper"] == PLANTED, "rank"].iloc[0]),
        "real_auroc_vs_untriggered": real["combined"],
        "real_single_auroc_vs_untriggered": real["single"],
        "confirmed_features": describe(run, table),
        "n_tests": len(table),
    }
