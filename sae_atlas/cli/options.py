"""The options the `sae-atlas` commands share, and the run configuration they make.

Every command that runs the model (corpus, harvest, train, label, dynamics, build) takes
`--profile` (the config), `--model`, `--adapter`, `--device` and `--dtype`, each defaulting to
the profile's: `with_run_options` adds them to a command, which receives the profile's config
with them applied (`run_config`, the same for every command); the commands that sample the
corpus (corpus, build) also take `--catalogue` (`corpus_command`). `model_handle` loads the
model it names.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from sae_atlas.cli.app import command
from sae_atlas.config import BuildConfig, ModelConfig, load_config, on_device
from sae_atlas.model import ModelHandle, load_model

Section = TypeVar("Section")
F = TypeVar("F", bound=Callable[..., Any])

ProfileOption = Annotated[str, typer.Option(help="quick, full, or a config .yaml file")]
ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="default (smollm2-135m-instruct), an HF id, a folder or a .gguf file (default: the "
        "profile's)",
    ),
]
AdapterOption = Annotated[
    Path | None,
    typer.Option(
        "--adapter",
        help="a peft LoRA adapter folder merged into the model (default: the profile's)",
    ),
]
CatalogueOption = Annotated[
    Path | None,
    typer.Option(
        "--catalogue",
        help="a persona catalogue (YAML/JSON file or an Assistant Axis folder) instead of the "
        "shipped one",
    ),
]
HookOption = Annotated[
    list[str] | None,
    typer.Option(
        help="hook point, repeatable, e.g. blocks.15.hook_resid_post (default: the profile's)"
    ),
]
DeviceOption = Annotated[
    str | None,
    typer.Option("--device", help="cpu, cuda, cuda:1, mps (default: the profile's)"),
]
DtypeOption = Annotated[
    str | None,
    typer.Option(
        "--dtype",
        help="auto (bfloat16 where measured fast, else float32; see `sae-atlas doctor`), float32, "
        "bfloat16 or float16 for the model and sampling; SAE training in bfloat16 or float16 "
        "uses bfloat16 autocast (default: the profile's, auto unless it says otherwise)",
    ),
]


RUN_OPTIONS: dict[str, tuple[Any, Any]] = {
    "profile": (ProfileOption, "quick"),
    "model": (ModelOption, None),
    "adapter": (AdapterOption, None),
    "device": (DeviceOption, None),
    "dtype": (DtypeOption, None),
}
"""The options every model-running command takes: name -> (annotation, default)."""

SAMPLING_OPTIONS: dict[str, tuple[Any, Any]] = {
    **RUN_OPTIONS,
    "catalogue": (CatalogueOption, None),
}
"""The options of the commands that sample the corpus (corpus, build): RUN_OPTIONS and the
persona catalogue."""


def run_config(
    profile: str = "quick",
    model: str | None = None,
    adapter: Path | None = None,
    device: str | None = None,
    dtype: str | None = None,
    catalogue: Path | None = None,
) -> BuildConfig:
    """The profile's config with the options given (None: the profile's) applied: the model
    source and adapter, the device and dtype of every stage that runs torch, the persona
    catalogue the corpus is sampled from."""
    config = on_device(load_config(profile), device, dtype)
    return dataclasses.replace(
        config,
        model=overridden(config.model, source=model, adapter=adapter and str(adapter)),
        corpus=overridden(config.corpus, catalogue=catalogue and str(catalogue)),
    )


def with_run_options(command: F, options: dict[str, tuple[Any, Any]] = RUN_OPTIONS) -> F:
    """`command` taking `options` (name -> (annotation, default), arguments of `run_config`)
    after its own options; it is called with `config`, the profile's config with them applied
    (`run_config`), in their place."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for name, p in signature.parameters.items() if name != "config"]
    shared = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind)
        for name, (kind, default) in options.items()
    ]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        given = {name: kwargs.pop(name) for name in options}
        return command(*args, config=run_config(**given), **kwargs)

    wrapper.__signature__ = signature.replace(parameters=[*own, *shared])  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def model_command(function: F) -> F:
    """Register `function` as a `sae-atlas` command that runs the model (`with_run_options`)."""
    return command(with_run_options(function))


def corpus_command(function: F) -> F:
    """Register `function` as a `sae-atlas` command that samples the corpus: it takes
    SAMPLING_OPTIONS (`with_run_options`)."""
    return command(with_run_options(function, SAMPLING_OPTIONS))


def model_handle(model: ModelConfig, device: str | None = None) -> ModelHandle:
    """The model `model` names, loaded on `device` (None: model.device) in model.dtype."""
    return load_model(
        model.source, device or model.device, model.dtype, adapter=model.adapter or None
    )


def overridden(section: Section, **options: Any) -> Section:
    """`section` (a stage's config) with the options given (not None) replacing its fields."""
    given = {name: value for name, value in options.items() if value is not None}
    return dataclasses.replace(section, **given)  # type: ignore[type-var]


RunArgument = Annotated[Path, typer.Argument(help="a built run: atlas.h5, transcripts.h5, sae/")]
"""The run folder an experiment script reads."""
AtlasOption = Annotated[Path | None, typer.Option(help="atlas to record the experiment in")]
AtlasOutOption = Annotated[Path | None, typer.Option(help="record in a copy of the atlas here")]
JsonOption = Annotated[Path | None, typer.Option("--json", help="JSON summary to write")]
