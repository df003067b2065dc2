"""The `sae-atlas` command: parse, call the stage, print. Errors: one line, exit code 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from tqdm import tqdm

from feature_store.errors import StoreError
from sae_atlas.errors import SaeAtlasError

if TYPE_CHECKING:
    from sae_atlas.doctor import Checkup

app = typer.Typer(
    help="Map a chat model's persona space with sparse autoencoders.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True, markup=False, highlight=False)  # printed text may hold [ ]
F = TypeVar("F", bound=Callable[..., Any])

ModelOption = Annotated[
    str,
    typer.Option(
        "--model", help="default (smollm2-135m-instruct), an HF id, a folder or a .gguf file"
    ),
]
AdapterOption = Annotated[
    Path | None, typer.Option("--adapter", help="a peft LoRA adapter folder merged into the model")
]
CatalogueOption = Annotated[
    Path | None,
    typer.Option(
        "--catalogue",
        help="a persona catalogue (YAML/JSON file or an Assistant Axis folder) instead of the "
        "shipped one",
    ),
]
DeviceOption = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1, mps")]
DtypeOption = Annotated[
    str,
    typer.Option(
        "--dtype",
        help="auto (bfloat16 where measured fast, else float32), float32, bfloat16, float16",
    ),
]
ProfileDeviceOption = Annotated[
    str | None,
    typer.Option("--device", help="cpu, cuda, cuda:1, mps (default: the profile's)"),
]
ProfileDtypeOption = Annotated[
    str | None,
    typer.Option(
        "--dtype",
        help="auto (bfloat16 where measured fast, else float32; see `sae-atlas doctor`), float32, "
        "bfloat16 or float16 for the model and sampling; SAE training in bfloat16 or float16 "
        "uses bfloat16 autocast (default: the profile's, auto unless it says otherwise)",
    ),
]


def user_errors(command: F) -> F:
    """Print SaeAtlasError / StoreError on one line and exit 2; Ctrl-C exits 130, resumable."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (SaeAtlasError, StoreError) as error:
            console.print(f"error: {error}", style="red", soft_wrap=True)
            sys.exit(2)
        except KeyboardInterrupt:
            console.print("interrupted: rerun the same command to resume")
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def token_bar(total: int, description: str) -> tqdm:
    return tqdm(total=total, desc=description, unit="tok", unit_scale=True, dynamic_ncols=True)


@app.command()
@user_errors
def corpus(
    out: Annotated[Path, typer.Option(help="transcripts.h5 to write (resumed if incomplete)")],
    profile: Annotated[str, typer.Option(help="quick, full, or a config .yaml file")] = "quick",
    catalogue: CatalogueOption = None,
    model: ModelOption = "smollm2-135m-instruct",
    device: ProfileDeviceOption = None,
    dtype: ProfileDtypeOption = None,
    adapter: AdapterOption = None,
) -> None:
    """Sample the contrastive persona corpus (the profile's `corpus` section) into a store.

    Example: sae-atlas corpus --profile quick --out runs/quick/transcripts.h5
    """
    import dataclasses

    from sae_atlas.config import load_config, on_device
    from sae_atlas.model import load_model
    from sae_atlas.personas import load_catalogue
    from sae_atlas.stages.corpus import build_corpus, corpus_jobs

    build_config = on_device(load_config(profile), device, dtype)
    config = build_config.corpus
    if catalogue is not None:
        config = dataclasses.replace(config, catalogue=str(catalogue))
    personas = load_catalogue(config.catalogue or None)
    handle = load_model(model, build_config.model.device, build_config.model.dtype, adapter=adapter)
    total = len(corpus_jobs(personas, config))
    with tqdm(total=total, desc="corpus", unit="job", dynamic_ncols=True) as bar:
        result = build_corpus(handle, personas, config, out, progress=bar.update)
    if result.skipped:
        console.print(f"{out}: already complete for this config; skipped")
    else:
        console.print(
            f"{out}: {result.n_transcripts:,} transcripts from {result.n_jobs:,} prompts, "
            f"{result.sampled_tokens_per_second:,.0f} new tokens/s"
        )


