"""The options the `sae-atlas` commands share, and the run configuration they make.

Every command that runs the model (corpus, harvest, train, label, dynamics, build) takes
`--profile` (the config), `--model`, `--adapter`, `--device` and `--dtype`, each defaulting to
the profile's; `run_config` applies them to the profile the same way for every command, and
`model_handle` loads the model it names.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from sae_atlas.config import BuildConfig, ModelConfig, load_config, on_device
from sae_atlas.model import ModelHandle, load_model

Section = TypeVar("Section")

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


def run_config(
    profile: str,
    model: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    adapter: Path | None = None,
    catalogue: Path | None = None,
) -> BuildConfig:
    """The profile's config with the options given (None: the profile's) applied: the model
    source and adapter, the device and dtype of every stage that runs torch, the catalogue."""
    config = on_device(load_config(profile), device, dtype)
    overrides = {"source": model, "adapter": None if adapter is None else str(adapter)}
    given = {name: value for name, value in overrides.items() if value is not None}
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, **given))
    if catalogue is not None:
        corpus = dataclasses.replace(config.corpus, catalogue=str(catalogue))
        config = dataclasses.replace(config, corpus=corpus)
    return config


def model_handle(model: ModelConfig, device: str | None = None) -> ModelHandle:
    """The model `model` names, loaded on `device` (None: model.device) in model.dtype."""
    return load_model(
        model.source, device or model.device, model.dtype, adapter=model.adapter or None
    )


def overridden(section: Section, **options: Any) -> Section:
    """`section` (a stage's config) with the options given (not None) replacing its fields."""
    given = {name: value for name, value in options.items() if value is not None}
    return dataclasses.replace(section, **given)  # type: ignore[type-var]
