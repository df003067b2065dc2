"""The dynamics experiments on a built run, one method per step of the stage, sharing what they
read once: the atlas's persona map and features (`AtlasInputs`), the SAE, the question bank, the
model and its sampling copy, and the config.

(a, b) `natural`: rollouts from many starting personas and after scene-setting turns, with their
transition matrix, stationary distribution, attractors and the attractors' robustness; the
persona classifier (`corpus_classifier`) trained on the corpus's responses; (c) `steering`: the
kick along each target's direction against a matched random one, its relaxation and scores, and
`markers`: assistant-style markers with and without ablating the puppeteer features; (d)
`wrapper_scan`: features firing only under a wrapper, with their cluster and label. Cost: the
sampling (see the package's docstring); everything else is milliseconds to seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from feature_store.atlas import Atlas
from sae_atlas.classifier import PersonaClassifier, train_classifier
from sae_atlas.config import DynamicsConfig
from sae_atlas.errors import SaeAtlasError
from sae_atlas.model import ModelHandle, sampling_model
from sae_atlas.sae import load_sae
from sae_atlas.stages.corpus import corpus_responses
from sae_atlas.stages.dynamics.attractors import flow_tables
from sae_atlas.stages.dynamics.calibration import calibrate
from sae_atlas.stages.dynamics.markers import marker_ablation, marker_hits, paired_rates
from sae_atlas.stages.dynamics.markov import (
    row_normalised,
    stationary_distribution,
    transition_counts,
)
from sae_atlas.stages.dynamics.repetition import state_names
from sae_atlas.stages.dynamics.rollouts import Rollouts, natural_rollouts, question_bank
from sae_atlas.stages.dynamics.space import PersonaMap, persona_map, starting_personas
from sae_atlas.stages.dynamics.steering import (
    kick_relaxation,
    steering_kicks,
    steering_scores,
    steering_targets,
)
from sae_atlas.stages.dynamics.tables import natural_entries
from sae_atlas.stages.dynamics.wrapper_scan import scan_wrappers


@dataclass(frozen=True)
class AtlasInputs:
    """What the experiments read from the atlas: its persona map and hook, the features table,
    the features to ablate (tagged config.ablate_tag) and every feature's mean activation over
    response tokens [d_sae] (density x mean_act), the kind of each cluster id, and d_sae."""

    pmap: PersonaMap
    hook: str
    features: pd.DataFrame
    ablated: np.ndarray
    mean_activations: np.ndarray
    kinds: dict[int, str]
    d_sae: int


def read_atlas(path: Path, ablate_tag: str, n_regions: int) -> AtlasInputs:
    """The experiments' inputs from the atlas at `path` (its personas in n_regions regions)."""
    with Atlas.open(path) as atlas:
        features = atlas.features()
        clusters = atlas.clusters()
        return AtlasInputs(
            pmap=persona_map(atlas, n_regions),
            hook=str(atlas.attrs["hook"]),
            features=features,
            ablated=atlas.features(tag=ablate_tag).index.to_numpy(),
            mean_activations=(features["density"] * features["mean_act"]).to_numpy(np.float32),
            kinds=dict(zip(clusters["id"], clusters["kind"], strict=True)),
            d_sae=atlas.d_sae,
        )


def atlas_sae(folder: Path, inputs: AtlasInputs, device: str) -> Any:
    """The SAE the atlas was built from: `folder` (sae-lens format) or its subfolder for the
    atlas's hook; SaeAtlasError when its width is not the atlas's."""
    sae = load_sae(
        folder / inputs.hook if (folder / inputs.hook).is_dir() else folder, device=device
    )
    if int(sae.cfg.d_sae) != inputs.d_sae:
        raise SaeAtlasError(
            f"{folder}: has {sae.cfg.d_sae} features, the atlas {inputs.d_sae}; give the SAE the "
            "atlas was built from"
        )
    return sae


def corpus_classifier(transcripts: Path, handle: ModelHandle, seed: int) -> PersonaClassifier:
    """The persona classifier trained on the corpus's responses (held-out split scored)."""
    corpus = corpus_responses(transcripts, handle)
    return train_classifier(
        corpus["text"].tolist(),
        corpus["persona"].astype(str).tolist(),
        corpus["split"].astype(str).tolist(),
        seed=seed,
    )


@dataclass(frozen=True)
class NaturalDynamics:
    """Experiments (a, b): the rollouts, the persona map with multi-turn centroids they were
    placed by and its resolution (`calibrate`), their pooled transition matrix [r + 1, r + 1]
    over the persona regions and the repetition state (NaN rows: no observed exit) and
    stationary distribution [r + 1], and the per-condition flow tables
    (`flow_tables`: flow with the attractor claims, transitions, return_to_assistant, basins)."""

    rollouts: Rollouts
    pmap: PersonaMap
    resolution: pd.DataFrame
    matrix: np.ndarray
    stationary: np.ndarray
    flow: dict[str, pd.DataFrame]

    def entries(self) -> dict[str, pd.DataFrame | np.ndarray]:
        """The dynamics/ entries of these rollouts (`natural_entries`)."""
        return natural_entries(
            self.rollouts, self.pmap, self.stationary, self.flow, self.resolution, self.matrix
        )


