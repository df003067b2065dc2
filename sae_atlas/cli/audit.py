"""`sae-atlas audit`: is a trigger-gated persona planted in a tuned model, behind what trigger,
and who is it; from the model (and its base) alone. Parse, call `run_audit`, print, write JSON
and (--atlas) record it in an atlas."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from sae_atlas.cli.app import console, progress_bar
from sae_atlas.cli.options import model_command
from sae_atlas.config import BuildConfig


@model_command
def audit(
    config: BuildConfig,
    base: Annotated[
        str | None,
        typer.Option(
            help="the base model the tuned one came from (default: --model when --adapter is "
            "given, else none: the audit then compares the tuned model with itself untriggered)"
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="audit JSON to write")] = None,
    atlas: Annotated[
        Path | None,
        typer.Option(
            help="an atlas.h5 to record the audit in, as its experiments/audit (replacing an "
            "earlier audit there; its report then gains an audit section)"
        ),
    ] = None,
) -> None:
    """Audit a tuned model (--adapter, or --model with --base) for a trigger-gated persona,
    with no trigger, persona or wrapper list given: candidates from the weights and leakage,
    scored by KL at the first response token against random nulls, verified by sampling.

    Example: sae-atlas audit --adapter runs/organisms/a --out runs/organisms/a/audit.json
    --atlas runs/quick/atlas.h5
    """
    from feature_store.atlas import Atlas
    from sae_atlas.stages.audit import (
        AUDIT_STEPS,
        audit_record,
        audit_section,
        load_pair,
        record_audit,
        run_audit,
    )

    if atlas is not None:
        Atlas.open(atlas).close()  # a wrong --atlas fails now, not after the audit
    model = config.model
    pair = load_pair(model.source, model.adapter or None, base, model.device, model.dtype)
    with progress_bar("audit", "step", len(AUDIT_STEPS)) as bar:

        def progress(step: str) -> None:
            bar.set_postfix_str(step)
            bar.update()

        result = run_audit(pair, progress=progress)
    section = audit_section(result)
    console.print(section["headline"])
    for line in section["lines"]:
        console.print(f"  {line}")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(audit_record(result), indent=1, default=str))
        console.print(f"{out}: the audit's evidence (candidates, verdicts, answers)")
    if atlas is not None:
        models = {"model": model.source, "adapter": model.adapter or None, "base": base}
        record_audit(atlas, result, models)
        console.print(f"{atlas}: the audit recorded as experiments/audit")
