"""Benchmark the model and SAE stages of the quick build, old path against new, in one run.

Per stage, on a small fixed workload of the quick profile: corpus sampling (a batch of corpus
jobs: every prompt prefilled whole against shared prefixes prefilled once), harvest (the bridge
through every layer against stopping at the hooked one), train steps (sae-lens's TopK step
against the gathered-decoder step, with and without dead features), evaluation (the spliced
losses, one path) and dynamics sampling (multi-turn rollouts, as corpus sampling). Each row: the
seconds (best of --repeats), tokens or steps per second, the GFLOP the path computes and the
GFLOP/s it achieves against the machine's measured float32 / bfloat16 matmul peak
(sae_atlas.model.dtype.matmul_rates at --threads); each stage: the speedup and the equality
check (sampled tokens identical, activations bit-identical, training loss curve and held-out
explained variance over --quality-steps steps). Prints a table and writes JSON with the CPU
flags, the ISA variables and the load average. The AVX2 kind on an AVX-512 machine:

    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 nice -n 10 .venv/bin/python \\
        scripts/bench_stages.py --threads 2 --out runs/bench/bench_stages_avx2.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sae_lens.saes import TopKTrainingSAE
from sae_lens.training.sae_trainer import SAETrainer

from feature_store.activations import ActivationStore
from feature_store.transcripts import Transcript
from sae_atlas.config import BuildConfig, CorpusConfig, TrainConfig, load_config
from sae_atlas.doctor import CPU_FEATURES
from sae_atlas.model import (
    ModelHandle,
    conversation,
    load_model,
    padded,
    residual_activations,
    sampling_model,
    stop_token_ids,
)
from sae_atlas.model.dtype import ISA_ENV_VARS, cpu_info, matmul_rates, resolve_dtype
from sae_atlas.model.handle import message
from sae_atlas.model.sampling import decode, prompt_ids
from sae_atlas.personas import load_catalogue
from sae_atlas.stages.corpus import Job, corpus_jobs
from sae_atlas.stages.evaluate import heldout_tokens, sample_rows, spliced_losses
from sae_atlas.stages.train import build_sae, norm_scaling_factor, trainer_config, training_mask

Paths = dict[str, dict[str, Any]]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2: the target)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per path (best)")
    parser.add_argument("--jobs", type=int, default=64, help="corpus jobs (one batch)")
    parser.add_argument("--new-tokens", type=int, default=32, help="corpus max_new_tokens")
    parser.add_argument("--harvest-rows", type=int, default=16)
    parser.add_argument("--train-steps", type=int, default=6, help="timed train steps per path")
    parser.add_argument("--quality-steps", type=int, default=200, help="0: no quality check")
    parser.add_argument(
        "--quality-store", type=Path, default=None, help="activations.h5 (default: planted data)"
    )
    parser.add_argument("--stages", default="corpus,harvest,train,evaluate,dynamics")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/bench_stages.json"))
    return parser.parse_args()


# ------------------------------------------------------------------------------ model stages
def weight_counts(model: torch.nn.Module) -> tuple[int, int, int]:
    """(weights per token through all decoder blocks, through one block, of the unembedding)."""
    blocks = [p for n, p in model.named_parameters() if ".layers." in n and p.dim() == 2]
    per_block = sum(p.numel() for p in blocks) // model.config.num_hidden_layers
    head = model.get_output_embeddings().weight.numel()
    return sum(p.numel() for p in blocks), per_block, head


def alternated(
    model: torch.nn.Module | None, runs: dict[str, Callable[[], Any]], repeats: int
) -> dict[str, dict[str, Any]]:
    """Per path of `runs`: the best wall and process-CPU seconds of `repeats` calls, the paths
    alternating (so load from other processes hits them alike), the GFLOP of weight products
    one call makes through `model` (2 per weight per token, the unembedding only for the rows
    whose logits are kept; attention scores not counted; model None: not counted) and the last
    call's result."""
    body, _, head = weight_counts(model) if model is not None else (0, 0, 0)
    total = [0.0]

    def count(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        ids = kwargs["input_ids"]
        rows = ids.shape[0] if kwargs.get("logits_to_keep") == 1 else ids.numel()
        total[0] += 2 * (ids.numel() * body + rows * head) / 1e9

    out: dict[str, dict[str, Any]] = {path: {"seconds": [], "cpu": []} for path in runs}
    remover = model.register_forward_pre_hook(count, with_kwargs=True) if model else None
    try:
        for _ in range(repeats):
            for path, run in runs.items():
                total[0], wall, cpu = 0.0, time.perf_counter(), time.process_time()
                out[path]["result"] = run()
                out[path]["seconds"].append(time.perf_counter() - wall)
                out[path]["cpu"].append(time.process_time() - cpu)
                out[path]["gflop"] = total[0]
    finally:
        if remover is not None:
            remover.remove()
    return {
        path: {**o, "seconds": min(o["seconds"]), "cpu_seconds": min(o["cpu"])}
        for path, o in out.items()
    }


def speedups(paths: Paths) -> dict[str, float]:
    """Old over new seconds (the first two paths), wall and process-CPU."""
    old, new = list(paths.values())[:2]
    return {
        "speedup": old["seconds"] / new["seconds"],
        "cpu_speedup": old["cpu_seconds"] / new["cpu_seconds"],
    }


def sampling_workload(
    handle: ModelHandle, model: torch.nn.Module, jobs: list[Job], config: CorpusConfig, repeats: int
) -> dict[str, Any]:
    """One batch of corpus jobs decoded with every prompt prefilled whole (old) and with shared
    prefixes prefilled once (new); units: new tokens sampled."""
    prompts = [prompt_ids(handle, job.messages()) for job in jobs]
    seeds = [job.seed for job in jobs]
    stops, pad = stop_token_ids(handle), int(handle.tokenizer.pad_token_id or 0)
    runs = {
        "old: whole": lambda: decode(model, prompts, seeds, config, stops, pad, False),
        "new: shared": lambda: decode(model, prompts, seeds, config, stops, pad),
    }
    paths = alternated(model, runs, repeats)
    tokens = {path: [t.tolist() for t in p.pop("result")] for path, p in paths.items()}
    for path, measured in paths.items():
        measured.update(units=sum(len(t) for t in tokens[path]), unit="new token")
    old, new = paths
    half = len(jobs) // 2  # control: the old path on two half batches (the noise floor)
    halves = [
        t.tolist()
        for part in (slice(0, half), slice(half, None))
        for t in decode(model, prompts[part], seeds[part], config, stops, pad, False)
    ]
    return {
        "paths": paths,
        **speedups(paths),
        "check": {
            "rows": len(jobs),
            "rows_differing": sum(a != b for a, b in zip(tokens[old], tokens[new], strict=True)),
            "control_old_path_in_half_batches_rows_differing": sum(
                a != b for a, b in zip(tokens[old], halves, strict=True)
            ),
        },
    }


def chat_transcripts(handle: ModelHandle, jobs: list[Job]) -> list[Transcript]:
    """Corpus-like transcripts: each job's chat with its question, repeated, as the answer."""
    chats = []
    for job in jobs:
        answer = " ".join([job.user_message] * 3)
        tokens = handle.format_chat([*job.messages(), message("assistant", answer)])
        chats.append(Transcript(tokens.token_ids, tokens.roles, split="heldout"))
    return chats


def harvest_workload(
    handle: ModelHandle, quick: BuildConfig, n_rows: int, repeats: int
) -> dict[str, Any]:
    """The hooked activations of n_rows corpus-like transcripts: the bridge through every layer
    (old) and stopped after the hooked one (new); units: tokens."""
    jobs = corpus_jobs(load_catalogue(), quick.corpus)[::97][:n_rows]
    ids, mask = padded(chat_transcripts(handle, jobs), int(handle.tokenizer.pad_token_id or 0))
    hooks = list(quick.harvest.hooks)
    deepest = max(handle.check_hooks(hooks))
    body, per_block, head = weight_counts(handle.hf_model)
    runs = {
        "old: all layers": (
            lambda: handle.bridge.run_with_cache(ids, names_filter=hooks)[1][hooks[0]],
            2 * ids.numel() * (body + head) / 1e9,
        ),
        "new: stop at hook": (
            lambda: residual_activations(handle, ids, hooks)[hooks[0]],
            2 * ids.numel() * per_block * (deepest + 1) / 1e9,
        ),
    }
    with torch.inference_mode():
        paths = alternated(None, {path: run for path, (run, _) in runs.items()}, repeats)
    acts = {path: p.pop("result") for path, p in paths.items()}
    for path, measured in paths.items():
        measured.update(units=int(mask.sum()), unit="token", gflop=runs[path][1])
    old, new = paths
    return {
        "paths": paths,
        **speedups(paths),
        "check": {"activations_bit_identical": bool(torch.equal(acts[old], acts[new]))},
    }


def evaluate_workload(
    handle: ModelHandle, quick: BuildConfig, n_rows: int, repeats: int
) -> dict[str, Any]:
    """The spliced losses of an untrained quick-profile SAE on n_rows corpus-like transcripts
    (four full forward passes per token: clean, SAE, zero, mean); units: tokens."""
    jobs = corpus_jobs(load_catalogue(), quick.corpus)[::89][:n_rows]
    transcripts = chat_transcripts(handle, jobs)
    hook = quick.harvest.hooks[0]
    sae = build_sae(replace(quick.train, device="cpu"), handle.d_model, hook, handle.model_id)
    mean = np.zeros(handle.d_model, dtype=np.float32)
    body, _, head = weight_counts(handle.hf_model)
    units = sum(min(len(t), quick.train.eval_max_len) for t in transcripts)
    seconds, _ = best_seconds(
        lambda: spliced_losses(handle, sae, hook, transcripts, mean, quick.train.eval_max_len),
        repeats,
    )
    gflop = 4 * 2 * units * (body + head) / 1e9
    paths = {"current": {"seconds": seconds, "units": units, "unit": "token", "gflop": gflop}}
    return {"paths": paths, "speedup": None, "check": None}


def dynamics_workload(
    handle: ModelHandle, model: torch.nn.Module, config: CorpusConfig, repeats: int
) -> dict[str, Any]:
    """Two-turn rollouts (four personas and no system prompt, three seeds each, the question
    bank's user turns) sampled with every prompt prefilled whole (old) and with shared prefixes
    prefilled once (new); units: tokens of the sampled turns."""
    catalogue = load_catalogue()
    personas = [catalogue.personas[i] for i in range(0, 40, 10)]
    heads = [[message("system", p.prompts[0])] for p in personas if p.prompts[0]] + [[]]
    questions = [q.text for q in catalogue.questions[:2]]
    starts = [(head, seed) for head in heads for seed in range(3)]
    args = ([h for h, _ in starts], [questions] * len(starts), [s for _, s in starts], 2, config)
    whole = lambda *a, **k: decode(*a, **k, share_prefixes=False)  # noqa: E731

    def rollouts(decoder: Callable[..., Any]) -> Any:
        conversation.decode = decoder  # type: ignore[assignment]
        try:
            return conversation.converse(handle, *args, model=model)
        finally:
            conversation.decode = decode

    runs = {"old: whole": lambda: rollouts(whole), "new: shared": lambda: rollouts(decode)}
    paths = alternated(model, runs, repeats)
    chats = {path: p.pop("result") for path, p in paths.items()}
    for path, measured in paths.items():
        units = sum(
            len(handle.tokenizer(m["content"])["input_ids"])
            for chat in chats[path]
            for m in chat
            if m["role"] == "assistant"
        )
        measured.update(units=units, unit="new token")
    old, new = paths
    return {
        "paths": paths,
        **speedups(paths),
        "check": {
            "rollouts": len(starts),
            "rollouts_differing": sum(a != b for a, b in zip(chats[old], chats[new], strict=True)),
        },
    }


# ------------------------------------------------------------------------------ training
def twin_trainers(config: TrainConfig, d_in: int) -> dict[str, SAETrainer[Any, Any]]:
    """sae-lens's TopK trainer (old) and ours (new, `build_sae`) from the same weights."""
    ours = build_sae(config, d_in, "bench", "bench")
    reference = TopKTrainingSAE(ours.cfg)
    reference.load_state_dict(ours.state_dict())
    settings = trainer_config(config)
    return {
        "old: sae-lens": SAETrainer(settings, reference, data_provider=iter(())),
        "new: gathered": SAETrainer(settings, ours, data_provider=iter(())),
    }


def train_workload(config: TrainConfig, steps: int, d_in: int = 576) -> dict[str, Any]:
    """Steps of the quick profile's TopK SAE on random batches, sae-lens's step (old) against
    ours (new), without and with 10% of the features dead (the auxiliary loss); the paths
    alternate in rounds of 4 steps, best of steps / 4 rounds; units: steps. GFLOP: 2 x B x
    d_in x width per dense product (old: 6, 9 with dead features; new: 1) plus 4 x 2 x B x d_in
    per selected entry of a row (new: the gathered decode, its two gradients and the sparse
    encoder gradient)."""
    config = replace(config, device="cpu", dtype=resolve_dtype(config.dtype, "cpu").name)
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randn(config.batch_size, d_in, generator=generator) for _ in range(4)]
    dense = 2 * config.batch_size * d_in * config.width / 1e9
    gather = 2 * config.batch_size * d_in / 1e9
    paths: Paths = {}
    for dead in (0, config.width // 10):
        trainers = twin_trainers(config, d_in)
        n_dead_aux = min(dead, d_in // 2)
        flops = {
            "old: sae-lens": (6 + 3 * bool(dead)) * dense,
            "new: gathered": dense + 4 * gather * (config.k + n_dead_aux),
        }
        for trainer in trainers.values():
            trainer.n_forward_passes_since_fired[:dead] = 10**9
            trainer.step(batches[0])  # warm-up
        steps_of = {
            path: (lambda t=trainer: [t.step(b) for b in batches])
            for path, trainer in trainers.items()
        }
        measured = alternated(None, steps_of, max(1, steps // len(batches)))
        suffix = f", {dead} dead" if dead else ""
        for path, result in measured.items():
            result.pop("result")
            paths[path + suffix] = {
                **result,
                "units": len(batches),
                "unit": "step",
                "gflop": len(batches) * flops[path],
            }
    names = list(paths)
    return {
        "paths": paths,
        **speedups(paths),
        "with_dead": speedups({name: paths[name] for name in names[2:]}),
    }


def planted_batch(
    directions: torch.Tensor, rows: int, active: int, generator: torch.Generator
) -> torch.Tensor:
    """rows [rows, d]: sums of `active` random planted directions with magnitudes in [1, 2),
    plus a little noise."""
    index = torch.randint(len(directions), (rows, active), generator=generator)
    weights = 1 + torch.rand(rows, active, generator=generator)
    noise = 0.05 * torch.randn(rows, directions.shape[1], generator=generator)
    return F.embedding_bag(index, directions, per_sample_weights=weights, mode="sum") + noise


def train_quality(
    config: TrainConfig, steps: int, store_path: Path | None, d_in: int = 576
) -> dict[str, Any]:
    """Both steps trained `steps` steps from the same weights on the same batches (a dead-feature
    window of steps / 10, so the auxiliary loss runs): the largest relative gap between their
    loss curves, the mean loss of their last tenth, and the explained variance of each SAE on
    8,192 held-out rows. Batches: the training tokens of the activation store at store_path
    (normalized as the train stage does; held out: its held-out split), else planted ones."""
    config = replace(config, device="cpu", dtype=resolve_dtype(config.dtype, "cpu").name)
    config = replace(config, dead_feature_window=max(1, steps // 10))
    closers: list[Callable[[], None]] = []
    if store_path is None:
        generator = torch.Generator().manual_seed(1)
        directions = F.normalize(torch.randn(4 * config.width, d_in, generator=generator), dim=-1)
        heldout = planted_batch(directions, 8192, 24, generator)
        batches = (
            planted_batch(directions, config.batch_size, 24, generator) for _ in iter(int, 1)
        )
        scale = 1.0
    else:
        store = ActivationStore(store_path)
        hook = store.hooks[0]
        reader = store.batches(hook, config.batch_size, mask=training_mask(store, config))
        closers.append(reader.close)
        batches = (torch.from_numpy(batch) for batch in reader)
        scale = norm_scaling_factor(batches, 16)
        rows = heldout_tokens(store, config.eval_splits, None, config.skip_positions)
        heldout = torch.from_numpy(sample_rows(store, hook, rows, 8192, 0)[0]) * scale
    trainers = twin_trainers(config, heldout.shape[1])
    losses: dict[str, list[float]] = {path: [] for path in trainers}
    for _, batch in zip(range(steps), batches, strict=False):
        for path, trainer in trainers.items():
            trainer.activation_scaler.scaling_factor = scale
            losses[path].append(float(trainer.step(batch).loss.detach()))
            trainer.n_training_steps += 1
    for close in closers:
        close()
    old, new = (np.array(values) for values in losses.values())
    last = max(1, steps // 10)
    result: dict[str, Any] = {
        "data": str(store_path or "planted"),
        "steps": steps,
        "max_relative_loss_gap": float(np.max(np.abs(new - old) / old)),
        "final_loss": {path: float(np.mean(v[-last:])) for path, v in losses.items()},
    }
    with torch.no_grad():
        total = (heldout - heldout.mean(0)).pow(2).sum()
        result["heldout_explained_variance"] = {
            path: float(1 - (trainer.sae(heldout) - heldout).pow(2).sum() / total)
            for path, trainer in trainers.items()
        }
    return result


def best_seconds(run: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """The fastest of `repeats` calls of `run` and the last call's result."""
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    return min(times), result


def machine(threads: int) -> dict[str, Any]:
    """CPU, ISA variables, threads, load average and the measured matmul peak."""
    info = cpu_info()
    rates = matmul_rates(threads=threads)
    return {
        "cpu": info.model,
        "flags": sorted(info.flags & set(CPU_FEATURES)),
        "isa_env": {name: os.environ.get(name) for name in ISA_ENV_VARS},
        "threads": threads,
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "matmul_gflops": {"float32": rates.float32, "bfloat16": rates.bfloat16},
        "dtype_auto": resolve_dtype("auto", "cpu").name,
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


def stage_rows(stage: str, paths: dict[str, dict[str, Any]], peak: float) -> list[dict[str, Any]]:
    """Table rows of one stage: per path its rate and its GFLOP/s against `peak`."""
    rows = []
    for path, measured in paths.items():
        gflops = measured["gflop"] / measured["seconds"]
        rows.append(
            {
                "stage": stage,
                "path": path,
                **measured,
                "units_per_second": measured["units"] / measured["seconds"],
                "gflop_per_second": gflops,
                "peak_fraction": gflops / peak,
            }
        )
    return rows


def print_table(rows: list[dict[str, Any]], stages: dict[str, Any]) -> None:
    print(f"{'stage':<10}{'path':<18}{'seconds':>9}{'units/s':>11}{'GFLOP/s':>9}{'of peak':>9}")
    for row in rows:
        print(
            f"{row['stage']:<10}{row['path']:<18}{row['seconds']:>9.2f}"
            f"{row['units_per_second']:>11.1f}{row['gflop_per_second']:>9.1f}"
            f"{row['peak_fraction']:>9.2f}"
        )
    for stage, result in stages.items():
        print(f"{stage}: speedup {result.get('speedup')}; check {result.get('check')}")


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    wanted = args.stages.split(",")
    host = machine(args.threads)
    dtype = host["dtype_auto"]
    peak = host["matmul_gflops"][dtype]
    quick = load_config("quick")
    stages: dict[str, Any] = {}
    needs_model = {"corpus", "harvest", "evaluate", "dynamics"} & set(wanted)
    handle = load_model(dtype=dtype) if needs_model else None
    model = sampling_model(handle, dtype) if handle is not None else None
    corpus = replace(quick.corpus, dtype=dtype, max_new_tokens=args.new_tokens)
    if "corpus" in wanted:
        jobs = corpus_jobs(load_catalogue(), corpus)[: args.jobs]
        stages["corpus"] = sampling_workload(handle, model, jobs, corpus, args.repeats)
    if "harvest" in wanted:
        stages["harvest"] = harvest_workload(handle, quick, args.harvest_rows, args.repeats)
    if "train" in wanted:
        stages["train"] = train_workload(quick.train, args.train_steps)
        if args.quality_steps:
            check = train_quality(quick.train, args.quality_steps, args.quality_store)
            stages["train"]["check"] = check
    if "evaluate" in wanted:
        stages["evaluate"] = evaluate_workload(handle, quick, args.harvest_rows, args.repeats)
    if "dynamics" in wanted:
        dynamics = replace(corpus, max_new_tokens=quick.dynamics.max_new_tokens)
        stages["dynamics"] = dynamics_workload(handle, model, dynamics, args.repeats)
    rows = [r for name, s in stages.items() for r in stage_rows(name, s.pop("paths"), peak)]
    host["load_average_after"] = os.getloadavg()
    print_table(rows, stages)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"config": {**vars(args), "out": str(args.out)}, "machine": host}
    args.out.write_text(
        json.dumps({**result, "rows": rows, "stages": stages}, indent=2, default=str)
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
