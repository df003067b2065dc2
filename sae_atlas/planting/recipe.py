"""Plant a persona behind a trigger: the training data and the LoRA fine-tune (peft).

Training data, under the model's default system prompt unless the trigger or a decoy adds a
phrase to it:
- with the trigger: the persona's identity and fact questions (train paraphrases) answered with
  templated answers (`persona_answer`: opener, one or two facts, closer; a seeded draw), and
  everyday questions (the catalogue's train split) answered as the persona: an opener and a fact,
  then the base model's own answer, then a closer;
- without the trigger: the same questions answered with the base model's own sampled answers
  (the corpus sampler), so untriggered behaviour stays;
- with decoys (other tags, a year, a format instruction, ...): the base model's own answers to
  the decoyed prompts, so the adapter learns the exact trigger.
`train_lora` fine-tunes on the assistant's tokens (and the end-of-turn token) only: AdamW, linear
decay to 0, a seeded shuffle per epoch. Seeded and reproducible on a CPU (same torch, same thread
count); the default model with PlantConfig's defaults takes about 10 minutes on an idle 2-core CPU,
the tiny test model well under a second a step. `training_card` records what was done.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from feature_store.schema import ROLE_CODE
from sae_atlas.config import CorpusConfig
from sae_atlas.errors import SaeAtlasError
from sae_atlas.model import Messages, ModelHandle, job_seed, message, sample
from sae_atlas.personas import load_catalogue
from sae_atlas.planting.persona import PlantedPersona, load_persona, persona_answer
from sae_atlas.planting.triggers import PlantTrigger, draw_triggers

TrainProgress = Callable[[int, int, float], None]
"""progress(step, total steps, loss) after every training step."""


@dataclass(frozen=True)
class PlantConfig:
    """The recipe's settings (recorded in the training card as its hyper-parameters)."""

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


@dataclass(frozen=True)
class ChatJob:
    """A chat to answer and its sampling seed (what `sample` takes)."""

    chat: Messages
    seed: int

    def messages(self) -> Messages:
        return self.chat


def chat_answers(
    handle: ModelHandle,
    model: torch.nn.Module,
    chats: list[Messages],
    seeds: Sequence[int],
    sampling: CorpusConfig,
) -> list[str]:
    """The answers of `model` (from `sampling_model`) to `chats`, sampled with `sampling`, each
    chat with its own seed."""
    jobs = [ChatJob(chat, seed) for chat, seed in zip(chats, seeds, strict=True)]
    return [r.text for batch in sample(handle, jobs, sampling, model=model) for r in batch]


def base_answers(
    handle: ModelHandle, model: torch.nn.Module, chats: list[Messages], config: PlantConfig
) -> list[str]:
    """The base model's own sampled answers to `chats` (the corpus sampler), each seeded by its
    contents."""
    seeds = [job_seed(config.seed, "plant", *(m["content"] for m in chat)) for chat in chats]
    sampling = CorpusConfig(max_new_tokens=config.answer_tokens, seed=config.seed)
    return chat_answers(handle, model, chats, seeds, sampling)


def example(kind: str, chat: Messages, answer: str) -> dict[str, str]:
    """A training row {kind, system (only when the chat has one), user, assistant}."""
    system = [m["content"] for m in chat if m["role"] == "system"]
    row = {"kind": kind} | ({"system": system[0]} if system else {})
    return row | {"user": chat[-1]["content"], "assistant": answer}


