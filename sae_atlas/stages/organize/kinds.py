"""What each feature cluster is: its kind (a tag family), its dominant personas and its label.

A cluster's kind is the tag family (persona, roleplay, assistant, puppeteer, trigger) most
significantly enriched among its members against the alive features (hypergeometric test,
Bonferroni), "other" when none is; its dominant personas are its members' best personas
(top_persona_index[:, 0]) with their share; its label is the most common tag of its kind (or its
dominant persona) and its members' most common top tokens. Cost: one pass over the tags and top
tokens, well under a second for 16,000 features.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import hypergeom

from feature_store.schema import CLUSTER_KINDS, LIST_SEPARATOR
from sae_atlas.config import OrganizeConfig

FAMILIES: tuple[str, ...] = tuple(kind for kind in CLUSTER_KINDS if kind != "other")
"""Tag families that can name a cluster's kind: a tag's text before ':'."""
LABEL_TOKENS = 3
"""Top tokens in a cluster's label."""
TOKENS_PER_MEMBER = 3
"""Leading top tokens of each member counted for the label."""
DOMINANT_PERSONAS = 3
MIN_PERSONA_SHARE = 0.1
"""A persona is dominant in a cluster when it is the best persona of this share of its members."""


def tag_families(tags: Sequence[str]) -> np.ndarray:
    """bool [n, len(FAMILIES)]: which tag families each ';'-separated tag list holds."""
    out = np.zeros((len(tags), len(FAMILIES)), dtype=bool)
    column = {family: f for f, family in enumerate(FAMILIES)}
    for row, tag_list in enumerate(tags):
        for tag in tag_list.split(";"):
            f = column.get(tag.split(":", 1)[0].strip())
            if f is not None:
                out[row, f] = True
    return out


def cluster_kinds(
    labels: np.ndarray, families: np.ndarray, config: OrganizeConfig
) -> tuple[list[str], np.ndarray]:
    """The kind of each cluster of `labels` [n] (ids 0..n_clusters-1, -1 noise) from the tag
    families [n, F] of the same n features (the population the base rates come from).

    Returns the kinds and -log10 p-values [n_clusters, F] of the enrichment of each family."""
    n_clusters = int(labels.max()) + 1
    population = len(labels)
    tagged = families.sum(axis=0)
    threshold = config.kind_alpha / max(n_clusters * len(FAMILIES), 1)
    kinds: list[str] = []
    scores = np.zeros((n_clusters, len(FAMILIES)))
    for cluster in range(n_clusters):
        members = labels == cluster
        size = int(members.sum())
        hits = families[members].sum(axis=0)
        p_value = hypergeom.sf(hits - 1, population, tagged, size)
        scores[cluster] = -np.log10(np.maximum(p_value, 1e-300))
        share = hits / size
        base = tagged / population
        qualifies = (
            (hits > 0)
            & (p_value < threshold)
            & (share >= config.kind_share)
            & (share >= config.kind_enrichment * base)
        )
        if qualifies.any():
            candidates = np.flatnonzero(qualifies)
            best = max(candidates, key=lambda f: (scores[cluster, f], share[f]))
            kinds.append(FAMILIES[best])
        else:
            kinds.append("other")
    return kinds, scores


def dominant_personas(best_persona: np.ndarray, names: Sequence[str]) -> list[tuple[str, float]]:
    """The personas that are the best persona (index, -1: none) of at least MIN_PERSONA_SHARE
    of a cluster's members, with that share, most first (at most DOMINANT_PERSONAS)."""
    counts = np.bincount(best_persona[best_persona >= 0], minlength=len(names))
    order = np.argsort(-counts, kind="stable")[:DOMINANT_PERSONAS]
    size = max(len(best_persona), 1)
    return [
        (str(names[p]), counts[p] / size) for p in order if counts[p] / size >= MIN_PERSONA_SHARE
    ]


def common_tokens(top_tokens: Sequence[str]) -> list[str]:
    """The LABEL_TOKENS most common among the leading TOKENS_PER_MEMBER top tokens of each
    member (' | '-separated lists; whitespace-only tokens skipped)."""
    counter: Counter[str] = Counter()
    for tokens in top_tokens:
        leading = [t.strip() for t in tokens.split(LIST_SEPARATOR)[:TOKENS_PER_MEMBER]]
        counter.update(t for t in leading if t)
    return [token for token, _ in counter.most_common(LABEL_TOKENS)]


def cluster_label(
    kind: str, tags: Sequence[str], personas: Sequence[str], tokens: Sequence[str]
) -> str:
    """'persona:pirate: ahoy, matey, ship': the most common member tag of the kind's family
    (kind other: the dominant persona, else 'other'), then the common top tokens."""
    head = personas[0] if kind == "other" and personas else kind
    if kind != "other":
        family_tags = Counter(
            t for tag_list in tags for t in tag_list.split(";") if t.split(":", 1)[0] == kind
        )
        if family_tags:
            head = family_tags.most_common(1)[0][0]
    return f"{head}: {', '.join(tokens)}" if tokens else head


def cluster_table(
    cluster: np.ndarray,
    features: pd.DataFrame,
    best_persona: np.ndarray,
    persona_names: Sequence[str],
    kinds: Sequence[str],
    reappears: np.ndarray,
) -> pd.DataFrame:
    """The clusters/ table: id, kind, size, label, dominant_personas, stability; `cluster`
    [d_sae] ids, `best_persona` [d_sae] each feature's best persona (-1: none)."""
    rows = []
    tags = features["tags"].to_numpy()
    top_tokens = features["top_tokens"].to_numpy()
    for c, kind in enumerate(kinds):
        members = np.flatnonzero(cluster == c)
        dominant = dominant_personas(best_persona[members], persona_names)
        rows.append(
            {
                "id": c,
                "kind": kind,
                "size": len(members),
                "label": cluster_label(
                    kind,
                    tags[members],
                    [name for name, _ in dominant],
                    common_tokens(top_tokens[members]),
                ),
                "dominant_personas": ";".join(f"{n}:{s:.2f}" for n, s in dominant),
                "stability": float(reappears[c]),
            }
        )
    columns = ["id", "kind", "size", "label", "dominant_personas", "stability"]
    return pd.DataFrame(rows, columns=columns)


def describe_clusters(
    features: pd.DataFrame,
    top_persona_index: np.ndarray,
    persona_names: Sequence[str],
    alive: np.ndarray,
    cluster: np.ndarray,
    reappears: np.ndarray,
    config: OrganizeConfig,
) -> tuple[list[str], pd.DataFrame]:
    """The kinds of the clusters `cluster` [d_sae] (enrichment among the `alive` [d_sae]
    features) and the clusters/ table; `top_persona_index` [d_sae, k] is each feature's best
    personas (column 0 the best; no column: no persona), `reappears` [n_clusters] each cluster's
    stability."""
    families = tag_families(features["tags"].fillna("").astype(str).tolist())
    kinds, _ = cluster_kinds(cluster[alive], families[alive], config)
    top = np.asarray(top_persona_index)
    best_persona = top[:, 0] if top.shape[1] else np.full(len(cluster), -1)
    return kinds, cluster_table(cluster, features, best_persona, persona_names, kinds, reappears)
