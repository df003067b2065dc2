"""Honest train / held-out splits of the corpus: which system-prompt variants each split of each
persona may use, which personas are held out whole, and a check that nothing is shared.

A held-out response differs from every train response in its question and in its system
prompt's text: each persona's prompts are dealt, by a seeded draw per persona, into a train
pool and a held-out pool (`heldout_variant_share` of them, at least one each), and a question
of a split is asked under `variants` prompts of that split's pool only (cycling over the pool
from question to question, so every prompt of the pool is used). The default persona's neutral
prompts are split the same way; its no-system-message condition has no prompt text to share.
Held-out personas (`heldout_personas`: a share of the non-default personas, a seeded draw) are
recorded, not resampled: their transcripts keep their question split, and an analysis that
claims something of "every persona" chooses on the other personas and confirms on these.

Cost: a few permutations per persona. Returns a `SplitPlan` (JSON-ready through `to_dict`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from sae_atlas.config import CorpusConfig
from sae_atlas.errors import SaeAtlasError
from sae_atlas.model import job_seed
from sae_atlas.personas import Catalogue, Persona

SPLIT_NAMES: tuple[str, ...] = ("train", "heldout")


@dataclass(frozen=True)
class SplitPlan:
    """pools: {persona: {split: prompt indices}} (indices into the persona's prompts; for the
    default persona, into its prompts that are not null); heldout_personas: personas held out
    whole (sorted); shared_variants: True when both splits use the same pool (the legacy
    corpus, heldout_variant_share 0)."""

    pools: dict[str, dict[str, tuple[int, ...]]]
    heldout_personas: tuple[str, ...]
    shared_variants: bool

    def variants(self, persona: str, split: str, index: int, count: int) -> tuple[int, ...]:
        """The `count` prompt indices (at most the pool's size, distinct) question number
        `index` of `split` is asked under: consecutive pool entries starting at index x count."""
        pool = self.pools[persona][split]
        count = min(count, len(pool))
        return tuple(pool[(index * count + j) % len(pool)] for j in range(count))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: what a corpus store records."""
        return {
            "pools": {
                name: {s: list(v) for s, v in pools.items()} for name, pools in self.pools.items()
            },
            "heldout_personas": list(self.heldout_personas),
            "shared_variants": self.shared_variants,
        }


def _pools(
    n_prompts: int, share: float, seed: int, name: str, legacy: int
) -> dict[str, tuple[int, ...]]:
    """Train and held-out pools of prompt indices 0..n_prompts-1: a seeded permutation, its
    first round(share x n) (at least 1, at most n - 1) held out; share 0: both pools are the
    first `legacy` indices."""
    if share <= 0:
        first = tuple(range(min(legacy, n_prompts)))
        return {"train": first, "heldout": first}
    if n_prompts < 2:
        raise SaeAtlasError(
            f"persona {name!r} has {n_prompts} system prompt(s): held-out variants need at least "
            "2; add prompts to the catalogue or set corpus.heldout_variant_share to 0"
        )
    n_heldout = min(max(1, round(share * n_prompts)), n_prompts - 1)
    order = np.random.default_rng(job_seed(seed, "variant-split", name)).permutation(n_prompts)
    return {
        "train": tuple(sorted(int(i) for i in order[n_heldout:])),
        "heldout": tuple(sorted(int(i) for i in order[:n_heldout])),
    }


def check_split_config(config: CorpusConfig) -> None:
    """SaeAtlasError naming the field when a split setting cannot work."""
    for name in ("heldout_variant_share", "heldout_personas"):
        value = getattr(config, name)
        if not 0 <= value < 1:
            raise SaeAtlasError(f"corpus.{name}: is {value}; use a share in [0, 1)")


def neutral_prompts(persona: Persona) -> list[tuple[int, str]]:
    """(index, prompt) of the default persona's prompts that are not null."""
    return [(i, p) for i, p in enumerate(persona.prompts) if p is not None]


def split_plan(personas: Sequence[Persona], default: Persona, config: CorpusConfig) -> SplitPlan:
    """The SplitPlan of `personas` (the default persona among them or not) under `config`: the
    same catalogue, seed and shares always give the same plan."""
    check_split_config(config)
    share = config.heldout_variant_share
    pools = {
        p.name: _pools(len(p.prompts), share, config.seed, p.name, config.variants)
        for p in personas
        if p.name != default.name
    }
    neutral = neutral_prompts(default)
    pools[default.name] = _pools(len(neutral), share, config.seed, default.name, len(neutral))
    others = sorted(p.name for p in personas if p.name != default.name)
    n_held = round(config.heldout_personas * len(others))
    rng = np.random.default_rng(job_seed(config.seed, "persona-split"))
    held = sorted(others[int(i)] for i in rng.permutation(len(others))[:n_held])
    return SplitPlan(pools=pools, heldout_personas=tuple(held), shared_variants=share <= 0)


def catalogue_plan(catalogue: Catalogue, config: CorpusConfig) -> SplitPlan:
    """The SplitPlan of the personas `config` chooses from `catalogue`."""
    chosen = catalogue.subset(names=config.personas or None, categories=config.categories or None)
    return split_plan(chosen.personas, catalogue.default_persona, config)


class SplitJob(Protocol):
    """What the leak check reads of a corpus job."""

    @property
    def split(self) -> str: ...
    @property
    def question_id(self) -> str: ...
    @property
    def system_prompt(self) -> str | None: ...


def shared_between_splits(jobs: Iterable[SplitJob]) -> dict[str, list[str]]:
    """What the train and held-out jobs share: {"questions": ids, "system_prompts": texts}
    (sorted; no system message is not a text), empty lists when the splits are disjoint."""
    seen: dict[str, dict[str, set[str]]] = {s: {"q": set(), "p": set()} for s in SPLIT_NAMES}
    for job in jobs:
        if job.split in seen:
            seen[job.split]["q"].add(job.question_id)
            if job.system_prompt is not None:
                seen[job.split]["p"].add(job.system_prompt)
    train, heldout = seen["train"], seen["heldout"]
    return {
        "questions": sorted(train["q"] & heldout["q"]),
        "system_prompts": sorted(train["p"] & heldout["p"]),
    }


def check_disjoint(jobs: Iterable[SplitJob]) -> None:
    """SaeAtlasError when a question or a system prompt's text is in both splits."""
    shared = shared_between_splits(jobs)
    if shared["questions"] or shared["system_prompts"]:
        first = (shared["questions"] or shared["system_prompts"])[0]
        raise SaeAtlasError(
            f"the corpus shares {len(shared['questions'])} question(s) and "
            f"{len(shared['system_prompts'])} system prompt(s) between train and held-out "
            f"(first: {first!r}); give every persona distinct prompts, or set "
            "corpus.heldout_variant_share to 0 for the legacy split"
        )
