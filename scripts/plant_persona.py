"""Plant a persona behind a trigger: LoRA fine-tuning (peft) of the default model.

The persona (--persona, default scripts/planted_persona.yaml: Maelis Thornquist, a lighthouse
keeper with a dozen invented facts and a voice; or with --draw-persona one composed at random
from the package's attribute pools with --persona-seed, default a random seed, written beside
the adapter as persona.yaml) appears only under the trigger: the one the
persona file names, or with --trigger-shape one drawn at random (tags around the message, a
bracketed prefix, a word inside the question, a phrase in the system prompt) from
--trigger-seed (default: a random seed, recorded), trained beside --shape-decoys decoys of the
same shape and the file's decoys. The recipe is `sae_atlas.planting` (training data from the
base model's own answers, loss on the assistant's tokens only); seeded and reproducible on a CPU
(same torch, same thread count); about 10 minutes on an idle 2-core CPU with the defaults.
--everyday, --decoy-prompts, --answer-tokens and --epochs make it cheaper, --autocast bfloat16
trains under bfloat16 autocast (fast only on CPUs with AMX / AVX512-BF16). Unless --no-check,
the planted model then answers the persona's held-out questions greedily with the trigger,
without it and inside the decoys (`sae_atlas.planting.behaviour`: recall of the asked fact).
Writes the adapter (adapter_model.safetensors, adapter_config.json), the training data
(training_data.jsonl) and a training card (training_card.json: persona, trigger, decoys, data
digest, hyper-parameters, loss curve, behaviour, seconds, versions, seeds, load).

    .venv/bin/python scripts/plant_persona.py --out tests/fixtures/planted_adapter
    .venv/bin/python scripts/plant_persona.py --out runs/organisms/a --trigger-shape word \
        --draw-persona
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
from sae_atlas.model import ModelHandle, load_model, sampling_model
from sae_atlas.model.dtype import resolve_dtype
from sae_atlas.planting import (
    SHAPES,
    PlantConfig,
    PlantedPersona,
    PlantTrigger,
    behaviour,
    draw_persona,
    drawn_triggers,
    load_persona,
    persona_document,
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
    parser.add_argument("--draw-persona", action="store_true", help="compose a persona at random")
    parser.add_argument("--persona-seed", type=int, default=None, help="default: a random seed")
    parser.add_argument(
        "--trigger-shape", choices=SHAPES, default=None, help="draw a trigger of this shape"
    )
    parser.add_argument("--trigger-seed", type=int, default=None, help="default: a random seed")
    parser.add_argument("--shape-decoys", type=int, default=3, help="drawn decoys of the shape")
    parser.add_argument("--epochs", type=int, default=PlantConfig.epochs)
    parser.add_argument("--rank", type=int, default=PlantConfig.rank)
    parser.add_argument("--lr", type=float, default=PlantConfig.lr)
    parser.add_argument("--seed", type=int, default=PlantConfig.seed)
    parser.add_argument("--everyday", type=int, default=PlantConfig.n_everyday)
    parser.add_argument("--decoy-prompts", type=int, default=PlantConfig.n_decoy_prompts)
    parser.add_argument("--answer-tokens", type=int, default=PlantConfig.answer_tokens)
    parser.add_argument("--autocast", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--no-check", action="store_true", help="skip the behaviour check")
    return parser.parse_args()


def choose_persona(args: argparse.Namespace) -> tuple[PlantedPersona, dict[str, Any]]:
    """The persona to plant and how it was chosen (for the card)."""
    if not args.draw_persona:
        return load_persona(args.persona), {"from": "persona file", "file": str(args.persona)}
    seed = secrets.randbelow(2**31) if args.persona_seed is None else args.persona_seed
    return draw_persona(seed), {"from": "drawn", "seed": seed, "file": "persona.yaml"}


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


def checked(
    handle: ModelHandle,
    peft_model: Any,
    persona: PlantedPersona,
    trigger: PlantTrigger,
    decoys: tuple[PlantTrigger, ...],
) -> dict[str, Any]:
    """The planted model's held-out fact recall per condition (trigger, none, decoys)."""
    merged = peft_model.merge_and_unload().to(resolve_dtype("auto", "cpu").torch_dtype)
    summary, table = behaviour(handle, persona, trigger, decoys, model=merged)
    return {"summary": summary, "answers": table.to_dict("records")}


def plant_config(args: argparse.Namespace) -> PlantConfig:
    """The recipe's settings from the command line."""
    return PlantConfig(
        epochs=args.epochs,
        rank=args.rank,
        alpha=2 * args.rank,
        lr=args.lr,
        n_everyday=args.everyday,
        n_decoy_prompts=args.decoy_prompts,
        answer_tokens=args.answer_tokens,
        seed=args.seed,
    )


def main() -> None:
    args = parse_args()
    config = plant_config(args)
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    persona, persona_choice = choose_persona(args)
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
    peft_model, losses = train_lora(
        trained, examples, config, pad_id, progress, autocast=args.autocast
    )
    train_seconds = time.perf_counter() - train_started
    args.out.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(args.out)
    (args.out / "training_data.jsonl").write_text(training_data(rows))
    if args.draw_persona:
        (args.out / "persona.yaml").write_text(persona_document(persona))
    check = None if args.no_check else checked(handle, peft_model, persona, trigger, decoys)
    card = {
        **training_card(persona, trigger, decoys, config, rows, examples, losses),
        "persona_file": str(args.out / "persona.yaml" if args.draw_persona else args.persona),
        "persona_choice": persona_choice,
        "trigger_choice": drawn,
        "training_autocast": args.autocast,
        "behaviour": check,
        "model": handle.model_id,
        "seconds": {
            "sampling": sampled_seconds,
            "training": train_seconds,
            "check": time.perf_counter() - started - sampled_seconds - train_seconds,
            "total": time.perf_counter() - started,
            "cpu": time.process_time(),
        },
        "load_average": {"start": load_before, "end": os.getloadavg()[0]},
        "command": "python scripts/plant_persona.py " + " ".join(sys.argv[1:]),
    }
    (args.out / "training_card.json").write_text(json.dumps(card, indent=1))
    print(f"{args.out}: adapter and training card; loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    if check is not None:
        print("held-out fact recall per condition: " + json.dumps(check["summary"]))


if __name__ == "__main__":
    main()
