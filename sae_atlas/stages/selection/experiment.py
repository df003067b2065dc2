"""The persona-selection experiment on a built run: where the persona is decodable, whether the
header carries it causally, and how fast responses relax toward the assistant.

`run_selection(handle, run, config)` samples the grid (`runs.selection_grid`) unpatched, reads
every run at every position class and decodes the persona from the residual and from the SAE's
features (`decoding`, cross-fitted over prompt variants and questions); then samples the six
patched conditions (`patching`) and scores every response by the persona classifier trained on
the corpus (P(unit's persona)), by the unit's persona's SAE features (the n_features with the
largest profile difference to the default persona in the atlas: their summed activation, mean
over response tokens) and by the assistant-axis projection per response token (`relaxation`).
Cost: (1 + 6 x personas/(personas + 1)) x the grid's runs sampled to max_new_tokens tokens, one
forward pass per sampled run, and the corpus classifier's training (see `SelectionConfig`).
Returns `SelectionResult` (tables).
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
from sae_atlas.classifier import PersonaClassifier
from sae_atlas.errors import SaeAtlasError
from sae_atlas.model import ModelHandle, hook_layer, sampling_model
from sae_atlas.personas.catalogue import Catalogue
from sae_atlas.stages.dynamics.experiments import atlas_sae, corpus_classifier, read_atlas
from sae_atlas.stages.dynamics.rollouts import question_bank
from sae_atlas.stages.dynamics.space import PersonaMap
from sae_atlas.stages.label import catalogue_from_corpus
from sae_atlas.stages.selection.decoding import (
    crossfit_scores,
    decoding_aurocs,
    decoding_curves,
    header_gain,
)
from sae_atlas.stages.selection.patching import (
    Units,
    paired_effects,
    patch_plans,
    selection_units,
)
from sae_atlas.stages.selection.positions import PositionIndex, header_length
from sae_atlas.stages.selection.relaxation import gap_curves
from sae_atlas.stages.selection.runs import (
    Patch,
    generate,
    prompts_of,
    read_positions,
    selection_grid,
    tail_residuals,
    texts_of,
)


@dataclass(frozen=True)
class SelectionConfig:
    """personas (empty: n_personas of the corpus, spread over categories, each with at least
    n_variants system prompts); n_variants prompt variants and n_questions questions per
    persona (the default persona: its neutral prompts); max_new_tokens sampled per run (the
    config is the sampler's settings: temperature, top_p, batch_size, seed, dtype); layer (None:
    the atlas's hook) of the patches; patching (False: no patched runs: decoding and the
    unpatched persona runs' relaxation only, about 1/6 of the sampling); n_features persona
    features scored; n_bootstrap resamples of questions."""

    personas: tuple[str, ...] = ()
    n_personas: int = 6
    n_variants: int = 5
    n_questions: int = 6
    max_new_tokens: int = 24
    layer: int | None = None
    patching: bool = True
    n_features: int = 8
    temperature: float = 0.7
    top_p: float = 0.9
    batch_size: int = 32
    dtype: str = "auto"
    n_bootstrap: int = 1000
    seed: int = 0


@dataclass(frozen=True)
class SelectionResult:
    """Every table of the experiment, by name (see `selection_tables`)."""

    tables: dict[str, pd.DataFrame]
    personas: list[str]
    header: int
    layer: int


def choose_personas(
    catalogue: Catalogue, classifier: PersonaClassifier, config: SelectionConfig
) -> list[str]:
    """config.personas, or n_personas taken in turn from each category (not the default's or
    the conditional ones), each known to the classifier and with >= n_variants prompts."""
    if config.personas:
        return list(config.personas)
    queues: dict[str, list[str]] = {}
    for persona in catalogue.personas:
        usable = len([p for p in persona.prompts if p]) >= config.n_variants
        if persona.category in ("default", "conditional") or not usable:
            continue
        if persona.name in classifier.personas:
            queues.setdefault(persona.category, []).append(persona.name)
    chosen: list[str] = []
    while len(chosen) < config.n_personas and any(queues.values()):
        for queue in queues.values():
            if queue and len(chosen) < config.n_personas:
                chosen.append(queue.pop(0))
    return chosen


def persona_features(atlas_path: Path, personas: Sequence[str], default: str, n: int) -> dict:
    """persona -> the n SAE features with the largest profile minus the default's profile."""
    with Atlas.open(atlas_path) as atlas:
        base = atlas.persona(default).profile
        return {p: np.argsort(-(atlas.persona(p).profile - base))[:n] for p in personas}


@dataclass(frozen=True)
class Reader:
    """What scores a sampled run: the handle, hook, SAE, persona map (assistant axis), the
    classifier, each persona's features and the position index."""

    handle: ModelHandle
    hook: str
    sae: Any
    pmap: PersonaMap
    classifier: PersonaClassifier
    features: dict[str, np.ndarray]
    index: PositionIndex

    def read(self, prompts: Sequence[Any], tokens: Sequence[np.ndarray]) -> np.ndarray:
        """[n, n_positions, d_model] residuals of the runs at every position class."""
        return read_positions(
            self.handle,
            [p.token_ids.astype(np.int64) for p in prompts],
            tokens,
            self.hook,
            [p.roles for p in prompts],
            self.index.n_response,
            self.index.header,
        )[0]

    def codes(self, acts: np.ndarray) -> np.ndarray:
        """SAE codes [..., d_sae] of residuals [..., d_model] (NaN rows give NaN)."""
        flat = acts.reshape(-1, acts.shape[-1])
        finite = np.isfinite(flat).all(1)
        out = np.full((len(flat), int(self.sae.cfg.d_sae)), np.nan, dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, int(finite.sum()), 4096):
                rows = np.flatnonzero(finite)[start : start + 4096]
                block = torch.from_numpy(flat[rows]).to(self.sae.W_dec.device, self.sae.W_dec.dtype)
                out[rows] = self.sae.encode(block).float().cpu().numpy()
        return out.reshape(*acts.shape[:-1], -1)

    def scores(self, acts: np.ndarray, texts: Sequence[str], personas: Sequence[str]) -> dict:
        """Per run, for its persona: classifier P, persona-feature score, axis by token."""
        response = acts[:, 2 + self.index.header :]
        codes = self.codes(response)
        picked = np.stack([codes[i][:, self.features[p]].sum(-1) for i, p in enumerate(personas)])
        proba = self.classifier.predict_proba(list(texts))
        columns = [proba.columns.get_loc(p) for p in personas]
        return {
            "classifier": proba.to_numpy()[np.arange(len(texts)), columns],
            "features": np.nanmean(picked, 1),
            "axis": self.pmap.axis(response),
        }


def decoding_tables(
    reader: Reader, acts: np.ndarray, grid: pd.DataFrame, config: SelectionConfig
) -> dict[str, pd.DataFrame]:
    """Cross-fitted decoding of the persona at every position from the residual and from the
    SAE's codes: the curves and the header gains (last header token and first response token
    against the user's turn)."""
    classes = sorted(set(grid["persona"]))
    labels = grid["persona"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    variant, question = grid["variant"].to_numpy(), grid["question"].to_numpy()
    names = reader.index.names
    curves, gains = [], []
    for source, features in (("residual", acts), ("sae", reader.codes(acts))):
        scores = crossfit_scores(features, labels, variant, question)
        point, boot = decoding_aurocs(scores, labels, question, config.n_bootstrap, config.seed)
        curves.append(decoding_curves(point, boot, classes, names, source))
        for at in (f"header_{reader.index.header - 1}", "response_1"):
            gains.append(header_gain(point, boot, classes, names, at, source))
    return {
        "decoding": pd.concat(curves, ignore_index=True),
        "header_gain": pd.concat(gains, ignore_index=True),
    }


def patched_scores(
    reader: Reader,
    model: torch.nn.Module,
    prompts: Sequence[Any],
    grid: pd.DataFrame,
    units: Units,
    layer: int,
    config: SelectionConfig,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, list[str]]]:
    """Scores (`Reader.scores`, for the unit's persona) of every patched condition, and their
    texts; the patch values are the sources' residuals after block `layer`."""
    header = reader.index.header
    pad_id = int(reader.handle.tokenizer.pad_token_id or 0)
    ids = [p.token_ids.astype(np.int64) for p in prompts]
    tails = tail_residuals(model, ids, layer, 2 * header, pad_id, config.batch_size)
    seeds = grid["seed"].to_numpy()
    scores, texts = {}, {}
    for plan in patch_plans(units):
        values = (
            tails[plan.source][:, header:]
            if plan.where == "header"
            else tails[plan.source][:, :header]
        )
        start, stop = (header, 0) if plan.where == "header" else (2 * header, header)
        patch = Patch(layer, start, stop, values)
        target = [ids[t] for t in plan.target]
        tokens = generate(reader.handle, model, target, seeds[plan.target], config, patch)
        texts[plan.name] = texts_of(reader.handle, tokens)
        acts = reader.read([prompts[t] for t in plan.target], tokens)
        scores[plan.name] = reader.scores(acts, texts[plan.name], units.persona.tolist())
    return scores, texts


def effect_tables(
    scores: dict[str, dict[str, np.ndarray]], units: Units, config: SelectionConfig
) -> dict[str, pd.DataFrame]:
    """The patching effects per score (classifier, features; empty without patched runs) and
    the relaxation of the assistant-axis gap (default run minus condition) by response token."""
    effects = pd.DataFrame()
    if config.patching:
        effects = pd.concat(
            [
                paired_effects(
                    {c: s[score] for c, s in scores.items()},
                    units,
                    score,
                    config.n_bootstrap,
                    config.seed,
                )
                for score in ("classifier", "features")
            ],
            ignore_index=True,
        )
    conditions = (
        "persona",
        "default+header:persona",
        "default+user:persona",
        "default+header:other",
    )
    gaps = {c: scores["default"]["axis"] - scores[c]["axis"] for c in conditions if c in scores}
    curves, lengths = gap_curves(
        gaps, units.persona, units.question, config.n_bootstrap, config.seed
    )
    return {"patching": effects, "axis_gap": curves, "relaxation": lengths}


def response_table(
    grid: pd.DataFrame, texts: Sequence[str], units: Units, patched: dict[str, list[str]]
) -> pd.DataFrame:
    """Every sampled response: the grid's runs (condition none) and each patched condition's
    (one per unit: its persona, variant and question)."""
    base = grid[["persona", "variant", "question"]].assign(condition="none", text=list(texts))
    rows = grid.iloc[units.run][["persona", "variant", "question"]].reset_index(drop=True)
    return pd.concat(
        [base, *(rows.assign(condition=name, text=t) for name, t in patched.items())],
        ignore_index=True,
    )


def run_selection(handle: ModelHandle, run: Path, config: SelectionConfig) -> SelectionResult:
    """The experiment on run folder `run` (atlas.h5, transcripts.h5, sae/)."""
    inputs = read_atlas(run / "atlas.h5", "puppeteer", 8)
    classifier = corpus_classifier(run / "transcripts.h5", handle, config.seed)
    catalogue = catalogue_from_corpus(run / "transcripts.h5")
    personas = choose_personas(catalogue, classifier, config)
    questions = question_bank(run / "transcripts.h5", config.seed)[: config.n_questions]
    grid = selection_grid(catalogue, personas, config.n_variants, questions, config.seed)
    prompts = prompts_of(handle, grid)
    headers = {header_length(p.roles) for p in prompts}
    if len(headers) != 1:
        raise SaeAtlasError(f"the assistant header has {sorted(headers)} tokens across prompts")
    layer = config.layer if config.layer is not None else hook_layer(inputs.hook)
    if layer is None:
        raise SaeAtlasError(f"{inputs.hook}: not a residual hook; pass a layer")
    features = persona_features(run / "atlas.h5", personas, inputs.pmap.default, config.n_features)
    sae = atlas_sae(run / "sae", inputs, str(handle.device))
    index = PositionIndex(headers.pop(), config.max_new_tokens)
    reader = Reader(handle, inputs.hook, sae, inputs.pmap, classifier, features, index)
    model = sampling_model(handle, config.dtype)
    ids = [p.token_ids.astype(np.int64) for p in prompts]
    tokens = generate(handle, model, ids, grid["seed"].to_numpy(), config)
    texts = texts_of(handle, tokens)
    acts = reader.read(prompts, tokens)
    tables = decoding_tables(reader, acts, grid, config)
    units = selection_units(grid, config.seed)
    scores, patched = (
        patched_scores(reader, model, prompts, grid, units, layer, config)
        if config.patching
        else ({}, {})
    )
    for name, rows in (("persona", units.run), ("default", units.default)):
        scores[name] = reader.scores(acts[rows], [texts[r] for r in rows], units.persona.tolist())
    tables |= effect_tables(scores, units, config)
    tables["responses"] = response_table(grid, texts, units, patched)
    return SelectionResult(tables, personas, index.header, layer)
