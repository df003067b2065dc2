"""The puppeteer's causal test: edit the puppeteer features while the model plays personas, and
compare with the same edits of matched random feature sets.

Prompts: personas (held-out ones first) under their held-out system prompts, on held-out
questions. Each prompt is answered once unedited and once under each edit (edits.EDITS: zero,
resample, add, cap at the default persona's mean) of the puppeteer set and of each matched
random set (matched.matched_sets: same count, firing frequency, activation scale, decoder norm),
all with the prompt's own sampling seed, so every answer pairs with the unedited one. Scores
per answer: the persona classifier's P(persona) (sae_atlas.classifier), whether it shows a
non-format assistant marker (the dynamics' MARKERS without bullet lists), the projection of its
mean residual (unedited model, response tokens) on the assistant axis; per prompt and edit, the
KL divergence of the edited model's next-token distribution from the unedited one on the
unedited answer's tokens (mean over them).
`effects`: per edit and score, the puppeteer set's paired effect (edited minus unedited) against
the random sets' mean effect on the same prompt: the paired difference's mean and bootstrap
interval over prompts, a Wilcoxon signed-rank p-value, BH over the family (edits x scores), and
the puppeteer's rank among the random sets' mean effects.

Cost: (1 + 4 x (1 + n_random)) x prompts sampled answers of max_new_tokens, plus two teacher-
forced passes per answer (scores, KL). Returns per-answer and per-prompt tables and the effects.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.stats import wilcoxon

from feature_store.labels import Labels, load_labels
from feature_store.schema import ROLE_CODE
from sae_atlas.classifier import PersonaClassifier, train_classifier
from sae_atlas.config import CorpusConfig
from sae_atlas.model import ModelHandle, converse, job_seed, message, sampling_model, steered
from sae_atlas.model.handle import Messages, hook_layer
from sae_atlas.model.steering import Intervention
from sae_atlas.personas import Catalogue
from sae_atlas.stages.corpus import corpus_responses
from sae_atlas.stages.dynamics.markers import MARKERS
from sae_atlas.stages.label.edits import EDITS, code_bank, feature_edits
from sae_atlas.stages.label.honest import RunInputs
from sae_atlas.stages.label.matched import matching_keys
from sae_atlas.stages.splits import catalogue_plan
from sae_atlas.stats import benjamini_hochberg, bootstrap_ci

FORMAT_MARKERS: tuple[str, ...] = ("bullet_list",)
"""MARKERS that read the answer's form, left out of the assistant-marker score."""
SCORES: tuple[str, ...] = ("p_persona", "assistant_marker", "axis_projection", "kl")


@dataclass(frozen=True)
class Prompt:
    """One persona run: the persona, its system prompt, the question (id and text), a seed."""

    persona: str
    system_prompt: str | None
    question_id: str
    question: str
    seed: int

    def messages(self) -> Messages:
        head = [] if self.system_prompt is None else [message("system", self.system_prompt)]
        return [*head, message("user", self.question)]


def answers(
    handle: ModelHandle,
    model: torch.nn.Module,
    prompts: Sequence[Prompt],
    conditions: dict[str, tuple[Intervention, ...]],
    config: CorpusConfig,
) -> pd.DataFrame:
    """One answer per prompt and condition (name: interventions; () for unedited), each prompt
    with its own seed in every condition: rows condition, prompt (index), text."""
    names = list(conditions)
    chats = converse(
        handle,
        [p.messages()[:-1] for p in prompts] * len(names),
        [[p.question] for p in prompts] * len(names),
        [p.seed for p in prompts] * len(names),
        1,
        config,
        steering=[conditions[name] for name in names for _ in prompts],
        model=model,
    )
    return pd.DataFrame(
        {
            "condition": [name for name in names for _ in prompts],
            "prompt": list(range(len(prompts))) * len(names),
            "text": [chat[-1]["content"] for chat in chats],
        }
    )


