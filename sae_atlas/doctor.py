"""`sae-atlas doctor`: what this machine offers sae-atlas, and what a quick build costs on it.

`checkup(out, device)` gathers, without loading the model: the devices torch sees; the CPU's model
and the features that decide its matmul kernels (CPU_FEATURES); torch's version, threads and CPU
capability; the environment variables that cap them; the matrix-multiply GFLOP/s in float32 and
bfloat16 (`matmul_rates` on the model's shape: per thread on a CPU, where it is stable on cores
shared with other processes, and with all of torch's threads now); free memory; free disk where
`out` would be written; the dtype "auto" picks there and why; and a predicted time for each
stage of a build of `profile` with the default model (STAGES): the stage's floating-point work
(`stage_gflop`, from the profile's sizes) divided by the rate of the dtype it runs in (per-thread
rate x threads) times the stage's efficiency (EFFICIENCY, calibrated on measured builds). Costs
about 1 s (the measurements). Returns a `Checkup`; the CLI prints it.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from sae_atlas.config import BuildConfig, load_config
from sae_atlas.model.dtype import (
    CACHE_ENV,
    ISA_ENV_VARS,
    CpuInfo,
    DtypeChoice,
    MatmulRates,
    cpu_info,
    matmul_rates,
    resolve_dtype,
)
from sae_atlas.personas import load_catalogue
from sae_atlas.stages.corpus import CONTROL_CONDITIONS, corpus_jobs

CPU_FEATURES = ("fma", "avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")
"""CPU flags that decide the matmul kernels: float32 FMA width (avx2, avx512f) and native
bfloat16 (avx512_bf16 dot products, AMX tiles); without the last two bfloat16 is emulated."""
ENV_VARS = (*ISA_ENV_VARS, "OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES", CACHE_ENV)
STAGES = ("corpus", "harvest", "train", "label", "organize", "dynamics")
RATE_SHAPE = (512, 576, 576)
"""[m, k] @ [k, n] doctor measures: 512 tokens through a d_model x d_model projection of the
default model (its float32 weights, 1.3 MB, stay in a core's L2 cache: the rate is stable on
cores shared with other processes, where 576 x 1536 varied 97-163 GFLOP/s from run to run)."""

# The default model (SmolLM2-135M-Instruct), the model the profiles' sizes are for.
N_LAYERS, D_MODEL, D_MLP, D_KV, VOCAB = 30, 576, 1536, 192, 49152
LAYER_PARAMS = 2 * D_MODEL * D_MODEL + 2 * D_MODEL * D_KV + 3 * D_MODEL * D_MLP
"""Weights one token multiplies through per block: q and o, k and v (3 KV heads), the MLP."""
MODEL_PARAMS = N_LAYERS * LAYER_PARAMS + D_MODEL * VOCAB
"""Weights per token through every block and the unembedding (sampling, evaluation)."""

# Token counts the sizes imply, from the quick build of README.md (1,376 jobs, 358k tokens).
CHARS_PER_TOKEN = 4.16
"""Characters of prompt text per SmolLM2 token (the quick corpus: 60,676 prompt tokens)."""
TEMPLATE_TOKENS = 13
"""Chat-template tokens around a system and a user message and the assistant header."""
DEFAULT_SYSTEM_TOKENS = 15
"""Tokens (about) of the system prompt the template inserts when a chat has none."""
RESPONSE_FILL = 62 / 64
"""Mean sampled tokens of a response as a share of max_new_tokens."""
TURN_CONTEXT_TOKENS = 100
"""Mean tokens a dynamics turn re-reads (its conversation so far) before it samples."""

CALIBRATION_RATES = MatmulRates(float32=170.0, bfloat16=965.0, shape=RATE_SHAPE, device="cpu")
"""Per-thread rates (median of 9 `matmul_rates(RATE_SHAPE)` on one thread, 2026-12-02) of the
machine README.md's quick build was timed on: 2 cores of an Intel Xeon with avx512f, avx512_bf16
and amx_bf16."""
CALIBRATION_SECONDS: dict[tuple[str, str], float] = {
    ("corpus", "bfloat16"): 137.0,
    ("harvest", "float32"): 278.0,
    ("train", "float32"): 414.0,
    ("label", "float32"): 20.0,
    ("organize", "float32"): 20.0,
    ("dynamics", "bfloat16"): 69.0,
}
"""README.md's quick build on that machine (2 threads, quiet): each stage's seconds, in the dtype
it ran in then."""
BF16_SPEEDUP = {"corpus": 2.21, "harvest": 2.66, "train": 1.15, "dynamics": 2.21}
"""Tokens/s in bfloat16 over float32 on that machine, one process on one thread: sampling 32
quick jobs at batch 32 (two alternating rounds: 80 against 178 new tokens/s), harvesting 41k
tokens at layer 15 (438 against 1,166), training a 2,304-wide TopK SAE on 300k tokens with
sae-lens's bfloat16 autocast (2,734 against 3,144); dynamics samples like the corpus."""
EFFICIENCY: dict[str, dict[str, float]] = {
    "corpus": {"bfloat16": 0.149, "float32": 0.381},
    "harvest": {"float32": 0.426, "bfloat16": 0.199},
    "train": {"float32": 0.360, "bfloat16": 0.0730},
    "label": {"float32": 0.139},
    "organize": {"float32": 0.000899},
    "dynamics": {"bfloat16": 0.146, "float32": 0.376},
}
"""Share of the matmul rate (per-thread rate at RATE_SHAPE x threads) each stage reaches in the
dtype it runs in: stage_gflop(quick) / (CALIBRATION_SECONDS x CALIBRATION_RATES x 2 threads) for
the dtype of the calibration build, and for the other dtype that x BF16_SPEEDUP x the rate ratio
(bfloat16 sampling and harvest reach a smaller share of their 5.7x faster matmul; training in
sae-lens is mostly not matmul). Organize runs no model (UMAP and HDBSCAN on 2,304 features): its
share only scales its measured time with the machine's speed. On this machine capped to AVX2
(ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2: float32 everywhere) they predict corpus 303 s,
harvest 278, train 414, dynamics 152; a 2-core AVX2-only machine 1.5-1.6x slower in float32 took
600, 450, 600 and 264 s (issue 17)."""