@app.command()
@user_errors
def harvest(
    transcripts: Annotated[Path, typer.Option(help="transcripts.h5 written by `sae-atlas corpus`")],
    out: Annotated[Path, typer.Option(help="activations.h5 to write (resumed if incomplete)")],
    hook: Annotated[
        list[str], typer.Option(help="hook point, repeatable, e.g. blocks.15.hook_resid_post")
    ] = [  # noqa: B006
        "blocks.15.hook_resid_post"
    ],
    model: ModelOption = "smollm2-135m-instruct",
    adapter: AdapterOption = None,
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "auto",
    batch_tokens: Annotated[int, typer.Option(help="padded tokens per forward batch")] = 8192,
    max_len: Annotated[int, typer.Option(help="truncate transcripts to this many tokens")] = 1024,
) -> None:
    """Record residual activations of a transcript store at one or more hook points.

    Under `torchrun --nproc-per-node N` (or `accelerate launch`) each rank harvests its share into
    its own shard file beside --out, and rank 0 joins them into --out.

    Example: sae-atlas harvest --transcripts runs/quick/transcripts.h5
    --out runs/quick/activations.h5 --hook blocks.15.hook_resid_post
    """
    from feature_store.transcripts import TranscriptStore
    from sae_atlas.config import HarvestConfig
    from sae_atlas.model import load_model
    from sae_atlas.stages.harvest import distributed, length_sorted, shard_share
    from sae_atlas.stages.harvest import harvest as run_harvest

    store = TranscriptStore(transcripts)
    config = HarvestConfig(hooks=tuple(hook), batch_tokens=batch_tokens, max_len=max_len)
    with distributed(device) as (shard, rank_device):
        handle = load_model(model, device=rank_device, dtype=dtype, adapter=adapter)
        if store.model != handle.model_id:
            raise SaeAtlasError(
                f"{transcripts}: was written with model {store.model!r}, not "
                f"{handle.model_id!r}; pass the --model (and --adapter) it was written with"
            )
        share = shard_share(length_sorted(store, max_len), shard)
        where = "" if shard is None else f" rank {shard.rank}/{shard.world_size}"
        with token_bar(share.n_tokens, "harvest" + where) as bar:
            result = run_harvest(handle, store, out, config, progress=bar.update, shard=shard)
    if shard is not None and shard.rank != 0:
        return
    if result.skipped:
        console.print(f"{out}: already complete for this input and config; skipped")
    else:
        console.print(
            f"{out}: {result.n_tokens:,} tokens of {result.n_transcripts:,} "
            f"transcripts, {result.tokens_per_second:,.0f} tokens/s"
        )


@app.command()
@user_errors
def train(
    store: Annotated[Path, typer.Option(help="activations.h5 written by `sae-atlas harvest`")],
    out: Annotated[Path, typer.Option(help="folder for one SAE per hook (sae-lens format)")],
    profile: Annotated[str, typer.Option(help="quick, full, or a config .yaml file")] = "quick",
    hook: Annotated[
        list[str] | None, typer.Option(help="hook point, repeatable (default: the profile's)")
    ] = None,
    model: ModelOption = "smollm2-135m-instruct",
    device: ProfileDeviceOption = None,
    dtype: ProfileDtypeOption = None,
    adapter: AdapterOption = None,
    evaluate: Annotated[bool, typer.Option(help="evaluate CE/KL with the model")] = True,
) -> None:
    """Train SAEs on the activation store (the profile's `train` section) and evaluate them.

    Example: sae-atlas train --store runs/quick/activations.h5 --out runs/quick/sae
    """
    import dataclasses

    from sae_atlas.config import load_config, on_device
    from sae_atlas.model import load_model
    from sae_atlas.stages.train import train_saes

    build_config = on_device(load_config(profile), device, dtype)
    config = build_config.train
    if hook:
        config = dataclasses.replace(config, hooks=tuple(hook))
    model_config = build_config.model
    handle = (
        load_model(model, model_config.device, model_config.dtype, adapter=adapter)
        if evaluate
        else None
    )
    with tqdm(desc="train", unit="step", dynamic_ncols=True) as bar:
        results = train_saes(store, out, config, handle=handle, progress=lambda _: bar.update())
    for result in results:
        state = "skipped (complete)" if result.skipped else f"{result.n_steps} steps"
        console.print(f"{result.path}: {state}, {result.n_tokens:,} tokens, {result.seconds:.0f} s")


