"""Hand the C heap's free pages back to the system between the batches of a streaming stage.

glibc serves an allocation from its heap unless it is larger than the mmap threshold, which it
raises (up to 32 MiB) each time a large block is freed; so after the first batch the per-batch
tensors of harvest and label live on the heap, where a freed block that the next allocation does
not fit stays resident. Left alone, resident memory then crept up with the batches a stage ran
(scripts/bench_memory.py). `release_free_heap()` (glibc's malloc_trim(0)) returns every free page
inside the heap to the system (madvise), so between batches a stage holds only what is live and
its peak is one batch's, whatever the corpus size. Cost: one walk of the heap and the page faults
that touch those pages again in the next batch, a small fraction of a forward pass. (Fixing the
threshold low instead keeps the heap small but maps and zero-fills every large tensor on each
allocation: harvest ran 23-41% slower.) No effect off glibc.

`set_heap_mode` puts the process in one of MODES, to measure what the hand-back costs
(scripts/heap_mode.py, scripts/bench_memory.py): `release` (the default: the hand-back on),
`dynamic` (glibc's dynamic threshold, no hand-back), `fixed` (glibc's mmap threshold fixed at
1 MiB, no hand-back).
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable

MODES = ("release", "dynamic", "fixed")
"""The heap settings `set_heap_mode` knows."""
M_MMAP_THRESHOLD = -3
"""glibc's mallopt parameter for the mmap threshold (malloc.h)."""
_mode = {"release": True}


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


def release_free_heap() -> None:
    """Return the free pages of the C heap to the system (glibc's malloc_trim(0)), unless
    `set_heap_mode` turned the hand-back off."""
    trim = _malloc_trim()
    if trim is not None and _mode["release"]:
        trim(0)


def set_heap_mode(mode: str) -> None:
    """Put this process in heap `mode` (one of MODES) before any stage runs; a setting holds for
    the whole process."""
    if mode not in MODES:
        raise ValueError(f"heap mode {mode!r}: choose one of {', '.join(MODES)}")
    if mode == "fixed":
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 1 << 20)
    _mode["release"] = mode == "release"