def assistant_marker(texts: Sequence[str]) -> np.ndarray:
    """[n] 1.0 where a text shows a non-format assistant marker, else 0.0."""
    patterns = [p for name, p in MARKERS.items() if name not in FORMAT_MARKERS]
    return np.array(
        [float(any(re.search(p, text, re.IGNORECASE) for p in patterns)) for text in texts]
    )


@torch.inference_mode()
def teacher_forced(
    handle: ModelHandle,
    model: torch.nn.Module,
    chats: Sequence[Messages],
    layer: int,
    interventions: tuple[Intervention, ...] = (),
    logprobs: bool = True,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per chat (ending with the assistant's answer): the residual after block `layer` [r,
    d_model] and the next-token log-probabilities [r, vocab] at the answer's tokens (r: its
    assistant tokens; the distribution that predicts each; [r, 0] without `logprobs`: 200 kB
    per token kept otherwise), under `interventions`."""
    out = []
    with steered(handle, model, interventions):
        for chat in chats:
            tokens = handle.format_chat(chat)
            ids = torch.as_tensor(np.asarray(tokens.token_ids), dtype=torch.long)[None]
            answer = np.flatnonzero(np.asarray(tokens.roles) == ROLE_CODE["assistant"])
            result = model(ids.to(next(model.parameters()).device), output_hidden_states=True)
            hidden = result.hidden_states[layer + 1][0].float().cpu().numpy()
            before = torch.from_numpy(np.clip(answer - 1, 0, None))
            kept = result.logits[0, before].float()
            kept = torch.log_softmax(kept, -1) if logprobs else kept[:, :0]
            out.append((hidden[answer], kept.cpu().numpy()))
    return out


def answer_scores(
    handle: ModelHandle,
    model: torch.nn.Module,
    prompts: Sequence[Prompt],
    table: pd.DataFrame,
    classifier: PersonaClassifier,
    axis: np.ndarray,
    hook: str,
) -> pd.DataFrame:
    """`table` (answers) with p_persona (the classifier's probability of the prompt's persona;
    NaN for a persona it does not know), assistant_marker and axis_projection (mean residual over
    the answer's tokens, unedited model, on the unit `axis`)."""
    layer = hook_layer(hook)
    assert layer is not None
    chats = [
        [*prompts[p].messages(), message("assistant", text)]
        for p, text in zip(table["prompt"], table["text"], strict=True)
    ]
    forward = teacher_forced(handle, model, chats, layer, logprobs=False)
    unit = axis / np.linalg.norm(axis)
    probabilities = classifier.predict_proba(table["text"].tolist())
    personas = [prompts[p].persona for p in table["prompt"]]
    return table.assign(
        p_persona=[
            float(probabilities.at[i, name]) if name in probabilities else np.nan
            for i, name in enumerate(personas)
        ],
        assistant_marker=assistant_marker(table["text"].tolist()),
        axis_projection=[
            float(hidden.mean(0) @ unit) if len(hidden) else np.nan for hidden, _ in forward
        ],
    )


def kl_from_unedited(
    handle: ModelHandle,
    model: torch.nn.Module,
    chats: Sequence[Messages],
    layer: int,
    interventions: tuple[Intervention, ...],
    unedited: list[tuple[np.ndarray, np.ndarray]],
) -> np.ndarray:
    """[n] mean over each unedited answer's tokens of KL(unedited || edited) next-token
    distributions (nats)."""
    edited = teacher_forced(handle, model, chats, layer, interventions)
    out = []
    for (_, base), (_, changed) in zip(unedited, edited, strict=True):
        kl = (np.exp(base) * (base - changed)).sum(-1)
        out.append(float(kl.mean()) if len(kl) else np.nan)
    return np.array(out)


def effects(
    scores: pd.DataFrame, edits: Sequence[str], n_random: int, seed: int = 0
) -> pd.DataFrame:
    """Per edit and score of SCORES: the puppeteer set's mean paired effect (edited minus
    unedited; KL: itself), the random sets' mean effect, their per-prompt difference (mean and
    bootstrap 95% interval over prompts), its Wilcoxon signed-rank p-value (two-sided), BH
    q-value over the family, and the share of random sets whose mean effect is at least as far
    from 0 as the puppeteer's (a rank p, with n_random sets). scores: one row per prompt and
    condition (`unedited`, `<edit>:puppeteer`, `<edit>:random<j>`) with every score column."""
    rows = []
    by = {
        name: group.set_index("prompt").sort_index() for name, group in scores.groupby("condition")
    }
    for edit in edits:
        for score in SCORES:
            base = 0.0 if score == "kl" else by["unedited"][score].to_numpy(float)
            target = by[f"{edit}:puppeteer"][score].to_numpy(float) - base
            random = np.stack(
                [by[f"{edit}:random{j}"][score].to_numpy(float) - base for j in range(n_random)]
            )
            difference = target - np.nanmean(random, 0)
            mean, low, high = bootstrap_ci(difference, seed=seed)
            finite = difference[np.isfinite(difference)]
            p = (
                float(wilcoxon(finite).pvalue)
                if np.abs(finite).sum() > 0 and len(finite) > 1
                else 1.0
            )
            set_means = np.nanmean(random, 1)
            rows.append(
                {
                    "edit": edit,
                    "score": score,
                    "puppeteer_effect": float(np.nanmean(target)),
                    "random_effect": float(np.nanmean(set_means)),
                    "difference": mean,
                    "ci_low": low,
                    "ci_high": high,
                    "p_value": p,
                    "rank_p": float(
                        (1 + (np.abs(set_means) >= abs(np.nanmean(target))).sum()) / (1 + n_random)
                    ),
                    "n_prompts": len(finite),
                }
            )
    table = pd.DataFrame(rows)
    table["q_value"] = benjamini_hochberg(table["p_value"].to_numpy())
    return table


@dataclass(frozen=True)
class CausalSetup:
    """What the causal test needs: the model (handle and a plain `sampling_model` copy), the
    SAE and its hook, the persona classifier, the assistant axis [d_model], a code bank
    [B, d_sae] (edits.code_bank), each feature's activation scale [d_sae] (mean where it fires,
    for add), its ceiling [d_sae] (mean over the default persona's response tokens, for cap),
    the sampler's settings and a seed."""

    handle: ModelHandle
    model: torch.nn.Module
    sae: Any
    hook: str
    classifier: PersonaClassifier
    axis: np.ndarray
    bank: np.ndarray
    scale: np.ndarray
    ceiling: np.ndarray
    sampling: CorpusConfig
    seed: int = 0


def puppeteer_causal(
    setup: CausalSetup, prompts: Sequence[Prompt], puppeteer: np.ndarray, random_sets: np.ndarray
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Answers with their scores (and KL) under every condition, and `effects`: the puppeteer
    set [k] against the matched random sets [n_random, k]."""
    conditions: dict[str, tuple[Intervention, ...]] = {"unedited": ()}
    named = [("puppeteer", puppeteer), *((f"random{j}", s) for j, s in enumerate(random_sets))]
    for name, features in named:
        edits = feature_edits(
            setup.hook, setup.sae, features, setup.bank, setup.scale, setup.ceiling, setup.seed
        )
        for edit, intervention in edits.items():
            conditions[f"{edit}:{name}"] = (intervention,)
    table = answers(setup.handle, setup.model, prompts, conditions, setup.sampling)
    scored = answer_scores(
        setup.handle, setup.model, prompts, table, setup.classifier, setup.axis, setup.hook
    )
    layer = hook_layer(setup.hook)
    assert layer is not None
    base = scored[scored["condition"] == "unedited"].sort_values("prompt")
    chats = [
        [*prompts[p].messages(), message("assistant", text)]
        for p, text in zip(base["prompt"], base["text"], strict=True)
    ]
    unedited = teacher_forced(setup.handle, setup.model, chats, layer)
    kl = {("unedited", p): 0.0 for p in range(len(prompts))}
    for name, interventions in conditions.items():
        if interventions:
            values = kl_from_unedited(
                setup.handle, setup.model, chats, layer, interventions, unedited
            )
            kl.update(
                {(name, int(p)): float(v) for p, v in zip(base["prompt"], values, strict=True)}
            )
    scored["kl"] = [
        kl[(c, int(p))] for c, p in zip(scored["condition"], scored["prompt"], strict=True)
    ]
    return scored, effects(scored, EDITS, len(random_sets), setup.seed)


def causal_prompts(
    catalogue: Catalogue, config: CorpusConfig, n_personas: int, n_questions: int
) -> list[Prompt]:
    """Persona runs on held-out data: the corpus's held-out personas first, then others in
    catalogue order, up to n_personas (the default excluded), each under its held-out system
    prompts (cycled) on the first n_questions held-out questions; seeds from config.seed."""
    plan = catalogue_plan(catalogue, config)
    chosen = catalogue.subset(names=config.personas or None, categories=config.categories or None)
    default = catalogue.default_persona.name
    others = [p.name for p in chosen.personas if p.name != default]
    order = [*plan.heldout_personas, *(n for n in others if n not in plan.heldout_personas)]
    questions = chosen.subset(n_questions=config.n_questions).split("heldout")[:n_questions]
    prompts = []
    for name in order[:n_personas]:
        persona = catalogue.persona(name)
        for index, question in enumerate(questions):
            (variant,) = plan.variants(name, "heldout", index, 1)
            text = persona.trigger.wrap(question.text) if persona.trigger else question.text
            prompts.append(
                Prompt(
                    persona=name,
                    system_prompt=persona.prompts[variant],
                    question_id=question.id,
                    question=text,
                    seed=job_seed(config.seed, "causal", name, question.id),
                )
            )
    return prompts


def tagged(labels: Labels, tag: str) -> np.ndarray:
    """Ids of the features of `labels` that carry `tag`."""
    return np.array(
        [i for i, tags in enumerate(labels.features["tags"]) if tag in str(tags).split(";")],
        dtype=np.int64,
    )


def run_keys(inputs: RunInputs, labels: Labels) -> np.ndarray:
    """The matching keys [d_sae, 3] (matched.matching_keys) of a finished run's features."""
    decoder_norm = inputs.sae.W_dec.detach().float().norm(dim=1).cpu().numpy()
    features = labels.features
    return matching_keys(
        features["density"].to_numpy(float), features["mean_act"].to_numpy(float), decoder_norm
    )


def run_setup(
    inputs: RunInputs, handle: ModelHandle, sampling: CorpusConfig, bank_size: int, seed: int
) -> CausalSetup:
    """The CausalSetup of a finished run: classifier trained on its corpus, assistant axis (the
    default persona's vector minus the mean of the others'), code bank of bank_size train
    response tokens, add scales (mean activation where a feature fires) and cap ceilings (the
    default persona's SAE profile: mean activation over its response tokens)."""
    labels = load_labels(inputs.path / "labels.h5")
    names = list(labels.personas["name"])
    default = names.index(labels.default_persona)
    others = [i for i in range(len(names)) if i != default]
    axis = labels.persona_vectors[default] - labels.persona_vectors[others].mean(0)
    corpus = corpus_responses(inputs.path / "transcripts.h5", handle)
    classifier = train_classifier(
        corpus["text"].tolist(),
        corpus["persona"].astype(str).tolist(),
        corpus["split"].astype(str).tolist(),
        seed=seed,
    )
    return CausalSetup(
        handle=handle,
        model=sampling_model(handle, sampling.dtype),
        sae=inputs.sae,
        hook=inputs.hook,
        classifier=classifier,
        axis=axis.astype(np.float32),
        bank=code_bank(inputs.store, inputs.sae, inputs.hook, bank_size, seed),
        scale=labels.features["mean_act"].to_numpy(np.float32),
        ceiling=labels.persona_profiles[default].astype(np.float32),
        sampling=sampling,
        seed=seed,
    )
