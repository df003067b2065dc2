"""The dtype the model runs in: `resolve_dtype(requested, device)`, where "auto" is measured.

"auto" picks bfloat16 only where it is measured to be fast: a CUDA device that supports it
(`torch.cuda.is_bf16_supported`), or a CPU whose bfloat16 matrix multiply is at least
BF16_MIN_SPEEDUP times as fast as float32 in a short probe (`matmul_rates` on PROBE_SHAPE, a product
the size of the model's, on one thread, about 0.05-0.3 s); everywhere else float32. The probe runs
on one thread because the ratio is a property of the core's instruction set, and a multi-threaded
product on cores shared with other processes measures the scheduler instead (2 threads at load 3 on
2 cores: 17-70 GFLOP/s in float32 against 160 on one thread). A CPU without native bfloat16 (AVX2
only, or oneDNN capped with ONEDNN_MAX_CPU_ISA=AVX2) emulates it 50-100x slower than float32; one
with AVX512-BF16 or AMX runs it 2-6x faster. An explicit dtype always wins.

The probe's result is cached per machine in `cache_dir()/dtype_probe.json` (SAE_ATLAS_CACHE_DIR,
else $XDG_CACHE_HOME/sae-atlas, else ~/.cache/sae-atlas), keyed by what decides the kernels torch
picks: CPU model and flags, torch version, thread count and the environment variables that cap
the instruction set (ISA_ENV_VARS). A corrupt cache file is ignored and rewritten; an unwritable
one only costs a probe per process.

`refuse_other_dtype` is the one-line refusal a stage raises when its output exists, made in
another dtype than this run resolves to (the dtype is part of each stage's identity).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from sae_atlas.errors import SaeAtlasError

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
AUTO = "auto"
DTYPE_NAMES: tuple[str, ...] = (AUTO, *DTYPES)
"""Every dtype name a config or `--dtype` accepts."""

PROBE_SHAPE = (256, 576, 576)
"""[m, k] @ [k, n] of the probe: 256 tokens through a d_model x d_model projection of the
default model (SmolLM2-135M, d_model 576), between a decode step's batch and a harvest batch."""
PROBE_SECONDS = 0.1
"""Time the probe spends on each dtype at most (beyond one warm-up call)."""
PROBE_THREADS = 1
BF16_MIN_SPEEDUP = 1.25
"""bfloat16 must beat float32 by this factor to be chosen on a CPU (it costs precision)."""
ISA_ENV_VARS = (
    "ATEN_CPU_CAPABILITY",
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
    "ONEDNN_DEFAULT_FPMATH_MODE",
    "MKL_ENABLE_INSTRUCTIONS",
)
"""Environment variables that change which matmul kernels torch runs on a CPU."""
CACHE_ENV = "SAE_ATLAS_CACHE_DIR"
PROBE_FILE = "dtype_probe.json"


