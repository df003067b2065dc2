from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from sae_lens.saes import TopKTrainingSAE, TopKTrainingSAEConfig
from sae_lens.saes.sae import TrainStepInput
from sae_lens.training.sae_trainer import SAETrainer

from sae_atlas.config import TrainConfig
from sae_atlas.stages.train import topk, trainer_config
from sae_atlas.stages.train.topk import SparseTopKTrainingSAE

D_IN, D_SAE, K, BATCH = 16, 64, 4, 32


def twin_saes(**settings) -> tuple[TopKTrainingSAE, SparseTopKTrainingSAE]:
    """sae-lens's TopK training SAE and ours with the same weights (a non-zero decoder bias)."""
    torch.manual_seed(0)
    reference = TopKTrainingSAE(TopKTrainingSAEConfig(k=K, d_in=D_IN, d_sae=D_SAE, **settings))
    with torch.no_grad():
        reference.b_dec.normal_()
        reference.b_enc.normal_(std=0.1)
    ours = SparseTopKTrainingSAE(TopKTrainingSAEConfig(k=K, d_in=D_IN, d_sae=D_SAE, **settings))
    ours.load_state_dict(reference.state_dict())
    return reference, ours


def dead_mask(n_dead: int) -> torch.Tensor | None:
    if n_dead == 0:
        return None
    mask = torch.zeros(D_SAE, dtype=torch.bool)
    mask[torch.randperm(D_SAE, generator=torch.Generator().manual_seed(1))[:n_dead]] = True
    return mask


def forward_backward(sae, batch, dead):
    sae.zero_grad()
    output = sae.training_forward_pass(
        TrainStepInput(batch, {}, dead, n_training_steps=0, is_logging_step=False)
    )
    output.loss.backward()
    return output, {name: p.grad.clone() for name, p in sae.named_parameters()}


# k_aux = D_IN // 2 = 8: no dead feature, fewer dead than k_aux (all of them reconstruct), more;
# the encoder's weight gradient as a sparse product (share 1) and as a dense one (share 1000)
@pytest.mark.parametrize("n_dead", [0, 5, 40])
@pytest.mark.parametrize("settings", [{}, {"rescale_acts_by_decoder_norm": False}])
@pytest.mark.parametrize("share", [1, 1000])
def test_loss_and_gradients_equal_sae_lens(n_dead, settings, share, monkeypatch):
    monkeypatch.setattr(topk, "SPARSE_BACKWARD_SHARE", share)
    reference, ours = twin_saes(**settings)
    batch = torch.randn(BATCH, D_IN, generator=torch.Generator().manual_seed(2)) * 3
    expected, expected_grads = forward_backward(reference, batch, dead_mask(n_dead))
    got, got_grads = forward_backward(ours, batch, dead_mask(n_dead))
    assert (got.losses["auxiliary_reconstruction_loss"] > 0) == (n_dead > 0)
    for name, value in expected.losses.items():
        torch.testing.assert_close(got.losses[name], value, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.loss, expected.loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.sae_out, expected.sae_out, rtol=1e-5, atol=1e-5)
    assert torch.equal(got.feature_acts, expected.feature_acts)
    for name, grad in expected_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-4, atol=1e-5)


def test_trainer_steps_equal_sae_lens():
    """Twenty SAETrainer steps (Adam, clipping, dead-feature tracking with a 3-step window, so
    the auxiliary loss runs) leave the same weights and the same firing statistics."""
    config = TrainConfig(
        architecture="topk", width=D_SAE, k=K, batch_size=BATCH, training_tokens=BATCH * 20
    )
    settings = replace(trainer_config(config), dead_feature_window=3)
    trainers = [SAETrainer(settings, sae, data_provider=iter(())) for sae in twin_saes()]
    generator = torch.Generator().manual_seed(3)
    aux_losses = []
    for _ in range(20):
        batch = torch.randn(BATCH, D_IN, generator=generator)
        outputs = [trainer.step(batch) for trainer in trainers]
        for trainer in trainers:
            trainer.n_training_steps += 1
        torch.testing.assert_close(outputs[1].loss, outputs[0].loss, rtol=1e-4, atol=1e-4)
        aux_losses.append(outputs[1].losses["auxiliary_reconstruction_loss"].detach().item())
    assert max(aux_losses) > 0
    reference, ours = (trainer.sae.state_dict() for trainer in trainers)
    for name, value in reference.items():
        torch.testing.assert_close(ours[name], value, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(trainers[1].act_freq_scores, trainers[0].act_freq_scores)


def test_bfloat16_autocast_runs_close_to_sae_lens():
    reference, ours = twin_saes()
    batch = torch.randn(BATCH, D_IN, generator=torch.Generator().manual_seed(4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected, expected_grads = forward_backward(reference, batch, dead_mask(40))
        got, got_grads = forward_backward(ours, batch, dead_mask(40))
    torch.testing.assert_close(got.loss, expected.loss, rtol=2e-2, atol=1e-2)
    for name, grad in expected_grads.items():
        assert got_grads[name].dtype == grad.dtype
        assert float((got_grads[name] - grad).norm() / grad.norm()) < 0.05
