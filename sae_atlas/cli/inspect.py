"""`sae-atlas info`, `query` and `doctor`: describe a file, query an atlas, check the machine.
None of them runs the model or writes anything."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sae_atlas.cli.app import command, console
from sae_atlas.errors import SaeAtlasError

if TYPE_CHECKING:
    import pandas as pd

    from feature_store.atlas import Atlas
    from sae_atlas.doctor import Checkup

QUERIES = ("features", "feature", "persona", "clusters", "puppeteer", "nearest", "search", "info")
NEEDS_ARG = {
    "feature": "a feature index",
    "nearest": "a feature index",
    "persona": "a persona name",
    "search": "a text",
}
"""The queries that need an argument, and what it is."""


@command
def info(
    path: Annotated[Path, typer.Argument(help="a transcripts.h5, activations.h5, labels or atlas")],
) -> None:
    """Describe a sae-atlas file: kind, model, state, how its stages ran, rows, datasets.

    Example: sae-atlas info runs/quick/activations.h5
    """
    from rich.table import Table

    from feature_store.appendable import summary
    from feature_store.schema import RUNTIME_ATTR

    described = summary(path)
    attrs = described["attrs"]
    state = "complete" if attrs.get("complete") else "incomplete (rerun its stage to resume)"
    console.print(
        f"{path}: {attrs.get('schema')} v{attrs.get('schema_version')}, model "
        f"{attrs.get('model')}, {state}, created {attrs.get('created')}"
    )
    for stage, run in json.loads(attrs.get(RUNTIME_ATTR) or "{}").items():
        console.print(
            f"  {stage}: {run['dtype'] or 'no model'} on {run['device']}, "
            f"{run['threads']} threads ({run['reason']})"
        )
    for table_name, n in described["rows"].items():
        console.print(f"  {table_name}: {n:,} rows")
    table = Table()
    for column in ("dataset", "shape", "dtype", "description"):
        table.add_column(column)
    for name, dataset in described["datasets"].items():
        table.add_row(name, str(tuple(dataset["shape"])), dataset["dtype"], dataset["description"])
    console.print(table)


@command
def query(
    atlas: Annotated[Path, typer.Argument(help="an atlas.h5")],
    what: Annotated[str, typer.Argument(help=" | ".join(QUERIES))],
    arg: Annotated[str | None, typer.Argument(help="feature index, persona name or text")] = None,
    tag: Annotated[str | None, typer.Option(help="features: keep this tag (family)")] = None,
    cluster: Annotated[int | None, typer.Option(help="features: keep this cluster")] = None,
    persona: Annotated[str | None, typer.Option(help="features: keep this persona")] = None,
    k: Annotated[int, typer.Option(help="nearest: how many")] = 10,
    limit: Annotated[int, typer.Option(help="rows to print")] = 30,
) -> None:
    """Query an atlas: features, one feature's card, a persona, clusters, puppeteer features.

    Example: sae-atlas query runs/quick/atlas.h5 features --tag puppeteer

    Example: sae-atlas query runs/quick/atlas.h5 persona pirate
    """
    from feature_store.atlas import Atlas

    if what not in QUERIES:
        raise SaeAtlasError(f"unknown query {what!r}; use one of {', '.join(QUERIES)}")
    if what in NEEDS_ARG and arg is None:
        raise SaeAtlasError(f"query {what} needs {NEEDS_ARG[what]}")
    with Atlas.open(atlas) as opened:
        if what == "features":
            show(opened.features(tag=tag, cluster=cluster, persona=persona), limit)
        elif what in ("feature", "nearest"):
            show_feature(opened, what, arg, k, limit)
        elif what in ("persona", "search"):
            show_persona_or_search(opened, what, str(arg), limit)
        elif what == "clusters":
            show(opened.clusters(), limit)
        elif what == "puppeteer":
            show(opened.puppeteer(), limit)
        else:
            for key, value in opened.info().items():
                console.print(f"{key}: {value}", highlight=False)


def show(frame: pd.DataFrame | pd.Series, limit: int) -> None:
    """Print the first `limit` rows of a table, wide."""
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        console.print(frame.head(limit).to_string(), highlight=False)


def show_feature(opened: Atlas, what: str, arg: str | None, k: int, limit: int) -> None:
    """Print one feature's card (`feature`) or its k nearest features (`nearest`)."""
    import pandas as pd

    if arg is None or not arg.lstrip("-").isdigit():
        raise SaeAtlasError(f"query {what} needs a feature index, got {arg!r}")
    if what == "nearest":
        show(opened.nearest_features(int(arg), k), limit)
        return
    card = opened.feature(int(arg))
    console.print(f"feature {card.index}: {card.label}", highlight=False)
    show(pd.Series(card.row).to_frame("value"), limit)
    show(card.top_personas, limit)
    show(card.examples, limit)


