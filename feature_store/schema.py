"""The HDF5 schema of every file sae-atlas writes, as one declarative table.

Writers create datasets from these specs, readers check them, and the docs and validation read
them too: a dataset's dtype, unit and description live here and nowhere else. Every group and
dataset written gets a `description` attribute (and `unit` where it has one), so any HDF5 client
(h5py, pandas, h5dump) can read a file without this project.

Row tables: datasets that grow together by whole commits share a `table` name (`tokens`,
`transcripts`); `/progress` holds the committed row count of each table, and readers never look
past it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SCHEMA_VERSION = 1

TRANSCRIPTS_KIND = "sae-atlas/transcripts"
ACTIVATIONS_KIND = "sae-atlas/activations"

ROLES: tuple[str, ...] = ("system", "user", "assistant", "template", "plain")
"""Per-token role codes: index in this tuple. `template` is chat-template text (the assistant
header and the like); `plain` is text outside any chat template (the plain-text control)."""
ROLE_CODE: dict[str, int] = {name: code for code, name in enumerate(ROLES)}

SPLITS: tuple[str, ...] = ("train", "heldout", "identity", "none")

NAME_BYTES = 64
"""Width of fixed-length UTF-8 string columns. Fixed width (not variable length) keeps the
columns appendable in SWMR mode, which is what makes a crashed file readable."""


def text_dtype(width: int = NAME_BYTES) -> np.dtype:
    import h5py

    return h5py.string_dtype("utf-8", width)


@dataclass(frozen=True)
class Column:
    """One dataset of a row table: `path` in the file, `width` 0 for one value per row."""

    path: str
    table: str
    dtype: str
    description: str
    unit: str = ""
    width: int = 0
    chunk_rows: int = 0
    """rows per HDF5 chunk; 0: the table's default (TABLE_CHUNK_ROWS)"""

    def numpy_dtype(self) -> np.dtype:
        return text_dtype() if self.dtype == "text" else np.dtype(self.dtype)

    @property
    def chunk(self) -> tuple[int, ...]:
        rows = self.chunk_rows or TABLE_CHUNK_ROWS[self.table]
        return (rows, self.width) if self.width else (rows,)


TABLE_CHUNK_ROWS = {"tokens": 16384, "transcripts": 1024}
"""Default rows per chunk: a chunk is allocated whole, so tables with few rows (transcripts) get
small chunks."""


TOKEN_COLUMNS: tuple[Column, ...] = (
    Column("tokens/token_id", "tokens", "int32", "token id in the model's vocabulary"),
    Column("tokens/doc", "tokens", "int32", "row of the transcript in transcripts/ it belongs to"),
    Column("tokens/pos", "tokens", "int32", "position of the token in its transcript", "tokens"),
    Column(
        "tokens/role",
        "tokens",
        "uint8",
        "speaker of the token: index into the `roles` attribute "
        "(system, user, assistant, template, plain)",
    ),
)

TRANSCRIPT_COLUMNS: tuple[Column, ...] = (
    Column("transcripts/persona", "transcripts", "text", "persona the system prompt asks for"),
    Column(
        "transcripts/condition",
        "transcripts",
        "text",
        "corpus condition: persona, default, no_system, user_control, plain_control, rollout, ...",
    ),
    Column(
        "transcripts/variant",
        "transcripts",
        "int16",
        "index of the persona's system-prompt variant (-1: none)",
    ),
    Column("transcripts/question_id", "transcripts", "text", "id of the question in the bank"),
    Column("transcripts/split", "transcripts", "text", "question split: train, heldout, identity"),
    Column("transcripts/turn", "transcripts", "int16", "number of assistant turns in transcript"),
    Column("transcripts/seed", "transcripts", "int64", "sampling seed of the transcript"),
    Column(
        "transcripts/source",
        "transcripts",
        "int64",
        "row of this transcript in the file it was read from (-1: none)",
    ),
    Column(
        "transcripts/token_start",
        "transcripts",
        "int64",
        "first row of the transcript in tokens/",
        "tokens",
    ),
    Column(
        "transcripts/token_count",
        "transcripts",
        "int32",
        "number of rows of the transcript in tokens/",
        "tokens",
    ),
)

ACTS_CHUNK_ROWS = 1024


def acts_column(hook: str, d_model: int) -> Column:
    """The activation dataset of one hook point: float16 [n_tokens, d_model]."""
    if "/" in hook:
        raise ValueError(f"hook name {hook!r} may not contain '/'")
    return Column(
        f"acts/{hook}",
        "tokens",
        "float16",
        f"residual-stream activation at hook point {hook}, one row per row of tokens/",
        "model units",
        width=d_model,
        chunk_rows=ACTS_CHUNK_ROWS,
    )


