"""What the layer sweep records in an atlas (experiments/layer_sweep): its tables built from
scripts/layer_sweep.py's result (sae_atlas.stages.label.sweep) and the description of every
table and column. pandas on small tables: milliseconds.

- `saes`: one row per SAE of the sweep (layer, width) with its quality;
- `shares`: per SAE and method the share of personas at held-out AUROC >= 0.9 with its Wilson
  interval over personas;
- `comparisons`: per SAE and feature method the paired comparison with the residual probe.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

QUALITY = ("explained_variance", "l0", "dead_fraction", "ce_recovered_zero", "train_tokens")
COMPARED = ("reference", "n_personas", "feature_share", "probe_share", "share_difference",
            "only_feature", "only_probe", "mcnemar_p", "mcnemar_q", "mean_auroc_difference",
            "at_least_equal")  # fmt: skip

SWEEP_DESCRIPTIONS: dict[str, str] = {
    "saes": "one row per SAE of the sweep (one per layer, same architecture and token budget; "
    "a wider one at one layer when asked): its held-out quality",
    "shares": "per SAE and method (best train feature under a pooling, sparse probe over a few "
    "train features, residual probe): the share of personas whose held-out AUROC against the "
    "default reaches 0.9, with its Wilson 95% interval over personas",
    "comparisons": "per SAE and feature method: the paired comparison with the residual probe "
    "of the same tokens and layer (share difference with a bootstrap 95% interval over "
    "personas, exact McNemar p, BH q over the sweep, mean AUROC difference with a bootstrap "
    "95% interval over held-out questions)",
}

SWEEP_COLUMNS: dict[str, str] = {
    "variant": "the SAE: layer and width",
    "layer": "residual stream layer (blocks.<layer>.hook_resid_post)",
    "width": "SAE features",
    "explained_variance": "held-out explained variance of the residual",
    "l0": "mean active features per token (held-out)",
    "dead_fraction": "share of features that never fire on held-out tokens",
    "ce_recovered_zero": "CE loss recovered by the reconstruction against zero ablation",
    "train_tokens": "tokens the SAE trained on",
    "method": "feature method (pooling_best_feature, pooling_sparseK) or probe",
    "share": "share of personas at held-out AUROC >= 0.9",
    "share_low": "lower end of the share's Wilson 95% interval over personas",
    "share_high": "upper end of the share's Wilson 95% interval over personas",
    "median_auroc": "median held-out AUROC over personas",
    "reference": "the residual probe compared with",
    "n_personas": "personas scored",
    "feature_share": "the feature method's share",
    "probe_share": "the probe's share",
    "share_difference": "feature_share - probe_share",
    "difference_low": "lower end of the share difference's bootstrap 95% interval over personas",
    "difference_high": "upper end of the share difference's bootstrap 95% interval",
    "only_feature": "personas at 0.9 by the feature method only",
    "only_probe": "personas at 0.9 by the probe only",
    "mcnemar_p": "exact two-sided McNemar p-value over personas",
    "mcnemar_q": "Benjamini-Hochberg q-value over the sweep's comparisons",
    "mean_auroc_difference": "mean over personas of feature minus probe held-out AUROC",
    "auroc_low": "lower end of its bootstrap 95% interval over held-out questions",
    "auroc_high": "upper end of its bootstrap 95% interval over held-out questions",
    "at_least_equal": "1 when the feature method's share is at least the probe's",
}


def sweep_tables(result: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """The layer_sweep experiment's tables from scripts/layer_sweep.py's result."""
    rows = result["rows"]
    saes = pd.DataFrame(
        [{k: row[k] for k in ("variant", "layer", "width", *QUALITY)} for row in rows]
    )
    shares = pd.DataFrame(
        [
            {
                "variant": row["variant"],
                "method": method,
                "share": found["share"],
                "share_low": found["ci"][0],
                "share_high": found["ci"][1],
                "median_auroc": found.get("median_auroc"),
            }
            for row in rows
            for method, found in row["shares"].items()
        ]
    )
    comparisons = pd.DataFrame(
        [
            {
                "variant": row["variant"],
                "method": method,
                **{k: c[k] for k in COMPARED},
                "difference_low": c["share_difference_ci"][0],
                "difference_high": c["share_difference_ci"][1],
                "auroc_low": c["mean_auroc_difference_ci"][0],
                "auroc_high": c["mean_auroc_difference_ci"][1],
            }
            for row in rows
            for method, c in row["comparisons"].items()
        ]
    )
    return {
        "saes": saes,
        "shares": shares.astype({"share": float, "share_low": float, "share_high": float}),
        "comparisons": comparisons.astype({"at_least_equal": int}),
    }


def sweep_summary(result: dict[str, Any]) -> dict[str, Any]:
    """The summary: the config, the held-out personas, the target's verdict and seconds."""
    return {key: result[key] for key in ("config", "heldout_personas", "target", "seconds")}
