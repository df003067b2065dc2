from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from sae_lens.saes import JumpReLUSAE, JumpReLUSAEConfig

from sae_atlas.errors import SaeAtlasError
from sae_atlas.sae import load_sae, sae_digest, sae_weights


def small_sae(seed: int = 0) -> JumpReLUSAE:
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=4, d_sae=6))
    with torch.no_grad():
        for parameter in sae.parameters():
            parameter.copy_(torch.from_numpy(np.random.default_rng(seed).random(parameter.shape)))
    return sae


def test_weights_and_digest_survive_a_save_and_load(tmp_path):
    sae = small_sae()
    weights, config = sae_weights(sae)
    assert weights["W_dec"].dtype == np.float32 and weights["W_dec"].shape == (6, 4)
    assert config["d_sae"] == 6
    sae.save_model(tmp_path)
    loaded = load_sae(tmp_path)
    assert sae_digest(loaded) == sae_digest(sae)
    assert sae_digest(small_sae(seed=1)) != sae_digest(sae)


def test_digest_is_the_sha1_of_names_and_float32_bytes_in_name_order():
    sae = small_sae()
    expected = hashlib.sha1()
    for name, tensor in sorted(sae.state_dict().items()):
        expected.update(name.encode() + tensor.float().numpy().tobytes())
    assert sae_digest(sae) == expected.hexdigest()


def test_load_sae_errors_are_one_line(tmp_path):
    with pytest.raises(SaeAtlasError, match=r"no cfg\.json"):
        load_sae(tmp_path)
    with pytest.raises(SaeAtlasError, match="needs a download"):
        load_sae("gpt2-small-res-jb:blocks.0.hook_resid_pre")
