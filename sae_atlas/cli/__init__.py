"""The `sae-atlas` command (`app`, the console script of pyproject.toml): thin commands that
parse their options, call the library and print. `stages` has one command per stage, `audit`
the planted-persona audit, `build` the whole pipeline, `inspect` the commands that read files
or the machine (info, query, doctor); `options` the options they share, `app` the Typer app,
one-line errors and progress bars."""

from __future__ import annotations

import importlib

from sae_atlas.cli.app import app

for _module in (
    "stages",
    "audit",
    "build",
    "inspect",
):  # their commands register on app, listed in order
    importlib.import_module(f"sae_atlas.cli.{_module}")

__all__ = ["app", "main"]


def main() -> None:
    app()
