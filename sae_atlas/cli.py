"""The `sae-atlas` command: parse, call the stage, print. Errors: one line, exit code 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

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
console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

ModelOption = Annotated[
    str,
    typer.Option(
        "--model", help="default (smollm2-135m-instruct), an HF id, a folder or a .gguf file"
    ),
]
DeviceOption = Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1, mps")]
DtypeOption = Annotated[str, typer.Option("--dtype", help="float32, bfloat16 or float16")]


def user_errors(command: F) -> F:
    """Print SaeAtlasError / StoreError on one line and exit 2; Ctrl-C exits 130, resumable."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (SaeAtlasError, StoreError) as error:
            console.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
            sys.exit(2)
        except KeyboardInterrupt:
            console.print("interrupted: rerun the same command to resume")
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def token_bar(total: int, description: str) -> tqdm:
    return tqdm(total=total, desc=description, unit="tok", unit_scale=True, dynamic_ncols=True)


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
    device: DeviceOption = "cpu",
    dtype: DtypeOption = "float32",
    batch_tokens: Annotated[int, typer.Option(help="padded tokens per forward batch")] = 8192,
    max_len: Annotated[int, typer.Option(help="truncate transcripts to this many tokens")] = 1024,
) -> None:
    """Record residual activations of a transcript store at one or more hook points.

    Example: sae-atlas harvest --transcripts runs/quick/transcripts.h5
    --out runs/quick/activations.h5 --hook blocks.15.hook_resid_post
    """
    from feature_store.transcripts import TranscriptStore
    from sae_atlas.config import HarvestConfig
    from sae_atlas.harvest import harvest as run_harvest
    from sae_atlas.models import load_model

    store = TranscriptStore(transcripts)
    handle = load_model(model, device=device, dtype=dtype)
    if store.model != handle.model_id:
        raise SaeAtlasError(
            f"{transcripts}: was written with model {store.model!r}, not "
            f"{handle.model_id!r}; pass --model {store.model}"
        )
    records = list(store)
    config = HarvestConfig(hooks=tuple(hook), batch_tokens=batch_tokens, max_len=max_len)
    with token_bar(sum(min(len(r), max_len) for r in records), "harvest") as bar:
        result = run_harvest(handle, records, out, config, progress=bar.update)
    if result.skipped:
        console.print(f"{out}: already complete for this input and config; skipped")
    else:
        console.print(
            f"{out}: {result.n_tokens:,} tokens of {result.n_transcripts:,} "
            f"transcripts, {result.tokens_per_second:,.0f} tokens/s"
        )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