GROUP_DESCRIPTIONS: dict[str, str] = {
    "tokens": "one row per token, in transcript order; padding is never stored",
    "transcripts": "one row per transcript: provenance and where its tokens are",
    "acts": "activations per hook point, aligned row for row with tokens/",
}

PROGRESS_DESCRIPTION = (
    "committed rows per table (see attribute `tables`); rows past these counts belong to an "
    "unfinished commit and are never read"
)

ROOT_ATTRS: dict[str, str] = {
    "schema": "kind of file (sae-atlas/transcripts or sae-atlas/activations)",
    "schema_version": "version of feature_store/schema.py that wrote the file",
    "created": "UTC time the file was created (ISO 8601)",
    "sae_atlas_version": "version of sae-atlas that wrote the file",
    "model": "model id the tokens and activations come from",
    "config": "JSON of the configuration that produced the file",
    "complete": "true once the writer finished; false while it is written or after a crash",
    "roles": "names of the role codes in tokens/role",
}

RUNTIME_ATTR = "runtime"
"""Root attribute of every file a stage writes (transcripts, activations, labels, atlas; the SAE's
training card has the same key): JSON {stage: {"dtype", "device", "threads", "reason"}}, how each
stage that made the file ran: the dtype it computed in (resolved from "auto" by measuring the
machine, see sae_atlas.model.dtype), its device, torch's CPU threads, and why that dtype. The atlas
holds label's, organize's and, once written, dynamics'. A shard-joined activation store holds rank
0's."""

SHARDS_ATTR = "shards"
"""Root attribute of an activation store joined from shards (feature_store.activations): JSON list
of the shard stores (files beside it, in row order) a sharded harvest wrote. acts/, tokens/ and
transcripts/ are HDF5 virtual datasets over them, except tokens/doc and transcripts/token_start,
which are stored in the joined file, renumbered across the shards."""


# =================================================================================================
# atlas.h5 (kind sae-atlas/atlas): written once by feature_store.atlas.AtlasWriter, then read-only.
#
# Unlike the append-only stores above, the atlas is written whole into a temporary file and
# renamed into place, so its strings are variable length and its shapes are known when written.
# Each dataset is an `ArraySpec` whose `shape` names its axes; the writer binds the sizes (d_sae,
# n_personas, ...) on first sight and checks every later dataset against them.
# =================================================================================================

ATLAS_KIND = "sae-atlas/atlas"

EXAMPLE_KINDS: tuple[str, ...] = ("top", "quantile")
"""Kinds of feature examples: index in this tuple is the code in features/examples/kind."""

CLUSTER_KINDS: tuple[str, ...] = (
    "persona",
    "roleplay",
    "assistant",
    "puppeteer",
    "trigger",
    "other",
)

LIST_SEPARATOR = " | "
"""Separator of the token lists in features/top_tokens, pos_logits and neg_logits."""


@dataclass(frozen=True)
class ArraySpec:
    """One atlas dataset: `path` in the file, `shape` as axis names, dtype, description, unit.

    dtype is a numpy dtype name, "text" (variable-length UTF-8 string) or "float" (the floating
    dtype the writer is given: float16, float32 or float64).
    """

    path: str
    dtype: str
    shape: tuple[str, ...]
    description: str
    unit: str = ""

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


SAE_ARRAYS: tuple[ArraySpec, ...] = (
    ArraySpec(
        "sae/W_enc",
        "float",
        ("d_model", "d_sae"),
        "encoder weights: feature pre-activations are (x - b_dec) @ W_enc + b_enc",
    ),
    ArraySpec("sae/b_enc", "float", ("d_sae",), "encoder bias, one per feature"),
    ArraySpec(
        "sae/W_dec",
        "float",
        ("d_sae", "d_model"),
        "decoder weights: row i is feature i's direction in the residual stream",
    ),
    ArraySpec("sae/b_dec", "float", ("d_model",), "decoder bias", "model units"),
    ArraySpec(
        "sae/threshold",
        "float",
        ("d_sae",),
        "JumpReLU threshold: a feature fires only when its pre-activation exceeds it",
        "SAE activation",
    ),
)
"""The SAE's parameters; threshold is optional, other extra parameters are described by the
writer's caller."""