@dataclass(frozen=True)
class StageEstimate:
    """A stage's predicted time: gflop of work in `dtype` at `efficiency` x the matmul rate."""

    stage: str
    dtype: str
    gflop: float
    efficiency: float
    seconds: float


@dataclass(frozen=True)
class Checkup:
    """What `sae-atlas doctor` shows (see the module docstring); rates are GFLOP/s."""

    devices: tuple[str, ...]
    cpu: CpuInfo
    features: dict[str, bool]
    torch_version: str
    cpu_capability: str
    threads: int
    env: dict[str, str]
    rates_per_thread: MatmulRates
    rates_now: MatmulRates
    memory_available_bytes: int | None
    memory_total_bytes: int | None
    disk_path: str
    disk_free_bytes: int
    auto: DtypeChoice
    stages: tuple[StageEstimate, ...]

    @property
    def total_seconds(self) -> float:
        return sum(stage.seconds for stage in self.stages)


def devices() -> tuple[str, ...]:
    """The devices torch can run on here: cpu, each CUDA device (with its name), mps."""
    found = ["cpu"]
    if torch.cuda.is_available():
        names = (torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        found += [f"cuda:{i} ({name})" for i, name in enumerate(names)]
    if torch.backends.mps.is_available():
        found.append("mps")
    return tuple(found)


def memory_bytes() -> tuple[int | None, int | None]:
    """(available, total) bytes of memory from /proc/meminfo; None where it is not readable."""
    fields: dict[str, int] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields[key] = int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return None, None
    return fields.get("MemAvailable"), fields.get("MemTotal")


def existing_parent(path: Path) -> Path:
    """`path` or its nearest ancestor that exists (where its files would land)."""
    path = path.resolve()
    while not path.exists():
        path = path.parent
    return path


def sampling_gflop(sampled: float, prompt: float) -> float:
    """GFLOP of sampling `sampled` tokens after reading `prompt` tokens through the whole model."""
    return 2 * MODEL_PARAMS * (sampled + prompt) / 1e9


def stage_gflop(config: BuildConfig) -> dict[str, float]:
    """Each stage's multiply-add work (GFLOP) on the default model for `config`'s sizes."""
    corpus = config.corpus
    jobs = corpus_jobs(load_catalogue(corpus.catalogue or None), corpus)
    chars = sum(len(job.system_prompt or "") + len(job.user_message) for job in jobs)
    missing_system = sum(job.system_prompt is None for job in jobs)
    prompt = chars / CHARS_PER_TOKEN + len(jobs) * TEMPLATE_TOKENS
    prompt += missing_system * DEFAULT_SYSTEM_TOKENS
    sampled = len(jobs) * corpus.max_new_tokens * RESPONSE_FILL
    controls = [c for c in CONTROL_CONDITIONS if c in corpus.conditions]
    harvested = prompt + sampled * (1 + len(controls))
    if "user_control" in controls:
        harvested += len(jobs) * (TEMPLATE_TOKENS + DEFAULT_SYSTEM_TOKENS)
    n_transcripts = len(jobs) * (1 + len(controls))
    hook_layer = max(int(hook.split(".")[1]) for hook in config.harvest.hooks)
    train = config.train
    encode = 2 * D_MODEL * train.width  # FLOPs per token of one SAE matmul (encoder or decoder)
    eval_tokens = train.eval_transcripts * min(train.eval_max_len, harvested / n_transcripts)
    dynamics = config.dynamics
    n_personas = len(dynamics.personas) or dynamics.n_personas
    turns = (
        (n_personas + dynamics.n_scenes) * dynamics.seeds * dynamics.n_turns
        + (1 + 2 * dynamics.n_steer) * dynamics.n_prompts * dynamics.n_turns
        + 3 * n_personas * dynamics.n_prompts
        + (1 + len(dynamics.wrappers)) * dynamics.n_prompts * dynamics.seeds
    )
    return {
        "corpus": sampling_gflop(sampled, prompt),
        "harvest": 2 * harvested * (hook_layer + 1) * LAYER_PARAMS / 1e9,
        "train": 3 * train.training_tokens * 2 * encode / 1e9 + 4 * sampling_gflop(0, eval_tokens),
        "label": harvested * encode / 1e9,
        "organize": 2 * train.width**2 * D_MODEL / 1e9,
        "dynamics": sampling_gflop(
            turns * dynamics.max_new_tokens * RESPONSE_FILL, turns * TURN_CONTEXT_TOKENS
        ),
    }


def stage_dtypes(config: BuildConfig, device: str, probe: MatmulRates | None) -> dict[str, str]:
    """The dtype each stage computes in on `device` (label and organize: float32)."""
    model, corpus = config.model, config.corpus
    return {
        "corpus": resolve_dtype(corpus.dtype, device, probe=probe).name,
        "harvest": resolve_dtype(model.dtype, device, probe=probe).name,
        "train": resolve_dtype(config.train.dtype, device, probe=probe).name,
        "label": "float32",
        "organize": "float32",
        "dynamics": resolve_dtype(config.dynamics.dtype, device, probe=probe).name,
    }


def estimate_stages(
    gflop: dict[str, float], dtypes: dict[str, str], per_thread: MatmulRates, threads: int
) -> tuple[StageEstimate, ...]:
    """Predicted seconds per stage: gflop / (per-thread rate of its dtype x threads x
    efficiency); float16 counts at the float32 rate."""
    estimates = []
    for stage in STAGES:
        dtype = dtypes[stage] if dtypes[stage] in EFFICIENCY[stage] else "float32"
        rate = per_thread.bfloat16 if dtype == "bfloat16" else per_thread.float32
        efficiency = EFFICIENCY[stage][dtype]
        seconds = gflop[stage] / (rate * threads * efficiency)
        estimates.append(StageEstimate(stage, dtype, gflop[stage], efficiency, seconds))
    return tuple(estimates)


def checkup(
    out: str | Path = "runs",
    device: str = "cpu",
    profile: str = "quick",
    per_thread: MatmulRates | None = None,
) -> Checkup:
    """This machine as sae-atlas sees it, and the predicted stage times of a `profile` build on
    `device` (CPU only: the efficiencies are calibrated on CPUs). per_thread: the matmul rates
    to predict from and decide "auto" on (None: measured now, and auto from the cached probe)."""
    threads = torch.get_num_threads()
    on_cpu = device.startswith("cpu")
    measured = per_thread or matmul_rates(device, RATE_SHAPE, 0.3, threads=1 if on_cpu else None)
    now = matmul_rates(device, RATE_SHAPE, 0.3) if per_thread is None else per_thread
    config = load_config(profile)
    stages: tuple[StageEstimate, ...] = ()
    if on_cpu:
        dtypes = stage_dtypes(config, device, per_thread)
        stages = estimate_stages(stage_gflop(config), dtypes, measured, threads)
    cpu = cpu_info()
    available, total = memory_bytes()
    disk = existing_parent(Path(out))
    return Checkup(
        devices=devices(),
        cpu=cpu,
        features={flag: flag in cpu.flags for flag in CPU_FEATURES},
        torch_version=torch.__version__,
        cpu_capability=str(torch.backends.cpu.get_cpu_capability()),
        threads=threads,
        env={name: os.environ[name] for name in ENV_VARS if name in os.environ},
        rates_per_thread=measured,
        rates_now=now,
        memory_available_bytes=available,
        memory_total_bytes=total,
        disk_path=str(disk),
        disk_free_bytes=shutil.disk_usage(disk).free,
        auto=resolve_dtype("auto", device, probe=per_thread),
        stages=stages,
    )
