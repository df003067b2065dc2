"""Device check: harvest, SAE training and labeling throughput of a ~1B-parameter model on a GPU.

Runs `sae_atlas.device_check`: a randomly initialised Llama of TinyLlama-1.1B's shape built in
code (no download), a synthetic chat corpus, then our own harvest, train and label stages on it,
as `sae-atlas build` does. Prints a table and writes JSON after every step, so an interrupted run
still reports what it measured: to $OUT when set, else runs/bench/. Sized for about 3-4 minutes
on one H100 in bfloat16; `--small` runs tiny sizes on the CPU in seconds.

    PYTHONPATH=. python scripts/device_check.py --device cuda --dtype bfloat16
    PYTHONPATH=. python scripts/device_check.py --small
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import torch

from sae_atlas.device_check import SIZES, Report, report_header, run_steps, table
from sae_atlas.model.dtype import DTYPE_NAMES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="auto", choices=DTYPE_NAMES)
    parser.add_argument("--small", action="store_true", help="tiny sizes (CPU, seconds)")
    parser.add_argument("--work", type=Path, default=None, help="keep the run files here")
    args = parser.parse_args()
    out_dir = Path(os.environ["OUT"]) if os.environ.get("OUT") else Path("runs/bench")
    path = out_dir / ("device_check_small.json" if args.small else "device_check.json")
    size = "small" if args.small else "full"
    header = report_header(size, {k: str(v) for k, v in vars(args).items()})
    report = Report(path, header, on_step=lambda row: print(json.dumps(row), flush=True))
    report.write()
    with tempfile.TemporaryDirectory() as scratch:
        try:
            run_steps(report, SIZES[size], args.device, args.dtype, args.work or Path(scratch))
        finally:
            print(table(report.steps))
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
