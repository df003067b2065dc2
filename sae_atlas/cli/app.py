"""The `sae-atlas` Typer app, its console and what every command shares: one-line errors
(exit code 2, Ctrl-C 130) and progress bars. Commands register on `app` in the modules beside
this one."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from tqdm import tqdm

from feature_store.errors import StoreError
from sae_atlas.errors import SaeAtlasError

app = typer.Typer(
    help="Map a chat model's persona space with sparse autoencoders.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True, markup=False, highlight=False)  # printed text may hold [ ]
F = TypeVar("F", bound=Callable[..., Any])


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


def command(function: F) -> F:
    """Register `function` as a `sae-atlas` command whose errors print on one line."""
    return app.command()(user_errors(function))  # type: ignore[no-any-return]


def print_outcome(path: object, skipped: bool, summary: str) -> None:
    """Print what a stage made at `path` (`summary`), or that it was already there."""
    if skipped:
        console.print(f"{path}: already complete for these inputs and config; skipped")
    else:
        console.print(f"{path}: {summary}", highlight=False)


def progress_bar(description: str, unit: str, total: int | None = None) -> tqdm:
    """A progress bar on stderr; its `update(n)` is a stage's progress callback."""
    return tqdm(total=total, desc=description, unit=unit, unit_scale=True, dynamic_ncols=True)
