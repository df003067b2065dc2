"""`Atlas`: read-only queries on an atlas file, as pandas DataFrames and small card objects.

`feature(i)` reads one row of each feature column, the feature's slice of the examples table and
its decoder row, about a millisecond; small columns (numeric feature columns, persona names and
vectors, the example index) are cached on first use, text columns when a query needs the whole
column (`features()`, `search()`, `persona()`). `nearest_features` streams the decoder in blocks
(one read of W_dec per call, no d_sae x d_sae matrix). `default_persona()` and `regions()` read
what organize and dynamics recorded; `experiments()` and `experiment(name)` what experiments run
on the atlas recorded (lazily: a table is read when looked up). Raw access and caching are
`AtlasReader`'s.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np
import pandas as pd

from feature_store.atlas.arrays import persona_list, read_all
from feature_store.atlas.experiments import Experiment, legacy_experiment, stored_experiment
from feature_store.atlas.reader import AtlasReader
from feature_store.errors import StoreError
from feature_store.schema import (
    CLUSTER_COLUMNS,
    DEFAULT_CATEGORY,
    DEFAULT_PERSONA_NAME,
    EXAMPLE_COLUMNS,
    EXAMPLE_KINDS,
    EXPERIMENTS,
    EXPERIMENTS_GROUP,
    FEATURE_COLUMNS,
    LEGACY_PREFIXES,
    ORGANIZE_SUMMARY_ATTR,
    PERSONA_COLUMNS,
    PERSONA_SPACE_ARRAYS,
    REGION_CENTROIDS_ENTRY,
    REGIONS_ENTRY,
)

NEAREST_BLOCK_ROWS = 8192
"""Rows of W_dec read at a time by `Atlas.nearest_features`."""


@dataclass
class FeatureCard:
    """Everything about one feature: its row, top personas, examples and decoder direction."""

    index: int
    row: dict[str, Any]
    top_personas: pd.DataFrame
    examples: pd.DataFrame
    decoder: np.ndarray

    @property
    def label(self) -> str:
        return str(self.row["label"])


@dataclass
class PersonaCard:
    """One persona: its features ranked by score, nearest personas, place in persona space."""

    name: str
    category: str
    prompts: list[str]
    features: pd.DataFrame
    nearest: pd.DataFrame
    coords: np.ndarray
    axis_projection: float
    profile: np.ndarray


class Atlas(AtlasReader):
    """Read-only queries on an atlas file. Open with `Atlas.open(path)`; close when done."""

    # -- personas ---------------------------------------------------------------------------

    def personas(self) -> pd.DataFrame:
        """One row per persona: name, category, prompts (list), axis_projection, n_features
        (features with the persona among their top personas), coords [n_components]."""
        table = self._table(PERSONA_COLUMNS)
        frame = pd.DataFrame(table)
        frame["prompts"] = [json.loads(p) for p in frame["prompts"]]
        flat = self._column("features/top_persona_index").ravel()
        frame["n_features"] = np.bincount(flat[flat >= 0], minlength=len(frame))
        frame["coords"] = list(self._column("personas/coords"))
        return frame

    def persona(self, name: str, nearest: int = 10) -> PersonaCard:
        """A persona's card: its features ranked by score (best first), the `nearest` personas
        by cosine of persona vectors, coordinates, assistant-axis projection, SAE profile."""
        row = self._persona_row(name)
        feature, rank, score = self._features_of_persona(row)
        order = np.argsort(-np.nan_to_num(score, nan=-np.inf), kind="stable")
        feature, rank, score = feature[order], rank[order], score[order]
        features = pd.DataFrame(
            {
                "feature": feature,
                "score": score,
                "rank": rank,
                "label": self._column("features/label")[feature],
                "tags": self._column("features/tags")[feature],
                "density": self._column("features/density")[feature],
                "heldout_auroc": self._column("features/heldout_auroc")[feature],
            }
        )
        if self._unit_vectors is None:
            vectors = self._column("personas/vector").astype(np.float64)
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            self._unit_vectors = vectors / np.where(norms > 0, norms, 1.0)
        cosine = self._unit_vectors @ self._unit_vectors[row]
        others = np.argsort(-cosine, kind="stable")
        others = others[others != row][:nearest]
        names = self._persona_names()
        return PersonaCard(
            name=name,
            category=str(self._column("personas/category")[row]),
            prompts=json.loads(self._column("personas/prompts")[row]),
            features=features,
            nearest=pd.DataFrame({"persona": names[others], "cosine": cosine[others]}),
            coords=self._column("personas/coords")[row],
            axis_projection=float(self._column("personas/axis_projection")[row]),
            profile=self._dataset("personas/profile")[row],
        )

    def persona_vectors(self) -> np.ndarray:
        """Persona vectors [n_personas, d_model] (float32), rows in the order of `personas()`:
        each persona's mean residual over response tokens."""
        return self._column("personas/vector").copy()

    def persona_space(self) -> dict[str, np.ndarray]:
        """assistant_axis [d_model], center [d_model], components [n_components, d_model],
        explained_variance [n_components]."""
        return {spec.name: self._column(spec.path) for spec in PERSONA_SPACE_ARRAYS}

    def default_persona(self) -> str:
        """Name of the default persona, the one every persona was contrasted against: the one
        organize recorded (root attribute organize_summary, persona_space.default_persona); in
        an atlas without that record, the catalogue's rule on personas/: the persona named
        DEFAULT_PERSONA_NAME of category DEFAULT_CATEGORY, else the first of that category.
        Reads the root attributes and two persona columns. Raises StoreError when the recorded
        persona is not among personas/ or when there is neither a record nor such a persona."""
        summary = json.loads(self.attrs.get(ORGANIZE_SUMMARY_ATTR) or "{}")
        recorded = summary.get("persona_space", {}).get("default_persona")
        names = [str(name) for name in self._persona_names()]
        if recorded is not None:
            if recorded not in names:
                raise StoreError(
                    f"{self.path}: its default persona {recorded!r} ({ORGANIZE_SUMMARY_ATTR}) "
                    "is not among its personas; the atlas is damaged: rebuild it"
                )
            return str(recorded)
        category = self._column("personas/category")
        defaults = [n for n, kind in zip(names, category, strict=True) if kind == DEFAULT_CATEGORY]
        if DEFAULT_PERSONA_NAME in defaults:
            return DEFAULT_PERSONA_NAME
        if not defaults:
            raise StoreError(
                f"{self.path}: records no default persona and has no persona of category "
                f"{DEFAULT_CATEGORY!r}; rebuild it with a default persona in the corpus"
            )
        return defaults[0]

    # -- features ---------------------------------------------------------------------------

    def _features(self) -> pd.DataFrame:
        if self._features_frame is None:
            frame = pd.DataFrame(self._table(FEATURE_COLUMNS))
            names = self._persona_names()
            index = self._column("features/top_persona_index")
            score = self._column("features/top_persona_score")
            frame.insert(
                frame.columns.get_loc("heldout_auroc"),
                "top_personas",
                [persona_list(names, i, s) for i, s in zip(index, score, strict=True)],
            )
            frame["n_examples"] = self._column("features/example_count")
            frame.index.name = "feature"
            self._features_frame = frame
        return self._features_frame

    def features(
        self,
        tag: str | None = None,
        cluster: int | Sequence[int] | None = None,
        persona: str | None = None,
    ) -> pd.DataFrame:
        """One row per feature (index: feature id), optionally only those with `tag` (a tag, or
        a tag family: "persona" matches every persona:<name>), in `cluster` (an id or ids), or
        with `persona` among their top personas. Top personas read 'pirate:0.93;villain:0.71'."""
        frame = self._features()
        mask = np.ones(len(frame), dtype=bool)
        if tag is not None:
            pattern = ";" + re.escape(tag) + "[;:]"
            mask &= (";" + frame["tags"] + ";").str.contains(pattern, regex=True).to_numpy()
        if cluster is not None:
            ids = [cluster] if isinstance(cluster, int | np.integer) else list(cluster)
            mask &= frame["cluster"].isin(ids).to_numpy()
        if persona is not None:
            selected = np.zeros(len(frame), dtype=bool)
            selected[self._features_of_persona(self._persona_row(persona))[0]] = True
            mask &= selected
        return frame[mask].copy()

    def puppeteer(self) -> pd.DataFrame:
        """Features tagged `puppeteer`: the slant post-training leaves on every persona."""
        return self.features(tag="puppeteer")

    def feature(self, index: int | np.integer) -> FeatureCard:
        """The whole card of feature `index`: its row, top personas, examples, decoder row."""
        i = self._check_feature(index)
        row: dict[str, Any] = {"feature": i}
        for spec in FEATURE_COLUMNS:
            row[spec.name] = self._value(spec, i)
        names = self._persona_names()
        top_index = self._column("features/top_persona_index")[i]
        top_score = self._column("features/top_persona_score")[i]
        keep = top_index >= 0
        row["top_personas"] = persona_list(names, top_index, top_score)
        start = int(self._column("features/example_start")[i])
        count = int(self._column("features/example_count")[i])
        examples: dict[str, Any] = {}
        for spec in EXAMPLE_COLUMNS[1:]:
            dataset = self._dataset(spec.path)
            if spec.dtype == "text":
                examples[spec.name] = dataset.asstr()[start : start + count]
            else:
                examples[spec.name] = dataset[start : start + count]
        examples["kind"] = np.asarray(EXAMPLE_KINDS, dtype=object)[examples["kind"]]
        return FeatureCard(
            index=i,
            row=row,
            top_personas=pd.DataFrame(
                {"persona": names[top_index[keep]], "score": top_score[keep]}
            ),
            examples=pd.DataFrame(examples),
            decoder=self._dataset("sae/W_dec")[i],
        )

    def nearest_features(self, index: int | np.integer, k: int = 10) -> pd.DataFrame:
        """The `k` features whose decoder directions have the largest cosine with feature
        `index`'s (itself excluded): feature, cosine, label, tags. Reads W_dec once, in blocks
        of NEAREST_BLOCK_ROWS rows (memory: one block)."""
        i = self._check_feature(index)
        decoder = self._dataset("sae/W_dec")
        target = decoder[i].astype(np.float64)
        target /= max(float(np.linalg.norm(target)), 1e-30)
        best_ids = np.empty(0, dtype=np.int64)
        best_cos = np.empty(0, dtype=np.float64)
        for start in range(0, self.d_sae, NEAREST_BLOCK_ROWS):
            block = decoder[start : start + NEAREST_BLOCK_ROWS].astype(np.float32)
            norms = np.linalg.norm(block, axis=1)
            cosine = (block @ target.astype(np.float32)) / np.where(norms > 0, norms, np.inf)
            ids = np.arange(start, start + len(block))
            if start <= i < start + len(block):
                cosine[i - start] = -np.inf
            best_ids = np.concatenate([best_ids, ids])
            best_cos = np.concatenate([best_cos, cosine])
            if len(best_ids) > k:
                keep = np.argpartition(-best_cos, k)[:k]
                best_ids, best_cos = best_ids[keep], best_cos[keep]
        order = np.argsort(-best_cos, kind="stable")
        ids = best_ids[order][: min(k, self.d_sae - 1)]
        return pd.DataFrame(
            {
                "feature": ids,
                "cosine": best_cos[order][: len(ids)],
                "label": self._column("features/label")[ids],
                "tags": self._column("features/tags")[ids],
            }
        )

    def search(self, text: str) -> pd.DataFrame:
        """Features whose label, top tokens or logit tokens contain `text` (case-insensitive)."""
        frame = self._features()
        mask = np.zeros(len(frame), dtype=bool)
        for column in ("label", "top_tokens", "pos_logits", "neg_logits"):
            mask |= frame[column].str.contains(text, case=False, regex=False).to_numpy()
        return frame[mask].copy()

    # -- clusters, dynamics, summary --------------------------------------------------------

    def clusters(self) -> pd.DataFrame:
        """One row per cluster: id, kind, size, label, dominant_personas, stability."""
        return pd.DataFrame(self._table(CLUSTER_COLUMNS))

    def dynamics_names(self) -> list[str]:
        """Names of the entries in dynamics/ (empty when the atlas has none)."""
        group = self.file.get("dynamics")
        return list(group) if isinstance(group, h5py.Group) else []

    def dynamics(self, name: str) -> np.ndarray | pd.DataFrame:
        """dynamics/<name>: an array, or a DataFrame when it was written as a table."""
        if name not in self.dynamics_names():
            available = ", ".join(self.dynamics_names()) or "none"
            raise StoreError(f"{self.path}: no dynamics/{name}; it has: {available}")
        entry = self.file[f"dynamics/{name}"]
        if isinstance(entry, h5py.Dataset):
            return read_all(entry)
        return pd.DataFrame({column: read_all(data) for column, data in entry.items()})

    def regions(self) -> pd.DataFrame:
        """The regions of persona space the dynamics stage found (dynamics/regions), one row per
        region in the order of the rows of dynamics/transition_matrix: id, name (the default
        persona's region is "assistant"), personas (list of member names), stationary (long-run
        share of turns), in_attractor (share of bootstrap resamples), and centroid
        [n_components] when the atlas has dynamics/region_centroids (NaN for a state that is no
        region of persona space: the repetition state, the last row where the dynamics wrote
        one, has no personas). Reads two small entries.
        Raises StoreError when the atlas has no dynamics/regions table."""
        if REGIONS_ENTRY not in self.dynamics_names():
            raise StoreError(
                f"{self.path}: has no dynamics/{REGIONS_ENTRY}; run `sae-atlas dynamics` on it"
            )
        table = self.dynamics(REGIONS_ENTRY)
        if not isinstance(table, pd.DataFrame) or "personas" not in table:
            raise StoreError(
                f"{self.path}: dynamics/{REGIONS_ENTRY} is not a table with a personas column; "
                "run `sae-atlas dynamics` on the atlas again"
            )
        table["personas"] = [members.split(";") if members else [] for members in table["personas"]]
        if REGION_CENTROIDS_ENTRY in self.dynamics_names():
            centroids = np.asarray(self.dynamics(REGION_CENTROIDS_ENTRY))
            missing = np.full(centroids.shape[1:], np.nan, dtype=centroids.dtype)
            table["centroid"] = [
                centroids[i] if i < len(centroids) else missing for i in range(len(table))
            ]
        return table

    # -- experiments ------------------------------------------------------------------------

    def experiments(self) -> list[str]:
        """Names of the experiments the atlas holds (experiments/<name>, and those an older atlas
        kept as prefixed dynamics/ entries), in the order of feature_store.schema.EXPERIMENTS."""
        stored = self.file.get(EXPERIMENTS_GROUP)
        names = set(stored) if isinstance(stored, h5py.Group) else set()
        dynamics = self.dynamics_names()
        for name, prefix in LEGACY_PREFIXES.items():
            if any(entry.startswith(prefix) for entry in dynamics):
                names.add(name)
        return [name for name in EXPERIMENTS if name in names]

    def experiment(self, name: str) -> Experiment:
        """Experiment `name`: description, provenance, `tables` (DataFrames or arrays, read when
        looked up) and `summary` (JSON, parsed on first use). Reads its attributes only. An older
        atlas's dynamics/<prefix>* entries (LEGACY_PREFIXES) serve when experiments/ lacks it.
        Raises StoreError naming the experiments it has when it has no `name`."""
        stored = self.file.get(EXPERIMENTS_GROUP)
        if isinstance(stored, h5py.Group) and isinstance(stored.get(name), h5py.Group):
            return stored_experiment(self, stored[name], name)
        dynamics = self.file.get("dynamics")
        if name in LEGACY_PREFIXES and isinstance(dynamics, h5py.Group):
            found = legacy_experiment(dynamics, name, LEGACY_PREFIXES[name])
            if found is not None:
                return found
        available = ", ".join(self.experiments()) or "none"
        raise StoreError(f"{self.path}: no experiment {name!r}; it has: {available}")

    def info(self) -> dict[str, Any]:
        """Summary: model, created, versions, sizes, features per tag family and per cluster
        kind, clusters per kind, dynamics entries, file size."""
        tags = self._column("features/tags")
        families: dict[str, int] = {}
        for tag_list in tags:
            for family in {t.split(":", 1)[0] for t in tag_list.split(";") if t}:
                families[family] = families.get(family, 0) + 1
        clusters = self.clusters()
        kind_of = dict(zip(clusters["id"], clusters["kind"], strict=True))
        feature_kinds = pd.Series(self._column("features/cluster")).map(kind_of).fillna("noise")
        return {
            "path": str(self.path),
            "model": self.attrs.get("model"),
            "created": self.attrs.get("created"),
            "schema_version": self.attrs.get("schema_version"),
            "sae_atlas_version": self.attrs.get("sae_atlas_version"),
            "d_model": self.d_model,
            "d_sae": self.d_sae,
            "n_personas": len(self._persona_names()),
            "n_components": int(self._dataset("persona_space/components").shape[0]),
            "n_clusters": len(clusters),
            "n_examples": int(self._dataset("features/examples/feature").shape[0]),
            "n_tagged": int(sum(1 for t in tags if t)),
            "features_per_tag": dict(sorted(families.items())),
            "clusters_per_kind": clusters["kind"].value_counts().sort_index().to_dict(),
            "features_per_cluster_kind": feature_kinds.value_counts().sort_index().to_dict(),
            "dynamics": self.dynamics_names(),
            "experiments": self.experiments(),
            "file_mb": round(self.path.stat().st_size / 2**20, 2),
        }