@dataclass(frozen=True)
class DtypeChoice:
    """What a stage runs in: dtype `name` (torch_dtype), on `device`, with torch's `threads`
    CPU threads, and why that dtype (`reason`)."""

    name: str
    torch_dtype: torch.dtype
    device: str
    threads: int
    reason: str

    def record(self) -> dict[str, Any]:
        """JSON-ready: what build.json and a store's `runtime` attribute hold for a stage."""
        return {
            "dtype": self.name,
            "device": self.device,
            "threads": self.threads,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class MatmulRates:
    """Best measured GFLOP/s of one matrix multiply `shape` ([m, k] @ [k, n]) on `device`."""

    float32: float
    bfloat16: float
    shape: tuple[int, int, int]
    device: str

    @property
    def bf16_speedup(self) -> float:
        return self.bfloat16 / self.float32


@dataclass(frozen=True)
class CpuInfo:
    """The CPU's model name and feature flags (from /proc/cpuinfo; empty flags elsewhere)."""

    model: str
    flags: frozenset[str]


@functools.cache
def cpu_info() -> CpuInfo:
    """This machine's CPU model name and flags (the first processor of /proc/cpuinfo)."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if not key.strip() and fields:
                break
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    model = fields.get("model name") or platform.processor() or platform.machine() or "unknown"
    return CpuInfo(model=model, flags=frozenset(fields.get("flags", "").split()))


def _best_seconds(call: Callable[[], object], device: str, calls: int) -> float:
    """Seconds of the fastest of `calls` calls of `call` (synchronized on CUDA)."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    best = float("inf")
    for _ in range(calls):
        sync()
        started = time.perf_counter()
        call()
        sync()
        best = min(best, time.perf_counter() - started)
    return best


def matmul_rates(
    device: str = "cpu",
    shape: tuple[int, int, int] = PROBE_SHAPE,
    seconds: float = PROBE_SECONDS,
    max_calls: int = 20,
    threads: int | None = None,
) -> MatmulRates:
    """GFLOP/s of [m, k] @ [k, n] in float32 and bfloat16 on `device`: the best of up to
    `max_calls` calls per dtype after one warm-up, each dtype stopping once it has spent
    `seconds`. Calls alternate between the dtypes, so load from other processes hits both alike.
    `threads`: torch CPU threads while measuring (None: as set). Costs about 2 x `seconds` at
    most, plus one call per dtype."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or previous)
    try:
        return _matmul_rates(device, shape, seconds, max_calls)
    finally:
        torch.set_num_threads(previous)


def _matmul_rates(
    device: str, shape: tuple[int, int, int], seconds: float, max_calls: int
) -> MatmulRates:
    m, k, n = shape
    generator = torch.Generator().manual_seed(0)
    operands = {
        name: (
            torch.randn(m, k, generator=generator).to(device, DTYPES[name]),
            torch.randn(k, n, generator=generator).to(device, DTYPES[name]),
        )
        for name in ("float32", "bfloat16")
    }
    best = {name: float("inf") for name in operands}
    spent = dict.fromkeys(operands, 0.0)
    for a, b in operands.values():
        _best_seconds(functools.partial(torch.matmul, a, b), device, 1)
    for _ in range(max_calls):
        running = [name for name in operands if spent[name] < seconds]
        if not running:
            break
        for name in running:
            a, b = operands[name]
            took = _best_seconds(functools.partial(torch.matmul, a, b), device, 1)
            best[name] = min(best[name], took)
            spent[name] += took
    flops = 2.0 * m * k * n
    return MatmulRates(
        float32=flops / best["float32"] / 1e9,
        bfloat16=flops / best["bfloat16"] / 1e9,
        shape=shape,
        device=device,
    )


def cache_dir() -> Path:
    """Where sae-atlas caches per-machine measurements."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sae-atlas"


def probe_key() -> dict[str, Any]:
    """What decides the CPU matmul kernels, hence the probe's result."""
    cpu = cpu_info()
    return {
        "cpu": cpu.model,
        "flags_sha1": hashlib.sha1(" ".join(sorted(cpu.flags)).encode()).hexdigest(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "env": {name: os.environ[name] for name in ISA_ENV_VARS if name in os.environ},
        "shape": list(PROBE_SHAPE),
        "probe_threads": PROBE_THREADS,
    }


def _read_probes(path: Path) -> dict[str, Any]:
    """The cached probes of `path` by key digest; {} when missing or corrupt."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    probes = data.get("probes") if isinstance(data, dict) else None
    return probes if isinstance(probes, dict) else {}


def _write_probes(path: Path, probes: dict[str, Any]) -> None:
    """Replace `path` atomically with `probes`; a cache that cannot be written is skipped."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"probes": probes}, indent=1))
        os.replace(tmp, path)
    except OSError:
        pass


def cpu_probe() -> MatmulRates:
    """This CPU's probe rates (PROBE_SHAPE, PROBE_THREADS threads), from the cache when it holds
    them for this machine's key, else measured (about 0.05-0.3 s) and cached."""
    key = probe_key()
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return _cached_probe(digest, json.dumps(key, sort_keys=True))


@functools.cache
def _cached_probe(digest: str, key_json: str) -> MatmulRates:
    path = cache_dir() / PROBE_FILE
    probes = _read_probes(path)
    entry: Any = probes.get(digest)
    try:
        return MatmulRates(
            float32=float(entry["float32"]),
            bfloat16=float(entry["bfloat16"]),
            shape=PROBE_SHAPE,
            device="cpu",
        )
    except (TypeError, KeyError, ValueError):
        pass
    rates = matmul_rates("cpu", threads=PROBE_THREADS)
    measured = datetime.now(UTC).isoformat(timespec="seconds")
    entry = {**asdict(rates), "key": json.loads(key_json), "measured": measured}
    _write_probes(path, {**probes, digest: entry})
    return rates


def resolve_dtype(requested: str, device: str, *, probe: MatmulRates | None = None) -> DtypeChoice:
    """The dtype to run in on `device`: `requested`, or for "auto" bfloat16 where measured fast
    (CUDA with bfloat16; a CPU whose probe shows bfloat16 BF16_MIN_SPEEDUP x float32), else
    float32. probe: the CPU rates to decide on (None: `cpu_probe()`). SaeAtlasError for an
    unknown name."""
    if requested not in DTYPE_NAMES:
        raise SaeAtlasError(f"unknown dtype {requested!r}; use one of {', '.join(DTYPE_NAMES)}")
    if requested != AUTO:
        name, reason = requested, f"{requested} requested"
    elif device.startswith("cuda"):
        fast = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        name = "bfloat16" if fast else "float32"
        reason = f"auto: {device} {'supports' if fast else 'lacks'} bfloat16"
    elif device.startswith("cpu"):
        rates = probe or cpu_probe()
        fast = rates.bf16_speedup >= BF16_MIN_SPEEDUP
        name = "bfloat16" if fast else "float32"
        reason = (
            f"auto: bfloat16 matmul {rates.bf16_speedup:.2g}x float32 on this CPU "
            f"({rates.bfloat16:.3g} vs {rates.float32:.3g} GFLOP/s; bfloat16 needs "
            f"{BF16_MIN_SPEEDUP}x)"
        )
    else:
        name = "float32"
        reason = f"auto: float32 on {device} (bfloat16 only on CUDA or a CPU measured fast)"
    return DtypeChoice(name, DTYPES[name], device, torch.get_num_threads(), reason)


def given_dtype(torch_dtype: torch.dtype, device: str) -> DtypeChoice:
    """The choice of a model that was built in code in `torch_dtype` (nothing was resolved)."""
    name = str(torch_dtype).removeprefix("torch.")
    reason = f"{name}: the model was built in it"
    return DtypeChoice(name, torch_dtype, device, torch.get_num_threads(), reason)


def runtime_json(stage: str, choice: DtypeChoice) -> str:
    """The `runtime` root attribute of a stage's output: JSON {stage: choice.record()}."""
    return json.dumps({stage: choice.record()})


def refuse_other_dtype(
    where: str | Path,
    made_in: object,
    choice: DtypeChoice,
    otherwise: str = "write to another --out",
) -> None:
    """SaeAtlasError when the output at `where` was made in dtype `made_in` (None: unknown) and
    this run resolved to another one; the fix it names: pass that dtype, or `otherwise`."""
    if made_in is None or made_in == choice.name:
        return
    raise SaeAtlasError(
        f"{where}: was made in {made_in}, but this run uses {choice.name} ({choice.reason}); "
        f"pass --dtype {made_in} to reuse it, or {otherwise}"
    )
