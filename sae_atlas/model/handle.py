"""A loaded chat model and its chat formatting: token ids with a role per token.

`ModelHandle` holds the TransformerLens `TransformerBridge`, the tokenizer and the model id;
`format_chat` turns messages into token ids plus a role per token (system, user, assistant,
template) derived from the tokenizer's own chat template, `format_plain` the same text outside
any template. The hook points sae-atlas reads and steers are the residual stream after each block
(`resid_hook`, `hook_layer`: the one place that spells their names). Costs one tokenizer call per
chat; `sae_atlas.model.loading` builds a handle.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from feature_store.schema import ROLE_CODE
from sae_atlas.errors import SaeAtlasError
from sae_atlas.model.dtype import DtypeChoice, given_dtype

Message = Mapping[str, str]
Messages = list[dict[str, str]]
_SENTINEL = "\x00SAE_ATLAS_SYSTEM\x00"
_RESID_HOOK = re.compile(r"blocks\.(\d+)\.hook_resid_post")


def message(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def resid_hook(layer: int) -> str:
    """Name of the residual stream after block `layer`."""
    return f"blocks.{layer}.hook_resid_post"


def hook_layer(hook: str) -> int | None:
    """The block index of residual-stream hook `hook`, or None when it names none."""
    match = _RESID_HOOK.fullmatch(hook)
    return None if match is None else int(match.group(1))


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
        return resid_hook(layer)

    def check_hooks(self, hooks: Sequence[str]) -> list[int]:
        """Layers of `hooks` (block index); SaeAtlasError listing valid names for unknown ones."""
        valid = [self.resid_hook(i) for i in range(self.n_layers)]
        layers = []
        for hook in hooks:
            layer = hook_layer(hook)
            if layer is None or layer >= self.n_layers:
                raise SaeAtlasError(
                    f"unknown hook point {hook!r} for {self.model_id}; valid: "
                    f"{valid[0]} ... {valid[-1]} (layers 0-{self.n_layers - 1})"
                )
            layers.append(layer)
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