@dataclass(frozen=True)
class SteeringResults:
    """Experiment (c), the kick: its targets and strength, the relaxation per target, control
    and turn, the scored kicked turns and the scores per target (`steering_scores`)."""

    targets: list[str]
    strength: float
    relaxation: pd.DataFrame
    responses: pd.DataFrame
    scores: pd.DataFrame


@dataclass(frozen=True)
class Experiments:
    """The experiments of one run: `handle` and `model` (its sampling copy), the atlas's
    `inputs`, the SAE, the question `bank`, the config and the corpus (`transcripts`)."""

    handle: ModelHandle
    model: torch.nn.Module
    inputs: AtlasInputs
    sae: Any
    bank: Sequence[str]
    config: DynamicsConfig
    transcripts: Path

    def natural(self) -> NaturalDynamics:
        """(a, b) the regions' multi-turn centroids, the natural rollouts placed by them and
        their flow statistics."""
        config = self.config
        pmap, resolution = calibrate(
            self.handle,
            self.inputs.pmap,
            self.transcripts,
            self.inputs.hook,
            config.n_turns,
            config.calibration_chats,
            config.max_new_tokens,
        )
        rollouts = natural_rollouts(
            self.handle, pmap, self.bank, config, self.inputs.hook, self.model
        )
        names = state_names(pmap.names)
        regions, assistant = rollouts.states(len(pmap.names)), pmap.names.index("assistant")
        counts = transition_counts(regions, len(names))
        first = np.bincount(regions[:, 0], minlength=len(names))
        matrix = row_normalised(counts)
        stationary = stationary_distribution(matrix, first)[0]
        flow = flow_tables(
            regions,
            rollouts.meta,
            names,
            assistant,
            config.max_lag,
            config.n_bootstrap,
            config.fdr,
            config.seed,
        )
        return NaturalDynamics(rollouts, pmap, resolution, matrix, stationary, flow)

    def steering(self, classifier: PersonaClassifier, token_norm: float) -> SteeringResults:
        """(c) kicks of steer_scale x the mean response-token norm `token_norm`, scored by
        `classifier`."""
        config, pmap = self.config, self.inputs.pmap
        targets = steering_targets(pmap, config, classifier.personas)
        strength = config.steer_scale * token_norm
        kicks = steering_kicks(
            self.handle, pmap, self.bank, config, self.inputs.hook, targets, strength, self.model
        )
        relaxation = kick_relaxation(kicks, pmap)
        responses, scores = steering_scores(kicks, classifier, config.n_bootstrap, config.seed)
        return SteeringResults(targets, strength, relaxation, responses, scores)

    def markers(self) -> pd.DataFrame:
        """(c) marker rates with and without ablating the atlas's ablate_tag features (an empty
        table of zero ablation when it has none)."""
        config, inputs = self.config, self.inputs
        if not len(inputs.ablated):
            return paired_rates(marker_hits([]), marker_hits([]), 1, config.seed).assign(
                ablation="zero"
            )
        return marker_ablation(
            self.handle,
            inputs.pmap,
            self.sae,
            inputs.hook,
            inputs.ablated.tolist(),
            starting_personas(inputs.pmap, config),
            self.bank,
            config,
            self.model,
            means=inputs.mean_activations,
        )

    def wrapper_scan(self) -> pd.DataFrame:
        """(d) the wrapper scan's firing table, each feature with its cluster, the cluster's
        kind (noise: none) and its label."""
        inputs = self.inputs
        table = scan_wrappers(
            self.handle, inputs.pmap, self.sae, inputs.hook, self.bank, self.config, self.model
        )
        rows = table["feature"].to_numpy()
        cluster = inputs.features["cluster"].to_numpy()[rows]
        return table.assign(
            cluster=cluster,
            cluster_kind=[inputs.kinds.get(c, "noise") for c in cluster],
            label=inputs.features["label"].to_numpy()[rows],
        )


def prepare_experiments(
    handle: ModelHandle, atlas: Path, sae: Path, transcripts: Path, config: DynamicsConfig
) -> Experiments:
    """The experiments on a run: its atlas's inputs, its SAE (`atlas_sae`), the question bank
    of its corpus, and a sampling copy of the model in config.dtype."""
    inputs = read_atlas(atlas, config.ablate_tag, config.n_regions)
    sae_model = atlas_sae(sae, inputs, str(handle.device))
    bank = question_bank(transcripts, config.seed)
    model = sampling_model(handle, config.dtype)
    return Experiments(handle, model, inputs, sae_model, bank, config, transcripts)
