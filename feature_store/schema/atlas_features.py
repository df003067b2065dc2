"""Layout of the atlas's SAE and feature sections: sae/, features/ and features/examples/.

One `ArraySpec` per dataset, `shape` as axis names (d_model, d_sae, top_k, n_examples); the
atlas writer binds the sizes on first sight and checks every later dataset against them. The
other sections, and the list of every atlas dataset, are in feature_store.schema.atlas.
"""

from __future__ import annotations

from feature_store.schema.base import ArraySpec

EXAMPLE_KINDS: tuple[str, ...] = ("top", "quantile")
"""Kinds of feature examples: index in this tuple is the code in features/examples/kind."""

LIST_SEPARATOR = " | "
"""Separator of the token lists in features/top_tokens, pos_logits and neg_logits."""

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