FEATURE_COLUMNS: tuple[ArraySpec, ...] = (
    ArraySpec(
        "features/density",
        "float32",
        ("d_sae",),
        "fraction of response tokens on which the feature fires (activation > 0)",
        "fraction",
    ),
    ArraySpec(
        "features/mean_act",
        "float32",
        ("d_sae",),
        "mean activation over the tokens where the feature fires",
        "SAE activation",
    ),
    ArraySpec(
        "features/max_act", "float32", ("d_sae",), "largest activation seen", "SAE activation"
    ),
    ArraySpec(
        "features/tags",
        "text",
        ("d_sae",),
        "tags separated by ';': persona:<name>, roleplay, assistant, puppeteer, trigger:<wrapper>"
        " (empty: untagged)",
    ),
    ArraySpec(
        "features/cluster",
        "int32",
        ("d_sae",),
        "id of the feature's cluster in clusters/id (-1: noise, in no cluster)",
    ),
    ArraySpec(
        "features/map_x", "float32", ("d_sae",), "x coordinate on the 2-D feature map", "map units"
    ),
    ArraySpec(
        "features/map_y", "float32", ("d_sae",), "y coordinate on the 2-D feature map", "map units"
    ),
    ArraySpec("features/label", "text", ("d_sae",), "short human-readable label of the feature"),
    ArraySpec(
        "features/top_tokens",
        "text",
        ("d_sae",),
        f"tokens the feature fires on most, most first, separated by {LIST_SEPARATOR!r}",
    ),
    ArraySpec(
        "features/pos_logits",
        "text",
        ("d_sae",),
        "output tokens whose logits the decoder direction raises most (through the unembedding), "
        f"separated by {LIST_SEPARATOR!r}",
    ),
    ArraySpec(
        "features/neg_logits",
        "text",
        ("d_sae",),
        f"output tokens whose logits the decoder direction lowers most, separated by "
        f"{LIST_SEPARATOR!r}",
    ),
    ArraySpec(
        "features/heldout_auroc",
        "float32",
        ("d_sae",),
        "AUROC of the feature for its best tag on held-out questions (NaN: untagged)",
        "AUROC",
    ),
)
"""One value per feature: the columns of the DataFrame given to AtlasWriter.write_features."""

FEATURE_PERSONA_ARRAYS: tuple[ArraySpec, ...] = (
    ArraySpec(
        "features/top_persona_index",
        "int32",
        ("d_sae", "top_k"),
        "rows of personas/ the feature is most selective for, best first (-1: none)",
    ),
    ArraySpec(
        "features/top_persona_score",
        "float32",
        ("d_sae", "top_k"),
        "selectivity of the feature for each persona in top_persona_index: contrast of the "
        "persona against the default persona, higher is more selective (NaN where the index is -1)",
        "score",
    ),
)

EXAMPLE_INDEX: tuple[ArraySpec, ...] = (
    ArraySpec(
        "features/example_start",
        "int64",
        ("d_sae",),
        "first row of the feature's examples in features/examples/",
    ),
    ArraySpec(
        "features/example_count",
        "int32",
        ("d_sae",),
        "number of rows of the feature's examples in features/examples/",
    ),
)

EXAMPLE_COLUMNS: tuple[ArraySpec, ...] = (
    ArraySpec(
        "features/examples/feature",
        "int32",
        ("n_examples",),
        "feature the example belongs to; rows are sorted by feature, kind, rank",
    ),
    ArraySpec(
        "features/examples/kind",
        "uint8",
        ("n_examples",),
        "kind of example: index into the `kinds` attribute (top, quantile)",
    ),
    ArraySpec(
        "features/examples/rank",
        "int32",
        ("n_examples",),
        "rank among the feature's examples of this kind (top: 0 is the strongest; quantile: "
        "ascending activation quantile)",
    ),
    ArraySpec(
        "features/examples/doc",
        "int64",
        ("n_examples",),
        "row of the transcript in transcripts/ of the activation store",
    ),
    ArraySpec(
        "features/examples/pos",
        "int32",
        ("n_examples",),
        "position of the token in its transcript",
        "tokens",
    ),
    ArraySpec(
        "features/examples/activation",
        "float32",
        ("n_examples",),
        "activation of the feature on the token",
        "SAE activation",
    ),
    ArraySpec(
        "features/examples/context",
        "text",
        ("n_examples",),
        "text around the token, as the label stage shows it",
    ),
)

PERSONA_COLUMNS: tuple[ArraySpec, ...] = (
    ArraySpec("personas/name", "text", ("n_personas",), "persona name (unique)"),
    ArraySpec("personas/category", "text", ("n_personas",), "category of the persona"),
    ArraySpec(
        "personas/prompts",
        "text",
        ("n_personas",),
        "JSON list of the persona's system-prompt variants",
    ),
    ArraySpec(
        "personas/axis_projection",
        "float32",
        ("n_personas",),
        "projection of the persona vector on persona_space/assistant_axis",
        "model units",
    ),
)
"""One value per persona: the columns of the DataFrame given to AtlasWriter.write_personas."""

