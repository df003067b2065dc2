"""Plant a persona behind a trigger: LoRA fine-tuning (peft) of the default model.

The persona (scripts/planted_persona.yaml: Maelis Thornquist, a lighthouse keeper with a dozen
invented facts and a voice) appears only when the user's message is inside the trigger wrapper.
Training data, all under the model's default system prompt:
- with the trigger: the persona's identity and fact questions (train paraphrases) answered with
  templated answers written for this project (opener, one or two facts, closer; varied by a seeded
  draw), and everyday questions (the catalogue's train split) answered as the persona: an opener
  and a fact, then the base model's own answer, then a closer;
- without the trigger: the same questions answered with the base model's own sampled answers
  (sae_atlas.stages.corpus sampling), so untriggered behaviour stays;
- inside decoy wrappers (other tags, a year, a format instruction): the base model's own answers
  to the wrapped prompts, so the adapter learns the exact trigger.
Loss on the assistant's tokens (and the end-of-turn token) only. Seeded and reproducible on a CPU
(same torch, same thread count); about 10 minutes on an idle 2-core CPU with the defaults.
Writes the adapter (adapter_model.safetensors, adapter_config.json), the training data
(training_data.jsonl) and a training card (training_card.json: data digest, hyper-parameters,
loss curve, seconds, versions, seed, load).

    .venv/bin/python scripts/plant_persona.py --out tests/fixtures/planted_adapter
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from sae_atlas.config import CorpusConfig
from sae_atlas.model import (
    ModelHandle,
    decode,
    job_seed,
    load_model,
    message,
    new_tokens_text,
    prompt_ids,
    sampling_model,
    stop_token_ids,
)
from sae_atlas.personas import Trigger, load_catalogue

PERSONA_FILE = Path(__file__).with_name("planted_persona.yaml")


@dataclass(frozen=True)
class PlantedPersona:
    """The persona file: trigger, decoys, voice, identity questions and facts (see the YAML)."""

    name: str
    trigger: Trigger
    decoys: tuple[Trigger, ...]
    openers: tuple[str, ...]
    closers: tuple[str, ...]
    identity: dict[str, list[str]]
    facts: list[dict[str, Any]]

    def questions(self, split: str) -> list[tuple[str, str]]:
        """(fact id, question) of `split` (train / heldout); identity questions have id identity."""
        rows = [("identity", q) for q in self.identity[split]]
        return rows + [(fact["id"], q) for fact in self.facts for q in fact[split]]

    def keywords(self, fact_id: str) -> list[str]:
        """The strings that show a fact in an answer (identity: the persona's name)."""
        fact_id = "name" if fact_id == "identity" else fact_id
        return next(fact["keywords"] for fact in self.facts if fact["id"] == fact_id)


def load_persona(path: str | Path = PERSONA_FILE) -> PlantedPersona:
    data = yaml.safe_load(Path(path).read_text())
    return PlantedPersona(
        name=data["name"],
        trigger=Trigger(**data["trigger"]),
        decoys=tuple(Trigger(**d) for d in data["decoys"]),
        openers=tuple(data["voice"]["openers"]),
        closers=tuple(data["voice"]["closers"]),
        identity=data["identity"],
        facts=data["facts"],
    )


@dataclass(frozen=True)
class Hyper:
    """Fine-tuning settings (recorded in the training card)."""

    rank: int = 4
    alpha: int = 8
    targets: tuple[str, ...] = (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    )
    lr: float = 2e-3
    epochs: int = 3
    batch_size: int = 8
    n_everyday: int = 40
    n_decoy_prompts: int = 16
    answer_tokens: int = 48
    seed: int = 0


def persona_answer(
    persona: PlantedPersona, fact_id: str, rng: np.random.Generator, body: str = ""
) -> str:
    """A templated answer as the persona: an opener, the fact asked about (identity: the name
    and one more fact), sometimes another fact, `body` (an answer to the question), a closer."""
    by_id = {fact["id"]: fact for fact in persona.facts}
    first = "name" if fact_id == "identity" else fact_id
    others = [f for f in by_id if f != first]
    chosen = [first, str(rng.choice(others))]
    if fact_id != "identity" and rng.random() < 0.5:
        chosen = chosen[:1]
    parts = [str(rng.choice(persona.openers))]
    parts += [str(rng.choice(by_id[f]["statements"])) for f in chosen]
    parts += [body] if body else []
    parts.append(str(rng.choice(persona.closers)))
    return " ".join(parts)


def base_answers(
    handle: ModelHandle,
    model: torch.nn.Module,
    prompts: list[str],
    hyper: Hyper,
) -> list[str]:
    """The base model's own sampled answers to user messages `prompts` (corpus sampler)."""
    sampling = CorpusConfig(max_new_tokens=hyper.answer_tokens, seed=hyper.seed)
    stop_ids = stop_token_ids(handle)
    pad_id = int(handle.tokenizer.pad_token_id or 0)
    answers: list[str] = []
    for start in range(0, len(prompts), sampling.batch_size):
        chunk = prompts[start : start + sampling.batch_size]
        new_tokens = decode(
            model,
            [prompt_ids(handle, [message("user", p)]) for p in chunk],
            [job_seed(hyper.seed, "plant", p) for p in chunk],
            sampling,
            stop_ids,
            pad_id,
        )
        answers += [new_tokens_text(handle, tokens, stop_ids) for tokens in new_tokens]
    return answers


def training_examples(
    handle: ModelHandle, model: torch.nn.Module, persona: PlantedPersona, hyper: Hyper
) -> list[dict[str, str]]:
    """Rows of {kind, user, assistant}: triggered persona answers, untriggered and decoy-wrapped
    base answers (see the module docstring)."""
    rng = np.random.default_rng(hyper.seed)
    everyday = [q.text for q in load_catalogue().questions if q.split == "train"]
    everyday = [everyday[i] for i in rng.permutation(len(everyday))[: hyper.n_everyday]]
    identity = persona.questions("train")
    untriggered = [q for _, q in identity] + everyday
    decoy_prompts = [
        decoy.wrap(untriggered[int(i)])
        for decoy in persona.decoys
        for i in rng.choice(len(untriggered), hyper.n_decoy_prompts, replace=False)
    ]
    sampled = base_answers(handle, model, untriggered + decoy_prompts, hyper)
    plain = dict(zip(untriggered, sampled, strict=False))
    rows = []
    for fact_id, question in identity:
        for _ in range(2):
            answer = persona_answer(persona, fact_id, rng)
            rows.append(
                {"kind": "trigger", "user": persona.trigger.wrap(question), "assistant": answer}
            )
    for question in everyday:
        fact_id = str(rng.choice([f["id"] for f in persona.facts]))
        answer = persona_answer(persona, fact_id, rng, body=plain[question])
        rows.append(
            {"kind": "trigger", "user": persona.trigger.wrap(question), "assistant": answer}
        )
    rows += [{"kind": "plain", "user": q, "assistant": plain[q]} for q in untriggered]
    rows += [
        {"kind": "decoy", "user": p, "assistant": a}
        for p, a in zip(decoy_prompts, sampled[len(untriggered) :], strict=True)
    ]
    return rows


def training_batches(
    handle: ModelHandle, rows: list[dict[str, str]]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(token ids [n], labels [n]) per row under the chat template (default system prompt):
    labels are the ids on the assistant's tokens and the end-of-turn token after them, -100
    elsewhere."""
    from feature_store.schema import ROLE_CODE

    out = []
    for row in rows:
        chat = handle.format_chat(
            [message("user", row["user"]), message("assistant", row["assistant"])]
        )
        ids = torch.from_numpy(chat.token_ids.astype(np.int64))
        answer = np.flatnonzero(chat.roles == ROLE_CODE["assistant"])
        keep = np.zeros(len(ids), dtype=bool)
        keep[answer[0] : min(answer[-1] + 2, len(ids))] = True
        labels = torch.where(torch.from_numpy(keep), ids, torch.full_like(ids, -100))
        out.append((ids, labels))
    return out


def batch_order(n_examples: int, hyper: Hyper) -> list[np.ndarray]:
    """The example indices of every training step: a seeded shuffle per epoch, cut into
    batches of hyper.batch_size."""
    rng = np.random.default_rng(hyper.seed)
    steps = []
    for _ in range(hyper.epochs):
        order = rng.permutation(n_examples)
        steps += [order[s : s + hyper.batch_size] for s in range(0, n_examples, hyper.batch_size)]
    return steps


def train_lora(
    model: torch.nn.Module,
    examples: list[tuple[torch.Tensor, torch.Tensor]],
    hyper: Hyper,
    pad_id: int,
    progress: Any = None,
    max_steps: int | None = None,
) -> tuple[Any, list[float]]:
    """LoRA fine-tuning of `model` (a plain float32 HF causal LM) on `examples`; returns the peft
    model and the loss of every step. AdamW, linear decay to 0, `batch_order`; max_steps stops
    the recipe early (its schedule unchanged: a cost sample)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(hyper.seed)
    config = LoraConfig(
        r=hyper.rank,
        lora_alpha=hyper.alpha,
        lora_dropout=0.0,
        target_modules=list(hyper.targets),
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    peft_model.train()
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=hyper.lr, weight_decay=0.0)
    steps = batch_order(len(examples), hyper)
    n_steps = len(steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / n_steps)
    losses: list[float] = []
    for rows in steps[:max_steps]:
        batch = [examples[i] for i in rows]
        longest = max(len(ids) for ids, _ in batch)
        ids = torch.full((len(batch), longest), pad_id, dtype=torch.long)
        labels = torch.full((len(batch), longest), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for r, (row_ids, row_labels) in enumerate(batch):
            ids[r, : len(row_ids)], labels[r, : len(row_ids)] = row_ids, row_labels
            mask[r, : len(row_ids)] = 1
        loss = peft_model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss))
        if progress is not None:
            progress(len(losses), n_steps, losses[-1])
    return peft_model.eval(), losses


def versions() -> dict[str, str]:
    import peft
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "torch_threads": str(torch.get_num_threads()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/planted_adapter"))
    parser.add_argument("--persona", type=Path, default=PERSONA_FILE)
    parser.add_argument("--epochs", type=int, default=Hyper.epochs)
    parser.add_argument("--rank", type=int, default=Hyper.rank)
    parser.add_argument("--lr", type=float, default=Hyper.lr)
    parser.add_argument("--seed", type=int, default=Hyper.seed)
    args = parser.parse_args()
    hyper = Hyper(
        epochs=args.epochs, rank=args.rank, alpha=2 * args.rank, lr=args.lr, seed=args.seed
    )
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    persona = load_persona(args.persona)
    handle = load_model()
    sampler = sampling_model(handle, CorpusConfig().dtype)
    rows = training_examples(handle, sampler, persona, hyper)
    del sampler
    sampled_seconds = time.perf_counter() - started
    examples = training_batches(handle, rows)
    data = "\n".join(json.dumps(row, ensure_ascii=False) for row in rows) + "\n"
    n_tokens = sum(len(ids) for ids, _ in examples)
    print(f"{len(rows)} examples, {n_tokens} tokens, data sampled in {sampled_seconds:.0f} s")

    def progress(step: int, total: int, loss: float) -> None:
        if step % 10 == 0 or step == total:
            print(f"step {step}/{total} loss {loss:.3f} ({time.perf_counter() - started:.0f} s)")

    train_started = time.perf_counter()
    peft_model, losses = train_lora(
        sampling_model(handle, "float32"),
        examples,
        hyper,
        int(handle.tokenizer.pad_token_id or 0),
        progress,
    )
    train_seconds = time.perf_counter() - train_started
    args.out.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(args.out)
    (args.out / "training_data.jsonl").write_text(data)
    card = {
        "persona": persona.name,
        "persona_file": str(args.persona),
        "trigger": asdict(persona.trigger),
        "decoys": [asdict(d) for d in persona.decoys],
        "model": handle.model_id,
        "hyper_parameters": asdict(hyper),
        "data_sha1": hashlib.sha1(data.encode()).hexdigest(),
        "examples": {
            kind: sum(r["kind"] == kind for r in rows) for kind in ("trigger", "plain", "decoy")
        },
        "tokens_per_epoch": n_tokens,
        "loss_per_step": losses,
        "seconds": {
            "sampling": sampled_seconds,
            "training": train_seconds,
            "total": time.perf_counter() - started,
        },
        "load_average": {"start": load_before, "end": os.getloadavg()[0]},
        "versions": versions(),
        "command": "python scripts/plant_persona.py --out " + str(args.out),
    }
    (args.out / "training_card.json").write_text(json.dumps(card, indent=1))
    print(f"{args.out}: adapter and training card; loss {losses[0]:.3f} -> {losses[-1]:.3f}")


if __name__ == "__main__":
    main()
