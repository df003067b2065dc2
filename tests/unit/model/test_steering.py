from __future__ import annotations

import numpy as np
import pytest
import torch

from sae_atlas.errors import SaeAtlasError
from sae_atlas.model.sampling import sampling_model
from sae_atlas.model.steering import (
    ablate_features,
    add_direction,
    cap_projection,
    intervene,
    matched_random,
    steered,
)

HOOK = "blocks.1.hook_resid_post"
TOKENS = torch.tensor([[5, 6, 7, 8, 9, 10]])


def resid(handle, interventions=()):
    with torch.inference_mode(), intervene(handle, interventions):
        _, cache = handle.bridge.run_with_cache(
            TOKENS, names_filter=[HOOK, "blocks.2.hook_resid_post"]
        )
    return cache[HOOK][0], cache["blocks.2.hook_resid_post"][0]


class LinearSae:
    """A ReLU SAE with known weights: encode(x) = relu(x @ W_enc), decoder W_dec."""

    def __init__(self, d_model: int, d_sae: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.W_enc = torch.randn(d_model, d_sae, generator=generator)
        self.W_dec = torch.randn(d_sae, d_model, generator=generator)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.W_enc)


def test_add_direction_changes_exactly_that_and_is_removed(tiny):
    before, _ = resid(tiny)
    direction = np.zeros(tiny.d_model, dtype=np.float32)
    direction[3] = 2.0
    after, downstream = resid(tiny, [add_direction(HOOK, direction, 5.0)])
    expected = before.clone()
    expected[:, 3] += 5.0
    torch.testing.assert_close(after, expected)
    assert not torch.allclose(downstream, resid(tiny)[1])  # the edit reaches later layers
    torch.testing.assert_close(resid(tiny)[0], before)  # hook removed
    with torch.inference_mode():
        logits = tiny.hf_model(TOKENS).logits
        with intervene(tiny, [add_direction(HOOK, direction, 5.0)]):
            steered = tiny.hf_model(TOKENS).logits  # the HF model's own forward is hooked too
    assert not torch.allclose(logits, steered)


def test_hooks_are_removed_after_an_error(tiny):
    before, _ = resid(tiny)
    with pytest.raises(RuntimeError), intervene(tiny, [add_direction(HOOK, np.ones(32), 1.0)]):
        raise RuntimeError("boom")
    torch.testing.assert_close(resid(tiny)[0], before)


def test_cap_projection_only_moves_along_the_axis(tiny):
    before, _ = resid(tiny)
    axis = np.random.default_rng(0).standard_normal(tiny.d_model).astype(np.float32)
    unit = torch.from_numpy(axis / np.linalg.norm(axis))
    projections = before @ unit
    floor = float(projections.median())
    after, _ = resid(tiny, [cap_projection(HOOK, axis, floor=floor)])
    torch.testing.assert_close(after @ unit, projections.clamp(min=floor))
    orthogonal = lambda x: x - (x @ unit)[:, None] * unit  # noqa: E731
    torch.testing.assert_close(orthogonal(after), orthogonal(before), atol=1e-5, rtol=1e-5)


def test_feature_ablation_removes_the_features_contribution(tiny):
    sae = LinearSae(tiny.d_model, 16)
    before, _ = resid(tiny)
    codes = sae.encode(before)
    features = [int(codes.sum(0).argmax()), 3]
    after, _ = resid(tiny, [ablate_features(HOOK, sae, features)])
    expected = before - codes[:, features] @ sae.W_dec[features]
    torch.testing.assert_close(after, expected, atol=1e-5, rtol=1e-5)
    means = np.full(16, 0.5, dtype=np.float32)
    after_mean, _ = resid(tiny, [ablate_features(HOOK, sae, features, "mean", means)])
    expected_mean = before - (codes[:, features] - 0.5) @ sae.W_dec[features]
    torch.testing.assert_close(after_mean, expected_mean, atol=1e-5, rtol=1e-5)
    with pytest.raises(SaeAtlasError, match="feature indices"):
        ablate_features(HOOK, sae, [16])
    with pytest.raises(SaeAtlasError, match="mean activations"):
        ablate_features(HOOK, sae, [1], "mean")


def test_matched_random_control_and_bad_inputs(tiny):
    direction = np.arange(32, dtype=np.float32)
    control = matched_random(direction, seed=1)
    assert np.isclose(np.linalg.norm(control), np.linalg.norm(direction), rtol=1e-5)
    assert abs(np.dot(control, direction)) / np.linalg.norm(direction) ** 2 < 0.5
    assert not np.allclose(control, matched_random(direction, seed=2))
    with pytest.raises(SaeAtlasError, match="non-zero"):
        add_direction(HOOK, np.zeros(32), 1.0)
    wrong = add_direction("blocks.9.hook_resid_post", direction, 1.0)
    with pytest.raises(SaeAtlasError, match="unknown hook point"), intervene(tiny, [wrong]):
        pass


def test_steered_plain_model_matches_the_bridge_and_is_removed(tiny):
    model = sampling_model(tiny, "float32")
    tokens = torch.tensor([[5, 6, 7, 8, 9]])
    kick = [add_direction("blocks.1.hook_resid_post", np.ones(tiny.d_model), 5.0)]
    with torch.inference_mode():
        before = model(tokens).logits
        with steered(tiny, model, kick):
            after = model(tokens).logits
        with intervene(tiny, kick):
            bridged = tiny.hf_model(tokens).logits
        torch.testing.assert_close(model(tokens).logits, before)
    assert not torch.allclose(after, before)
    torch.testing.assert_close(after, bridged, atol=1e-4, rtol=1e-4)
