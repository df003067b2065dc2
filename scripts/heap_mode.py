"""Run a script under a glibc heap setting, to compare what the setting costs; prints its CPU time.

    PYTHONPATH=. python scripts/heap_mode.py MODE scripts/bench_harvest.py --tokens 12000 ...

MODE: `release` runs the script as is (glibc's dynamic mmap threshold; harvest and label hand the
heap's free pages back after each batch, `sae_atlas.heap`), `dynamic` without that hand-back,
`fixed` with glibc's mmap threshold fixed at 1 MiB and no hand-back (what the `sae-atlas` command
did before); see `sae_atlas.heap.set_heap_mode`. A setting holds for a whole process, so each
mode needs its own run: run the modes back to back and compare them at the same load. Prints one
JSON line: wall, user and system CPU seconds, peak resident MB and the load average.
"""

from __future__ import annotations

import json
import os
import resource
import runpy
import sys
import time

from sae_atlas.heap import MODES, set_heap_mode


def main() -> None:
    if len(sys.argv) < 3 or sys.argv[1] not in MODES:
        sys.exit(f"usage: heap_mode.py {{{','.join(MODES)}}} SCRIPT [ARGS...]")
    mode, script = sys.argv[1], sys.argv[2]
    set_heap_mode(mode)
    sys.argv = sys.argv[2:]
    started = time.perf_counter()
    runpy.run_path(script, run_name="__main__")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "mode": mode,
        "script": script,
        "wall_s": time.perf_counter() - started,
        "user_s": usage.ru_utime,
        "sys_s": usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "load_average": os.getloadavg(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
