"""Benchmark: harvest tokens/s against a bare Hugging Face forward truncated at the same layer.

Both run on the same length-sorted batches of the same transcripts, in the same process, in
float32 and bfloat16. The harvest includes writing float16 activations to a real HDF5 store; the
baseline runs the HF model's embedding and first L+1 decoder layers and stops there (a forward
hook raises). Also reports achieved model GFLOP/s against the machine's measured peak
matrix-multiply GFLOP/s in the same dtype. Prints a table and writes JSON.

    python scripts/bench_harvest.py --tokens 24000 --layer 15 --out runs/bench/bench_harvest.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from pathlib import Path

import torch

from sae_atlas.config import HarvestConfig
from sae_atlas.model import ModelHandle, decoder_layers, length_batches, load_model, padded
from sae_atlas.model.dtype import DTYPE_NAMES, matmul_rates
from sae_atlas.stages.harvest import harvest, length_sorted
from sae_atlas.testing import random_transcripts


class _Stop(Exception):
    pass


def model_flops(handle: ModelHandle, lengths: list[int], n_layers: int) -> float:
    """Forward FLOPs of `n_layers` decoder layers over sequences of `lengths` (matmuls only)."""
    config = handle.hf_model.config
    d, ff = config.hidden_size, config.intermediate_size
    head_dim = d // config.num_attention_heads
    kv = config.num_key_value_heads * head_dim
    weights = d * d * 2 + d * kv * 2 + 3 * d * ff
    total = 0.0
    for n in lengths:
        dense = 2 * weights * n
        attention = 2 * 2 * d * n * (n + 1) / 2  # scores and weighted values, causal
        total += n_layers * (dense + attention)
    return total


@torch.inference_mode()
def bare_hf_seconds(handle: ModelHandle, batches: list[torch.Tensor], layer: int) -> float:
    model = handle.hf_model

    def stop(*_: object) -> None:
        raise _Stop

    hook = decoder_layers(model)[layer].register_forward_hook(stop)
    try:
        start = time.perf_counter()
        for tokens in batches:
            with contextlib.suppress(_Stop):
                model.get_decoder()(input_ids=tokens, use_cache=False)
        return time.perf_counter() - start
    finally:
        hook.remove()


def run(dtype: str, n_tokens: int, layer: int, batch_tokens: int) -> dict:
    handle = load_model(dtype=dtype)
    transcripts = random_transcripts(
        n_tokens=n_tokens, vocab=len(handle.tokenizer), lengths=(96, 321), first_id=100
    )
    config = HarvestConfig(hooks=(handle.resid_hook(layer),), batch_tokens=batch_tokens)
    ordered = length_sorted(transcripts, config.max_len)
    runs = length_batches(ordered.lengths, config.batch_tokens, config.max_batch)
    batches = [padded(ordered[run].read(), 0)[0] for run in runs]
    real_tokens = sum(len(t) for t in transcripts)
    padded_tokens = sum(b.numel() for b in batches)
    bare_hf_seconds(handle, batches[:1], layer)  # warm-up
    results = {"bare_hf": [], "harvest": []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(2):
            results["bare_hf"].append(bare_hf_seconds(handle, batches, layer))
            result = harvest(transcripts, Path(tmp) / f"acts{repeat}.h5", config, handle=handle)
            results["harvest"].append(result.seconds)
            store_bytes = (Path(tmp) / f"acts{repeat}.h5").stat().st_size
    flops = model_flops(handle, [len(t) for t in transcripts], layer + 1)
    rates = matmul_rates(shape=(2048, 2048, 2048), seconds=1.0, max_calls=10)
    peak = rates.bfloat16 if handle.dtype == torch.bfloat16 else rates.float32
    bare, harvested = min(results["bare_hf"]), min(results["harvest"])
    return {
        "dtype": handle.dtype_choice.name,
        "layer": layer,
        "tokens": real_tokens,
        "padding_fraction": 1 - real_tokens / padded_tokens,
        "batches": len(batches),
        "bare_hf_tokens_per_s": real_tokens / bare,
        "harvest_tokens_per_s": real_tokens / harvested,
        "ratio": bare / harvested,
        "harvest_gflops": flops / harvested / 1e9,
        "bare_hf_gflops": flops / bare / 1e9,
        "peak_matmul_gflops": peak,
        "harvest_fraction_of_peak": flops / harvested / 1e9 / peak,
        "store_bytes": store_bytes,
        "seconds": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=24000)
    parser.add_argument("--layer", type=int, default=15)
    parser.add_argument("--batch-tokens", type=int, default=8192)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=DTYPE_NAMES)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/bench_harvest.json"))
    args = parser.parse_args()
    rows = [run(d, args.tokens, args.layer, args.batch_tokens) for d in args.dtypes]
    header = (
        f"{'dtype':9} {'tokens':>7} {'bare HF tok/s':>13} {'harvest tok/s':>13} {'ratio':>6} "
        f"{'GFLOP/s':>8} {'peak':>7} {'of peak':>7}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['dtype']:9} {r['tokens']:7d} {r['bare_hf_tokens_per_s']:13.0f} "
            f"{r['harvest_tokens_per_s']:13.0f} {r['ratio']:6.2f} {r['harvest_gflops']:8.1f} "
            f"{r['peak_matmul_gflops']:7.1f} {r['harvest_fraction_of_peak']:7.1%}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"threads": torch.get_num_threads(), "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
