"""`sae-atlas build`: every stage into one run folder, then a table of what each stage did."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from tqdm import tqdm

from sae_atlas.cli.app import console, progress_bar
from sae_atlas.cli.options import corpus_command
from sae_atlas.config import BuildConfig
from sae_atlas.stages.base import CountProgress


@corpus_command
def build(
    config: BuildConfig,
    out: Annotated[Path, typer.Option(help="run folder, e.g. runs/quick")],
) -> None:
    """Run every stage into one run folder; rerun to resume, finished stages are skipped.

    Example: sae-atlas build --profile quick --out runs/quick
    """
    from rich.table import Table

    from sae_atlas.build import build as run_build

    bars: list[tqdm] = []

    def stage_bar(stage: str, total: int, unit: str) -> CountProgress:
        bars.append(progress_bar(stage, unit, total))
        return bars[-1].update

    try:
        records = run_build(config, out, progress=stage_bar)
    finally:
        for bar in bars:
            bar.close()
    table = Table(title=f"sae-atlas build: {out}")
    for column in ("stage", "output", "seconds", "MB", "skipped"):
        table.add_column(column)
    for r in records:
        skipped = "yes" if r.skipped else ""
        table.add_row(r.stage, r.output, f"{r.seconds:.1f}", f"{r.bytes / 1e6:.1f}", skipped)
    console.print(table)
    console.print(f"total {sum(r.seconds for r in records):.1f} s; summary in {out}/build.json")
    console.print(f"atlas:  {out / 'atlas.h5'}\nreport: {out / 'report' / 'index.html'}")