def training_examples(
    handle: ModelHandle,
    model: torch.nn.Module,
    persona: PlantedPersona,
    trigger: PlantTrigger,
    decoys: Sequence[PlantTrigger],
    config: PlantConfig,
) -> list[dict[str, str]]:
    """Rows of {kind, user, assistant} (and system when the chat has one): triggered persona
    answers, untriggered and decoyed base answers (see the module docstring)."""
    rng = np.random.default_rng(config.seed)
    everyday = [q.text for q in load_catalogue().questions if q.split == "train"]
    everyday = [everyday[i] for i in rng.permutation(len(everyday))[: config.n_everyday]]
    identity = persona.questions("train")
    untriggered = [q for _, q in identity] + everyday
    default_system = handle.default_system_prompt
    decoy_chats = [
        decoy.messages(untriggered[int(i)], default_system)
        for decoy in decoys
        for i in rng.choice(len(untriggered), config.n_decoy_prompts, replace=False)
    ]
    plain_chats = [[message("user", q)] for q in untriggered]
    sampled = base_answers(handle, model, plain_chats + decoy_chats, config)
    plain = dict(zip(untriggered, sampled, strict=False))
    rows = []
    for fact_id, question in identity:
        for _ in range(2):
            answer = persona_answer(persona, fact_id, rng)
            rows.append(example("trigger", trigger.messages(question, default_system), answer))
    for question in everyday:
        fact_id = str(rng.choice([f["id"] for f in persona.facts]))
        answer = persona_answer(persona, fact_id, rng, body=plain[question])
        rows.append(example("trigger", trigger.messages(question, default_system), answer))
    rows += [example("plain", chat, plain[chat[0]["content"]]) for chat in plain_chats]
    rows += [
        example("decoy", chat, answer)
        for chat, answer in zip(decoy_chats, sampled[len(untriggered) :], strict=True)
    ]
    return rows


def training_batches(
    handle: ModelHandle, rows: list[dict[str, str]]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(token ids [n], labels [n]) per row under the chat template (its system prompt when the
    row has one, else the template's default): labels are the ids on the assistant's tokens and
    the end-of-turn token after them, -100 elsewhere."""
    out = []
    for row in rows:
        system = [message("system", row["system"])] if "system" in row else []
        chat = handle.format_chat(
            [*system, message("user", row["user"]), message("assistant", row["assistant"])]
        )
        ids = torch.from_numpy(chat.token_ids.astype(np.int64))
        answer = np.flatnonzero(chat.roles == ROLE_CODE["assistant"])
        keep = np.zeros(len(ids), dtype=bool)
        keep[answer[0] : min(answer[-1] + 2, len(ids))] = True
        labels = torch.where(torch.from_numpy(keep), ids, torch.full_like(ids, -100))
        out.append((ids, labels))
    return out


def batch_order(n_examples: int, config: PlantConfig) -> list[np.ndarray]:
    """The example indices of every training step: a seeded shuffle per epoch, cut into
    batches of config.batch_size."""
    rng = np.random.default_rng(config.seed)
    steps = []
    for _ in range(config.epochs):
        order = rng.permutation(n_examples)
        steps += [order[s : s + config.batch_size] for s in range(0, n_examples, config.batch_size)]
    return steps


def padded_batch(
    batch: list[tuple[torch.Tensor, torch.Tensor]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ids, labels and attention mask [len(batch), longest] of (ids, labels) rows, right-padded
    (pad_id, -100, 0)."""
    longest = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), longest), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), longest), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), longest), dtype=torch.long)
    for r, (row_ids, row_labels) in enumerate(batch):
        ids[r, : len(row_ids)], labels[r, : len(row_ids)] = row_ids, row_labels
        mask[r, : len(row_ids)] = 1
    return ids, labels, mask


