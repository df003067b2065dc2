"""Pin numba's compile target, so UMAP's layout gives the same floats on every x86-64 CPU.

numba compiles UMAP's kernels for the host CPU with fastmath. Where LLVM tunes for 512-bit
vectors (AMD Zen 4, for one) it reassociates float sums differently from an AVX2 or an Intel
AVX-512 host, and the layout's SGD turns that last bit into another embedding (measured on the
planted-group test data: NUMBA_CPU_NAME=znver4 gives other clusters than haswell, skylake,
icelake-server or sapphirerapids). `pin_numba_target` makes numba compile for PORTABLE_CPU, the
x86-64 baseline that every such CPU runs (UMAP's layout measured as fast as for the host), unless
the user has set NUMBA_CPU_NAME. It must run before numba compiles anything in the process (it
does when called before UMAP is first imported); a fresh numba cache then compiles UMAP's kernels
once for that target (30-60 s).
"""

from __future__ import annotations

import os

PORTABLE_CPU = "generic"
"""numba's (LLVM's) name for the baseline of the host's architecture; no optional features."""


def pin_numba_target() -> bool:
    """Make numba compile for PORTABLE_CPU unless NUMBA_CPU_NAME is set; True when it does.

    False when the user chose another target or numba had compiled code for the host before
    this call (its target is fixed then): UMAP's layouts may then differ between CPU kinds."""
    os.environ.setdefault("NUMBA_CPU_NAME", PORTABLE_CPU)
    from numba.core import config
    from numba.core.registry import cpu_target

    config.reload_config()
    _, cpu_name, features = cpu_target.target_context.codegen().magic_tuple()
    return cpu_name == PORTABLE_CPU and features == ""