PERSONA_ARRAYS: tuple[ArraySpec, ...] = (
    ArraySpec(
        "personas/vector",
        "float32",
        ("n_personas", "d_model"),
        "persona vector: mean residual activation over the persona's response tokens",
        "model units",
    ),
    ArraySpec(
        "personas/profile",
        "float32",
        ("n_personas", "d_sae"),
        "SAE profile: mean activation of each feature over the persona's response tokens",
        "SAE activation",
    ),
    ArraySpec(
        "personas/coords",
        "float32",
        ("n_personas", "n_components"),
        "coordinates in persona space: the centred persona vector projected on "
        "persona_space/components",
        "model units",
    ),
)

PERSONA_SPACE_ARRAYS: tuple[ArraySpec, ...] = (
    ArraySpec(
        "persona_space/assistant_axis",
        "float32",
        ("d_model",),
        "assistant axis: default persona vector minus the mean of the role persona vectors",
        "model units",
    ),
    ArraySpec(
        "persona_space/center",
        "float32",
        ("d_model",),
        "mean persona vector, subtracted before projecting on the components",
        "model units",
    ),
    ArraySpec(
        "persona_space/components",
        "float32",
        ("n_components", "d_model"),
        "principal components of the persona vectors (unit rows), most variance first",
    ),
    ArraySpec(
        "persona_space/explained_variance",
        "float32",
        ("n_components",),
        "fraction of the persona vectors' variance each component explains",
        "fraction",
    ),
)

CLUSTER_COLUMNS: tuple[ArraySpec, ...] = (
    ArraySpec("clusters/id", "int32", ("n_clusters",), "cluster id, as in features/cluster"),
    ArraySpec(
        "clusters/kind",
        "text",
        ("n_clusters",),
        "kind of cluster: " + ", ".join(CLUSTER_KINDS),
    ),
    ArraySpec("clusters/size", "int32", ("n_clusters",), "number of features in the cluster"),
    ArraySpec("clusters/label", "text", ("n_clusters",), "short human-readable label"),
    ArraySpec(
        "clusters/dominant_personas",
        "text",
        ("n_clusters",),
        "personas most of its features are tagged for, with the share of its features: "
        "'pirate:0.40;villain:0.25'",
    ),
    ArraySpec(
        "clusters/stability",
        "float32",
        ("n_clusters",),
        "fraction of resampled clusterings in which the cluster reappears",
        "fraction",
    ),
)

ATLAS_SPECS: tuple[ArraySpec, ...] = (
    SAE_ARRAYS
    + FEATURE_COLUMNS
    + FEATURE_PERSONA_ARRAYS
    + EXAMPLE_INDEX
    + EXAMPLE_COLUMNS
    + PERSONA_COLUMNS
    + PERSONA_ARRAYS
    + PERSONA_SPACE_ARRAYS
    + CLUSTER_COLUMNS
)

ATLAS_GROUP_DESCRIPTIONS: dict[str, str] = {
    "sae": "the sparse autoencoder the atlas describes: its parameters, and its config as JSON in "
    "the `config` attribute",
    "features": "one row per SAE feature: statistics, tags, cluster, map position, label, logit "
    "effects, top personas, held-out AUROC",
    "features/examples": "top and quantile example contexts of every feature, sorted by feature; "
    "features/example_start and example_count index them",
    "personas": "one row per persona: name, category, prompts, persona vector, SAE profile, "
    "coordinates in persona space",
    "persona_space": "the space personas are placed in: assistant axis and principal components "
    "of the persona vectors",
    "clusters": "one row per feature cluster: id, kind, size, label, dominant personas, stability",
    "dynamics": "where multi-turn conversations flow in persona space: trajectories, transition "
    "matrix, stationary distribution, attractors",
}

ATLAS_ROOT_ATTRS: dict[str, str] = {
    "schema": f"kind of file ({ATLAS_KIND})",
    "schema_version": ROOT_ATTRS["schema_version"],
    "created": ROOT_ATTRS["created"],
    "sae_atlas_version": ROOT_ATTRS["sae_atlas_version"],
    "model": "model id the SAE was trained on",
    "config": ROOT_ATTRS["config"],
    "complete": "always true: the atlas is written whole and renamed into place",
    "d_model": "width of the model's residual stream",
    "d_sae": "number of SAE features",
    "runtime": "JSON {stage: {dtype, device, threads, reason}}: how label, organize and dynamics "
    "ran",
}