@app.command()
@user_errors
def label(
    store: Annotated[Path, typer.Option(help="activations.h5 written by `sae-atlas harvest`")],
    sae: Annotated[Path, typer.Option(help="an SAE folder in sae-lens format")],
    corpus: Annotated[Path, typer.Option(help="transcripts.h5 (for the persona catalogue)")],
    out: Annotated[Path, typer.Option(help="labels.h5 to write")],
    profile: Annotated[str, typer.Option(help="quick, full, or a config .yaml file")] = "quick",
    model: ModelOption = "smollm2-135m-instruct",
    device: ProfileDeviceOption = None,
    dtype: ProfileDtypeOption = None,
    adapter: AdapterOption = None,
) -> None:
    """Tag SAE features by persona contrasts (train questions, confirmed held-out) and card them.

    Example: sae-atlas label --store runs/quick/activations.h5
    --sae runs/quick/sae/blocks.15.hook_resid_post --corpus runs/quick/transcripts.h5
    --out runs/quick/labels.h5
    """
    from sae_atlas.config import load_config, on_device
    from sae_atlas.model import load_model
    from sae_atlas.stages.label import catalogue_from_corpus, label_stage

    config = on_device(load_config(profile), device, dtype)
    handle = load_model(model, config.model.device, config.model.dtype, adapter=adapter)
    catalogue = catalogue_from_corpus(corpus)
    with token_bar(0, "label") as bar:
        result = label_stage(
            store,
            sae,
            out,
            config.label,
            handle=handle,
            catalogue=catalogue,
            progress=bar.update,
        )
    state = "skipped (complete)" if result.skipped else f"{result.seconds:.0f} s"
    console.print(f"{result.path}: {result.n_features:,} features labeled, {state}")


@app.command()
@user_errors
def organize(
    labels: Annotated[Path, typer.Option(help="labels.h5 written by `sae-atlas label`")],
    sae: Annotated[Path, typer.Option(help="the SAE folder the labels were made with")],
    out: Annotated[Path, typer.Option(help="atlas.h5 to write")],
    profile: Annotated[str, typer.Option(help="quick, full, or a config .yaml file")] = "quick",
) -> None:
    """Cluster the features (UMAP + HDBSCAN), map persona space, write the atlas.

    Example: sae-atlas organize --labels runs/quick/labels.h5
    --sae runs/quick/sae/blocks.15.hook_resid_post --out runs/quick/atlas.h5
    """
    from feature_store.labels import load_labels
    from sae_atlas.config import load_config
    from sae_atlas.sae import load_sae
    from sae_atlas.stages.organize import organize as run_organize

    with console.status("organize") as status:
        result = run_organize(
            load_labels(labels),
            load_sae(str(sae)),
            out,
            load_config(profile).organize,
            progress=lambda step: status.update(f"organize: {step}"),
        )
    if result.skipped:
        console.print(f"{out}: already complete for this config; skipped")
        return
    space = result.summary.get("persona_space", {})
    console.print(
        f"{out}: {result.seconds:.0f} s; clusters by kind "
        f"{result.summary.get('clusters_per_kind')}; PC1 explains "
        f"{space.get('explained_variance_pc1')}, cos(axis, PC1) "
        f"{space.get('axis_pc1_cosine')}",
        highlight=False,
    )


@app.command()
@user_errors
def dynamics(
    run: Annotated[Path, typer.Option(help="run folder with atlas.h5, transcripts.h5 and sae/")],
    profile: Annotated[str, typer.Option(help="quick, full, or a config .yaml file")] = "quick",
    overwrite: Annotated[
        bool, typer.Option(help="replace dynamics made with another config")
    ] = False,
    device: ProfileDeviceOption = None,
    dtype: ProfileDtypeOption = None,
    adapter: AdapterOption = None,
) -> None:
    """Rollouts, attractors, drift, steering against random controls, puppeteer ablation and a
    trigger scan; results go into the atlas's dynamics/ group.

    Example: sae-atlas dynamics --run runs/quick
    """
    import json

    from sae_atlas.config import load_config, on_device
    from sae_atlas.model import load_model
    from sae_atlas.stages.dynamics import DYNAMICS_STEPS, run_dynamics

    config = on_device(load_config(profile), device, dtype)
    handle = load_model(
        config.model.source,
        config.model.device,
        config.model.dtype,
        adapter=adapter or config.model.adapter or None,
    )
    with tqdm(total=len(DYNAMICS_STEPS), desc="dynamics", unit="step") as bar:

        def progress(step: str) -> None:
            bar.set_postfix_str(step)
            bar.update()

        result = run_dynamics(handle, run, config.dynamics, progress=progress, overwrite=overwrite)
    if result.skipped:
        console.print(f"{result.path}: dynamics already there for this config; skipped")
    console.print(json.dumps(result.summary, indent=1), highlight=False)


@app.command()
@user_errors
def report(
    atlas: Annotated[Path, typer.Argument(help="an atlas.h5")],
    out: Annotated[
        Path | None, typer.Option(help="report folder (default: next to the atlas)")
    ] = None,
    max_members: Annotated[int, typer.Option(help="members listed per cluster")] = 50,
) -> None:
    """Export a self-contained HTML report (and Markdown) of an atlas.

    Example: sae-atlas report runs/quick/atlas.h5 --out runs/quick/report
    """
    from sae_atlas.stages.report import write_report

    result = write_report(atlas, out or atlas.parent / "report", max_members=max_members)
    console.print(
        f"{result.html}\n{result.markdown}\n{len(result.figures)} figures, {result.seconds:.1f} s"
    )


