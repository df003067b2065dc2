"""One `sae-atlas` command per stage: parse, call the stage, print what it did.

The commands that run the model (corpus, harvest, train, label, dynamics) take --profile,
--model, --adapter, --device and --dtype (`sae_atlas.cli.options.model_command`: they
receive the profile's config with those applied). organize takes --profile
only and report none of them: neither runs the model (organize clusters stored features, report
renders an atlas), so a device or dtype would change nothing, and report has no profile section.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from sae_atlas.cli.app import command, console, print_outcome, progress_bar
from sae_atlas.cli.options import (
    HookOption,
    ProfileOption,
    corpus_command,
    model_command,
    model_handle,
    overridden,
    run_config,
)
from sae_atlas.config import BuildConfig

ActivationsOption = Annotated[
    Path, typer.Option(help="activations.h5 written by `sae-atlas harvest`")
]
"""--store of the commands that read the activation store (train, label)."""


@corpus_command
def corpus(
    config: BuildConfig,
    out: Annotated[Path, typer.Option(help="transcripts.h5 to write (resumed if incomplete)")],
) -> None:
    """Sample the contrastive persona corpus (the profile's `corpus` section) into a store.

    Example: sae-atlas corpus --profile quick --out runs/quick/transcripts.h5
    """
    from sae_atlas.personas import load_catalogue
    from sae_atlas.stages.corpus import build_corpus, corpus_jobs

    personas = load_catalogue(config.corpus.catalogue or None)
    handle = model_handle(config.model)
    total = len(corpus_jobs(personas, config.corpus))
    with progress_bar("corpus", "job", total) as bar:
        result = build_corpus(personas, out, config.corpus, handle=handle, progress=bar.update)
    made = f"{result.n_transcripts:,} transcripts from {result.n_jobs:,} prompts"
    print_outcome(out, result.skipped, f"{made}, {result.sampled_tokens_per_second:,.0f} new tok/s")


@model_command
def harvest(
    config: BuildConfig,
    transcripts: Annotated[Path, typer.Option(help="transcripts.h5 written by `sae-atlas corpus`")],
    out: Annotated[Path, typer.Option(help="activations.h5 to write (resumed if incomplete)")],
    hook: HookOption = None,
    batch_tokens: Annotated[
        int | None, typer.Option(help="padded tokens per forward batch (default: the profile's)")
    ] = None,
    max_len: Annotated[
        int | None,
        typer.Option(help="truncate transcripts to this many tokens (default: the profile's)"),
    ] = None,
) -> None:
    """Record residual activations of a transcript store (the profile's `harvest` section).

    Under `torchrun --nproc-per-node N` (or `accelerate launch`) each rank harvests its share into
    its own shard file beside --out, and rank 0 joins them into --out.

    Example: sae-atlas harvest --transcripts runs/quick/transcripts.h5
    --out runs/quick/activations.h5 --hook blocks.15.hook_resid_post
    """
    from feature_store.transcripts import TranscriptStore
    from sae_atlas.stages.harvest import distributed, length_sorted, shard_share
    from sae_atlas.stages.harvest import harvest as run_harvest

    hooks = tuple(hook) if hook else None
    harvest_config = overridden(
        config.harvest, hooks=hooks, batch_tokens=batch_tokens, max_len=max_len
    )
    store = TranscriptStore(transcripts)
    with distributed(config.model.device) as (shard, rank_device):
        handle = model_handle(config.model, rank_device)
        share = shard_share(length_sorted(store, harvest_config.max_len), shard)
        where = "" if shard is None else f" rank {shard.rank}/{shard.world_size}"
        with progress_bar("harvest" + where, "tok", share.n_tokens) as bar:
            result = run_harvest(
                store, out, harvest_config, handle=handle, progress=bar.update, shard=shard
            )
    if shard is not None and shard.rank != 0:
        return
    made = f"{result.n_tokens:,} tokens of {result.n_transcripts:,} transcripts"
    print_outcome(out, result.skipped, f"{made}, {result.tokens_per_second:,.0f} tokens/s")


@model_command
def train(
    config: BuildConfig,
    store: ActivationsOption,
    out: Annotated[Path, typer.Option(help="folder for one SAE per hook (sae-lens format)")],
    hook: HookOption = None,
    evaluate: Annotated[bool, typer.Option(help="evaluate CE/KL with the model")] = True,
) -> None:
    """Train SAEs on the activation store (the profile's `train` section) and evaluate them.

    Example: sae-atlas train --store runs/quick/activations.h5 --out runs/quick/sae
    """
    from sae_atlas.stages.train import train_saes

    train_config = overridden(config.train, hooks=tuple(hook) if hook else None)
    handle = model_handle(config.model) if evaluate else None
    with progress_bar("train", "step") as bar:
        results = train_saes(store, out, train_config, handle=handle, progress=bar.update)
    for result in results:
        state = "skipped (complete)" if result.skipped else f"{result.n_steps} steps"
        console.print(f"{result.path}: {state}, {result.n_tokens:,} tokens, {result.seconds:.0f} s")


@model_command
def label(
    config: BuildConfig,
    store: ActivationsOption,
    sae: Annotated[Path, typer.Option(help="an SAE folder in sae-lens format")],
    corpus: Annotated[Path, typer.Option(help="transcripts.h5 (for the persona catalogue)")],
    out: Annotated[Path, typer.Option(help="labels.h5 to write")],
) -> None:
    """Tag SAE features by persona contrasts (train questions, confirmed held-out) and card them.

    Example: sae-atlas label --store runs/quick/activations.h5
    --sae runs/quick/sae/blocks.15.hook_resid_post --corpus runs/quick/transcripts.h5
    --out runs/quick/labels.h5
    """
    from sae_atlas.stages.label import catalogue_from_corpus, label_stage

    handle = model_handle(config.model)
    catalogue = catalogue_from_corpus(corpus)
    with progress_bar("label", "tok", 0) as bar:
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


@command
def organize(
    labels: Annotated[Path, typer.Option(help="labels.h5 written by `sae-atlas label`")],
    sae: Annotated[Path, typer.Option(help="the SAE folder the labels were made with")],
    out: Annotated[Path, typer.Option(help="atlas.h5 to write")],
    profile: ProfileOption = "quick",
) -> None:
    """Cluster the features (UMAP + HDBSCAN), map persona space, write the atlas.

    Example: sae-atlas organize --labels runs/quick/labels.h5
    --sae runs/quick/sae/blocks.15.hook_resid_post --out runs/quick/atlas.h5
    """
    from feature_store.labels import load_labels
    from sae_atlas.sae import load_sae
    from sae_atlas.stages.organize import organize as run_organize

    config = run_config(profile)
    with console.status("organize") as status:
        result = run_organize(
            load_labels(labels),
            load_sae(str(sae)),
            out,
            config.organize,
            progress=lambda step: status.update(f"organize: {step}"),
        )
    space = result.summary.get("persona_space", {})
    print_outcome(
        out,
        result.skipped,
        f"{result.seconds:.0f} s; clusters by kind {result.summary.get('clusters_per_kind')}; "
        f"PC1 explains {space.get('explained_variance_pc1')}, cos(axis, PC1) "
        f"{space.get('axis_pc1_cosine')}",
    )


@model_command
def dynamics(
    config: BuildConfig,
    run: Annotated[Path, typer.Option(help="run folder with atlas.h5, transcripts.h5 and sae/")],
    overwrite: Annotated[
        bool, typer.Option(help="replace dynamics made with another config")
    ] = False,
) -> None:
    """Rollouts, attractors, drift, steering against random controls, puppeteer ablation and a
    trigger scan; results go into the atlas's dynamics/ group.

    Example: sae-atlas dynamics --run runs/quick
    """
    from sae_atlas.stages.dynamics import DYNAMICS_STEPS, DynamicsPaths, run_dynamics

    paths = DynamicsPaths.from_run(run)
    paths.check()
    handle = model_handle(config.model)
    with progress_bar("dynamics", "step", len(DYNAMICS_STEPS)) as bar:

        def progress(step: str) -> None:
            bar.set_postfix_str(step)
            bar.update()

        result = run_dynamics(
            paths.transcripts,
            paths.sae,
            paths.atlas,
            config.dynamics,
            handle=handle,
            progress=progress,
            overwrite=overwrite,
        )
    if result.skipped:
        console.print(f"{result.path}: dynamics already there for this config; skipped")
    console.print(json.dumps(result.summary, indent=1), highlight=False)


@command
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

    with console.status("report") as status:
        result = write_report(
            atlas,
            out or atlas.parent / "report",
            max_members=max_members,
            progress=lambda step: status.update(f"report: {step}"),
        )
    console.print(
        f"{result.html}\n{result.markdown}\n{len(result.figures)} figures, {result.seconds:.1f} s"
    )