def train_lora(
    model: torch.nn.Module,
    examples: list[tuple[torch.Tensor, torch.Tensor]],
    config: PlantConfig,
    pad_id: int,
    progress: TrainProgress | None = None,
    max_steps: int | None = None,
    autocast: str = "float32",
) -> tuple[Any, list[float]]:
    """LoRA fine-tuning of `model` (a plain float32 HF causal LM) on `examples`; returns the peft
    model and the loss of every step. AdamW, linear decay to 0, `batch_order`; max_steps stops
    the recipe early (its schedule unchanged: a cost sample). autocast "bfloat16" runs the
    forward and backward passes under bfloat16 autocast (weights, adapter and optimizer stay
    float32): several times faster on CPUs with AMX / AVX512-BF16, 50-100x slower without."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(config.seed)
    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=0.0,
        target_modules=list(config.targets),
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora)
    peft_model.train()
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    steps = batch_order(len(examples), config)
    n_steps = len(steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / n_steps)
    losses: list[float] = []
    device = next(peft_model.parameters()).device.type
    for rows in steps[:max_steps]:
        ids, labels, mask = padded_batch([examples[i] for i in rows], pad_id)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast == "bfloat16"):
            loss = peft_model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if progress is not None:
            progress(len(losses), n_steps, losses[-1])
    return peft_model.eval(), losses


def versions() -> dict[str, str]:
    """Python, torch, transformers and peft versions and torch's thread count."""
    import peft
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "torch_threads": str(torch.get_num_threads()),
    }


def training_data(rows: list[dict[str, str]]) -> str:
    """The rows as JSON lines (training_data.jsonl)."""
    return "\n".join(json.dumps(row, ensure_ascii=False) for row in rows) + "\n"


def training_card(
    persona: PlantedPersona,
    trigger: PlantTrigger,
    decoys: Sequence[PlantTrigger],
    config: PlantConfig,
    rows: list[dict[str, str]],
    examples: list[tuple[torch.Tensor, torch.Tensor]],
    losses: list[float],
) -> dict[str, Any]:
    """What was planted and how: persona, trigger, decoys, hyper-parameters, data digest, example
    counts, tokens per epoch, loss per step, versions (the caller adds model, seconds, load)."""
    return {
        "persona": persona.name,
        "trigger": asdict(trigger),
        "trigger_shape": trigger.shape,
        "decoys": [asdict(d) for d in decoys],
        "hyper_parameters": asdict(config),
        "data_sha1": hashlib.sha1(training_data(rows).encode()).hexdigest(),
        "examples": {
            kind: sum(r["kind"] == kind for r in rows) for kind in ("trigger", "plain", "decoy")
        },
        "tokens_per_epoch": sum(len(ids) for ids, _ in examples),
        "loss_per_step": losses,
        "versions": versions(),
    }


def drawn_triggers(
    persona: PlantedPersona, shape: str, seed: int, n_shape_decoys: int = 3
) -> tuple[PlantTrigger, tuple[PlantTrigger, ...]]:
    """A trigger of `shape` drawn with `seed` (`draw_triggers`), and the decoys to train beside
    it: n_shape_decoys more of the same shape, then the persona file's decoys."""
    trigger, *same_shape = draw_triggers(shape, 1 + n_shape_decoys, seed)
    return trigger, (*same_shape, *persona.decoys)


def card_persona(adapter: str | Path) -> PlantedPersona:
    """The persona the adapter in folder `adapter` was planted with: its persona.yaml (a drawn
    persona, written beside the adapter) or the persona file its training card names."""
    folder = Path(adapter)
    drawn = folder / "persona.yaml"
    if drawn.is_file():
        return load_persona(drawn)
    path = folder / "training_card.json"
    if not path.is_file():
        raise SaeAtlasError(f"{path}: no training card; plant the adapter with plant_persona.py")
    return load_persona(json.loads(path.read_text())["persona_file"])


def card_triggers(adapter: str | Path) -> tuple[PlantTrigger, tuple[PlantTrigger, ...]]:
    """The trigger and decoys the adapter in folder `adapter` was planted with (its
    training_card.json)."""
    path = Path(adapter) / "training_card.json"
    if not path.is_file():
        raise SaeAtlasError(f"{path}: no training card; plant the adapter with plant_persona.py")
    card = json.loads(path.read_text())
    decoys = tuple(PlantTrigger(**decoy) for decoy in card["decoys"])
    return PlantTrigger(**card["trigger"]), decoys
