"""Sparse autoencoders (sae-lens): load one, identify it, and the architectures sae-atlas trains.

`load_sae(source)` loads a trained SAE from a folder in sae-lens format or a pretrained one from
the sae-lens registry (`release:sae_id`, only from the local Hugging Face cache unless
`allow_download`). `sae_weights` gives its parameters as float32 numpy arrays plus its config as
JSON (what an atlas stores), and `sae_digest` the sha1 of those parameters, named: the SAE's
identity (a labels file records it). `ARCHITECTURES` maps an architecture name to the sae-lens
training config it builds from a TrainConfig. Cost: loading reads the weights once; a digest
hashes every parameter (d_model x d_sae x 2 floats).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sae_lens import SAE
from sae_lens.saes import (
    BatchTopKTrainingSAEConfig,
    JumpReLUTrainingSAEConfig,
    MatryoshkaBatchTopKTrainingSAEConfig,
    StandardTrainingSAEConfig,
    TopKTrainingSAEConfig,
    TrainingSAEConfig,
)

from sae_atlas.config import TrainConfig
from sae_atlas.errors import SaeAtlasError

SaeConfigBuilder = Callable[[TrainConfig, dict[str, Any]], TrainingSAEConfig]


def _matryoshka_widths(config: TrainConfig) -> list[int]:
    if config.matryoshka_widths:
        return list(config.matryoshka_widths)
    return [config.width // 8, config.width // 4, config.width // 2, config.width]


ARCHITECTURES: dict[str, SaeConfigBuilder] = {
    "batchtopk": lambda c, common: BatchTopKTrainingSAEConfig(k=c.k, **common),
    "topk": lambda c, common: TopKTrainingSAEConfig(k=c.k, **common),
    "jumprelu": lambda c, common: JumpReLUTrainingSAEConfig(
        jumprelu_sparsity_loss_mode="quadratic",
        target_l0=c.k,
        l0_coefficient=c.sparsity_coefficient,
        **common,
    ),
    "matryoshka_batchtopk": lambda c, common: MatryoshkaBatchTopKTrainingSAEConfig(
        k=c.k, matryoshka_widths=_matryoshka_widths(c), **common
    ),
    "standard": lambda c, common: StandardTrainingSAEConfig(
        l1_coefficient=c.sparsity_coefficient, **common
    ),
}
"""Architecture name -> the sae-lens training config it builds from a TrainConfig."""


def load_sae(source: str | Path, device: str = "cpu", allow_download: bool = False) -> SAE[Any]:
    """An SAE from a folder in sae-lens format, or from the sae-lens registry as
    `release:sae_id` (only from the local Hugging Face cache unless allow_download)."""
    path = Path(source)
    if path.is_dir():
        if not (path / "cfg.json").is_file():
            raise SaeAtlasError(f"{path}: not an SAE folder in sae-lens format (no cfg.json)")
        return SAE.load_from_disk(path, device=device)
    text = str(source)
    if ":" not in text or path.exists() or text.startswith((".", "/", "~")):
        raise SaeAtlasError(
            f"{source}: not an SAE folder; give a folder with cfg.json and "
            "sae_weights.safetensors, or a sae-lens registry id as release:sae_id"
        )
    release, sae_id = text.split(":", 1)
    from sae_lens.loading.pretrained_saes_directory import (
        get_pretrained_saes_directory,
        get_repo_id_and_folder_name,
    )

    directory = get_pretrained_saes_directory()
    if release not in directory:
        raise SaeAtlasError(f"{release}: not a sae-lens registry release")
    if sae_id not in directory[release].saes_map:
        known = list(directory[release].saes_map)
        raise SaeAtlasError(
            f"{sae_id}: not an SAE of release {release}; it has {', '.join(known[:5])}, ..."
        )
    if not allow_download:
        repo_id, folder_name = get_repo_id_and_folder_name(release, sae_id)
        if not _in_hf_cache(repo_id, folder_name):
            raise SaeAtlasError(
                f"{release}:{sae_id} is not in the local Hugging Face cache ({repo_id}); "
                "it needs a download: pass --allow-download"
            )
    try:
        return SAE.from_pretrained(release, sae_id, device=device)
    except (OSError, ValueError) as error:
        raise SaeAtlasError(f"cannot load {release}:{sae_id}: {error}") from None


def _in_hf_cache(repo_id: str, folder_name: str) -> bool:
    """Whether the cache holds a snapshot of repo_id with files under folder_name."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snapshot = Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return False
    folder = snapshot / folder_name
    return folder.is_dir() and any(folder.iterdir())


def sae_weights(sae: SAE[Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The parameters (float32 numpy, by name) and config (JSON-ready) of a sae-lens SAE."""
    weights = {
        name: value.detach().float().cpu().numpy() for name, value in sae.state_dict().items()
    }
    return weights, json.loads(json.dumps(sae.cfg.to_dict(), default=str))


def sae_digest(sae: SAE[Any]) -> str:
    """sha1 of the SAE's parameters: its identity in a labels file's config."""
    digest = hashlib.sha1()
    for name, tensor in sorted(sae.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()
