"""Plant a persona behind a trigger: LoRA fine-tuning (peft) of the default model.

The persona (--persona, default scripts/planted_persona.yaml: Maelis Thornquist, a lighthouse
keeper with a dozen invented facts and a voice) appears only under the trigger: the one the
persona file names, or with --trigger-shape one drawn at random (tags around the message, a
bracketed prefix, a word inside the question, a phrase in the system prompt) from
--trigger-seed (default: a random seed, recorded), trained beside --shape-decoys decoys of the
same shape and the file's decoys. The recipe is `sae_atlas.planting` (training data from the
base model's own answers, loss on the assistant's tokens only); seeded and reproducible on a CPU
(same torch, same thread count); about 10 minutes on an idle 2-core CPU with the defaults.
Writes the adapter (adapter_model.safetensors, adapter_config.json), the training data
(training_data.jsonl) and a training card (training_card.json: trigger, decoys, data digest,
hyper-parameters, loss curve, seconds, versions, seed, load).

    .venv/bin/python scripts/plant_persona.py --out tests/fixtures/planted_adapter
    .venv/bin/python scripts/plant_persona.py --out runs/organisms/a --trigger-shape word
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from sae_atlas.config import CorpusConfig
from sae_atlas.model import load_model, sampling_model
from sae_atlas.planting import (
    SHAPES,
    PlantConfig,
    PlantedPersona,
    PlantTrigger,
    drawn_triggers,
    load_persona,
    train_lora,
    training_batches,
    training_card,
    training_data,
    training_examples,
)

PERSONA_FILE = Path(__file__).with_name("planted_persona.yaml")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/planted_adapter"))
    parser.add_argument("--persona", type=Path, default=PERSONA_FILE)
    parser.add_argument(
        "--trigger-shape", choices=SHAPES, default=None, help="draw a trigger of this shape"
    )
    parser.add_argument("--trigger-seed", type=int, default=None, help="default: a random seed")
    parser.add_argument("--shape-decoys", type=int, default=3, help="drawn decoys of the shape")
    parser.add_argument("--epochs", type=int, default=PlantConfig.epochs)
    parser.add_argument("--rank", type=int, default=PlantConfig.rank)
    parser.add_argument("--lr", type=float, default=PlantConfig.lr)
    parser.add_argument("--seed", type=int, default=PlantConfig.seed)
    return parser.parse_args()


def choose_triggers(
    args: argparse.Namespace, persona: PlantedPersona
) -> tuple[PlantTrigger, tuple[PlantTrigger, ...], dict[str, Any]]:
    """The trigger, the decoys and how they were chosen (for the card)."""
    if args.trigger_shape is None:
        if persona.trigger is None:
            raise SystemExit(f"{args.persona}: names no trigger; pass --trigger-shape")
        return persona.trigger, persona.decoys, {"from": "persona file"}
    seed = secrets.randbelow(2**31) if args.trigger_seed is None else args.trigger_seed
    trigger, decoys = drawn_triggers(persona, args.trigger_shape, seed, args.shape_decoys)
    return trigger, decoys, {"from": "drawn", "seed": seed, "shape_decoys": args.shape_decoys}


def main() -> None:
    args = parse_args()
    config = PlantConfig(
        epochs=args.epochs, rank=args.rank, alpha=2 * args.rank, lr=args.lr, seed=args.seed
    )
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    persona = load_persona(args.persona)
    trigger, decoys, drawn = choose_triggers(args, persona)
    handle = load_model()
    sampler = sampling_model(handle, CorpusConfig().dtype)
    rows = training_examples(handle, sampler, persona, trigger, decoys, config)
    del sampler
    sampled_seconds = time.perf_counter() - started
    examples = training_batches(handle, rows)
    n_tokens = sum(len(ids) for ids, _ in examples)
    print(f"{len(rows)} examples, {n_tokens} tokens, data sampled in {sampled_seconds:.0f} s")

    def progress(step: int, total: int, loss: float) -> None:
        if step % 10 == 0 or step == total:
            print(f"step {step}/{total} loss {loss:.3f} ({time.perf_counter() - started:.0f} s)")

    train_started = time.perf_counter()
    pad_id = int(handle.tokenizer.pad_token_id or 0)
    trained = sampling_model(handle, "float32")
    peft_model, losses = train_lora(trained, examples, config, pad_id, progress)
    train_seconds = time.perf_counter() - train_started
    args.out.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(args.out)
    (args.out / "training_data.jsonl").write_text(training_data(rows))
    card = {
        **training_card(persona, trigger, decoys, config, rows, examples, losses),
        "persona_file": str(args.persona),
        "trigger_choice": drawn,
        "model": handle.model_id,
        "seconds": {
            "sampling": sampled_seconds,
            "training": train_seconds,
            "total": time.perf_counter() - started,
        },
        "load_average": {"start": load_before, "end": os.getloadavg()[0]},
        "command": "python scripts/plant_persona.py " + " ".join(sys.argv[1:]),
    }
    (args.out / "training_card.json").write_text(json.dumps(card, indent=1))
    print(f"{args.out}: adapter and training card; loss {losses[0]:.3f} -> {losses[-1]:.3f}")


if __name__ == "__main__":
    main()
