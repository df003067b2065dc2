"""Old split against honest splits, side by side: two finished runs (e.g. runs/quick built with
the legacy split and runs/quick-honest with held-out system prompts and personas), each with
its labels as built, its labeling recomputed with this code (format, puppeteer confirmation and
null, trigger tags on responses), its best-feature and residual-probe shares on held-out data,
and, when given, the causal test's JSON (scripts/puppeteer_causal.py)
(sae_atlas.stages.label.honest). Prints a table and writes JSON; --reuse takes the figures of
an earlier JSON of this script and only attaches the causal JSONs given. With --atlas, also
records the comparison as that atlas's experiments/honest_splits (--atlas-out: in a copy of it;
no stage rerun touches it).

Cost: per run two SAE passes over its store and a few logistic fits per persona (a few minutes
on the quick atlas).

    python scripts/honest_splits.py --old runs/quick --new runs/quick-honest \
        --causal-old runs/bench/causal_old.json --causal-new runs/bench/causal_new.json \
        --atlas runs/quick-honest/atlas.h5
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer

from sae_atlas.cli.options import AtlasOption, AtlasOutOption
from sae_atlas.stages.dynamics.run_files import output_atlas
from sae_atlas.stages.label.honest import (
    comparison_rows,
    label_figures,
    probe_figures,
    recomputed_summary,
    run_inputs,
)
from sae_atlas.stages.label.records import (
    HONEST_COLUMNS,
    HONEST_DESCRIPTIONS,
    honest_summary,
    honest_tables,
)
from sae_atlas.stages.record import record_results

HEADLINE = (
    "probes.header_probe",
    "probes.response_probe",
    "probes.mean_best_feature",
    "probes.max_best_feature",
    "probes.first8_best_feature",
    "probes.header_best_feature",
    "built.share_personas_auroc_0.9",
    "built.decoder_accuracy",
    "built.kind_counts",
    "built.n_trigger_tags",
    "built.n_puppeteer",
    "recomputed.kind_counts",
    "recomputed.n_trigger_tags",
    "recomputed.n_format",
    "recomputed.puppeteer_candidates",
    "recomputed.n_puppeteer",
    "recomputed.puppeteer_null_p",
    "recomputed.share_personas_auroc_0.9",
)


def figures(run: Path, causal: Path | None) -> dict[str, Any]:
    inputs = run_inputs(run)
    shares, table = probe_figures(inputs)
    return {
        "run": str(run),
        "heldout_personas": list(inputs.heldout_personas),
        "built": label_figures(inputs.built_summary),
        "recomputed": label_figures(recomputed_summary(inputs)),
        "probes": shares,
        "per_persona": table.to_dict(),
        "causal": json.loads(causal.read_text()) if causal else None,
    }


def main(
    old: Annotated[Path, typer.Option(help="run built with the legacy split")],
    new: Annotated[Path, typer.Option(help="run built with honest splits")],
    causal_old: Annotated[Path | None, typer.Option(help="puppeteer_causal JSON, old")] = None,
    causal_new: Annotated[Path | None, typer.Option(help="puppeteer_causal JSON, new")] = None,
    out: Annotated[Path, typer.Option(help="JSON to write")] = Path("runs/bench/honest.json"),
    reuse: Annotated[
        Path | None, typer.Option(help="a JSON this script wrote: its figures, not recomputed")
    ] = None,
    atlas: AtlasOption = None,
    atlas_out: AtlasOutOption = None,
) -> None:
    started = time.monotonic()
    if reuse is None:
        both = {"old": figures(old, causal_old), "new": figures(new, causal_new)}
    else:
        both = json.loads(reuse.read_text())
        for side, causal in (("old", causal_old), ("new", causal_new)):
            both[side]["causal"] = json.loads(causal.read_text()) if causal else None
    rows = []
    for row in comparison_rows(
        *(
            {k: v for k, v in both[s].items() if k in ("built", "recomputed", "probes", "causal")}
            for s in ("old", "new")
        )
    ):
        if row["figure"] in HEADLINE:
            rows.append(row)
    pd.set_option("display.width", 250, "display.max_colwidth", 120)
    print(pd.DataFrame(rows).to_string(index=False))
    for side in ("old", "new"):
        causal = both[side]["causal"]
        if causal:
            print(f"causal test, {side} run: {len(causal['features'])} features")
            print(pd.DataFrame(causal["effects"]).round(4).to_string(index=False))
    out.parent.mkdir(parents=True, exist_ok=True)
    both["seconds"] = time.monotonic() - started
    out.write_text(json.dumps(both, indent=1, default=float))
    print(f"wrote {out} ({both['seconds']:.0f} s)")
    if atlas is not None:
        settings = {"old": str(old), "new": str(new), "reuse": str(reuse) if reuse else None,
                    "causal_old": str(causal_old) if causal_old else None,
                    "causal_new": str(causal_new) if causal_new else None}  # fmt: skip
        written = record_results(
            output_atlas(atlas, atlas_out), "honest_splits", honest_tables(both),
            honest_summary(both), descriptions=HONEST_DESCRIPTIONS, columns=HONEST_COLUMNS,
            script="scripts/honest_splits.py", config=settings, seconds=both["seconds"],
        )  # fmt: skip
        print(f"recorded as experiments/honest_splits in {written}")


if __name__ == "__main__":
    typer.run(main)