@app.command()
@user_errors
def info(
    path: Annotated[Path, typer.Argument(help="a transcripts.h5, activations.h5, labels or atlas")],
) -> None:
    """Describe a sae-atlas file: kind, model, state, how its stages ran, rows, datasets.

    Example: sae-atlas info runs/quick/activations.h5
    """
    import json

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


QUERIES = ("features", "feature", "persona", "clusters", "puppeteer", "nearest", "search", "info")


@app.command()
@user_errors
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
    import pandas as pd

    from feature_store.atlas import Atlas

    if what not in QUERIES:
        raise SaeAtlasError(f"unknown query {what!r}; use one of {', '.join(QUERIES)}")
    needs_arg = {
        "feature": "a feature index",
        "nearest": "a feature index",
        "persona": "a persona name",
        "search": "a text",
    }
    if what in needs_arg and arg is None:
        raise SaeAtlasError(f"query {what} needs {needs_arg[what]}")

    def index() -> int:
        if arg is None or not arg.lstrip("-").isdigit():
            raise SaeAtlasError(f"query {what} needs a feature index, got {arg!r}")
        return int(arg)

    def show(frame: pd.DataFrame) -> None:
        with pd.option_context("display.width", 200, "display.max_colwidth", 60):
            console.print(frame.head(limit).to_string(), highlight=False)

    with Atlas.open(atlas) as opened:
        if what == "features":
            show(opened.features(tag=tag, cluster=cluster, persona=persona))
        elif what == "feature":
            card = opened.feature(index())
            console.print(f"feature {card.index}: {card.label}", highlight=False)
            show(pd.Series(card.row).to_frame("value"))
            show(card.top_personas)
            show(card.examples)
        elif what == "persona":
            pcard = opened.persona(str(arg))
            console.print(
                f"{pcard.name} ({pcard.category}): assistant-axis projection "
                f"{pcard.axis_projection:.3f}, coords {pcard.coords[:3].round(3)}"
            )
            show(pcard.features)
            show(pcard.nearest)
        elif what == "clusters":
            show(opened.clusters())
        elif what == "puppeteer":
            show(opened.puppeteer())
        elif what == "nearest":
            show(opened.nearest_features(index(), k))
        elif what == "search":
            show(opened.search(str(arg)))
        else:
            for key, value in opened.info().items():
                console.print(f"{key}: {value}", highlight=False)


@app.command()
@user_errors
def build(
    out: Annotated[Path, typer.Option(help="run folder, e.g. runs/quick")],
    profile: Annotated[str, typer.Option(help="quick, full, or a config .yaml file")] = "quick",
    model: Annotated[str | None, typer.Option(help="override the profile's model source")] = None,
    catalogue: CatalogueOption = None,
    device: ProfileDeviceOption = None,
    dtype: ProfileDtypeOption = None,
    adapter: AdapterOption = None,
) -> None:
    """Run every stage into one run folder; rerun to resume, finished stages are skipped.

    Example: sae-atlas build --profile quick --out runs/quick
    """
    import dataclasses

    from rich.table import Table

    from sae_atlas.build import build as run_build
    from sae_atlas.config import load_config, on_device

    config = on_device(load_config(profile), device, dtype)
    overrides = {
        k: v
        for k, v in {"source": model, "adapter": None if adapter is None else str(adapter)}.items()
        if v is not None
    }
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, **overrides))
    if catalogue is not None:
        corpus_config = dataclasses.replace(config.corpus, catalogue=str(catalogue))
        config = dataclasses.replace(config, corpus=corpus_config)
    bars: list[tqdm] = []

    def progress(stage: str, total: int, unit: str) -> Callable[[int], None]:
        bar = tqdm(total=total, desc=stage, unit=unit, unit_scale=True, dynamic_ncols=True)
        bars.append(bar)
        return bar.update

    try:
        records = run_build(config, out, progress=progress)
    finally:
        for bar in bars:
            bar.close()
    table = Table(title=f"sae-atlas build: {out}")
    for column in ("stage", "output", "seconds", "MB", "skipped"):
        table.add_column(column)
    for r in records:
        table.add_row(
            r.stage,
            r.output,
            f"{r.seconds:.1f}",
            f"{r.bytes / 1e6:.1f}",
            "yes" if r.skipped else "",
        )
    console.print(table)
    console.print(f"total {sum(r.seconds for r in records):.1f} s; summary in {out}/build.json")
    console.print(f"atlas:  {out / 'atlas.h5'}\nreport: {out / 'report' / 'index.html'}")


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


@app.command()
@user_errors
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