def show_persona_or_search(opened: Atlas, what: str, arg: str, limit: int) -> None:
    """Print a persona's card (`persona`) or the features whose text matches (`search`)."""
    if what == "search":
        show(opened.search(arg), limit)
        return
    card = opened.persona(arg)
    console.print(
        f"{card.name} ({card.category}): assistant-axis projection "
        f"{card.axis_projection:.3f}, coords {card.coords[:3].round(3)}"
    )
    show(card.features, limit)
    show(card.nearest, limit)


def checkup_rows(report: Checkup) -> list[tuple[str, str]]:
    """`sae-atlas doctor`'s machine lines (name, value) for a sae_atlas.doctor.Checkup."""
    gib = 2**30
    features = " ".join(f"{name}{'+' if on else '-'}" for name, on in report.features.items())
    per_thread, now = report.rates_per_thread, report.rates_now
    available, total = report.memory_available_bytes, report.memory_total_bytes
    memory = (
        "unknown"
        if available is None or total is None
        else (f"{available / gib:.1f} GiB available of {total / gib:.1f}")
    )
    return [
        ("devices", ", ".join(report.devices)),
        ("cpu", f"{report.cpu.model}; {features}"),
        ("torch", f"{report.torch_version}, {report.threads} threads, {report.cpu_capability}"),
        ("env", ", ".join(f"{k}={v}" for k, v in report.env.items()) or "none set"),
        (
            "matmul",
            f"{'x'.join(map(str, now.shape))}: float32 {per_thread.float32:.0f}, bfloat16 "
            f"{per_thread.bfloat16:.3g} GFLOP/s per thread; with {report.threads} threads now "
            f"{now.float32:.0f} and {now.bfloat16:.3g}",
        ),
        ("memory", memory),
        ("disk", f"{report.disk_free_bytes / gib:.1f} GiB free at {report.disk_path}"),
        ("dtype auto", f"{report.auto.name} on {report.auto.device}; {report.auto.reason}"),
    ]


@command
def doctor(
    out: Annotated[
        Path, typer.Option(help="where runs will be written (for its free disk)")
    ] = Path("runs"),
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1, mps")] = "cpu",
    profile: Annotated[str, typer.Option(help="the build whose stage times it predicts")] = "quick",
) -> None:
    """Check this machine: devices, CPU features, threads, matmul GFLOP/s in float32 and bfloat16,
    memory, disk, the dtype `auto` picks, and the predicted time of each stage of a build.

    Example: sae-atlas doctor
    """
    from rich.table import Table

    from sae_atlas.doctor import checkup

    with console.status("measuring"):
        report = checkup(out, device, profile)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(justify="right", style="bold")
    grid.add_column()
    for name, value in checkup_rows(report):
        grid.add_row(name, value)
    console.print(grid)
    if not report.stages:
        console.print(f"no stage times: they are calibrated on CPUs, not {device}")
        return
    table = Table(title=f"predicted {profile} build on {report.threads} idle threads")
    for column in ("stage", "dtype", "GFLOP", "efficiency", "seconds"):
        table.add_column(column, justify="left" if column in ("stage", "dtype") else "right")
    for stage in report.stages:
        table.add_row(
            stage.stage,
            stage.dtype,
            f"{stage.gflop:,.0f}",
            f"{stage.efficiency:.3g}",
            f"{stage.seconds:,.0f}",
        )
    table.add_row("total", "", "", "", f"{report.total_seconds:,.0f}")
    console.print(table)
