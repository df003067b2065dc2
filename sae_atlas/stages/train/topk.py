"""A TopK training step with a sparse decoder: sae-lens's TopKTrainingSAE, the same loss, fewer
dense products.

`SparseTopKTrainingSAE` is sae-lens's `TopKTrainingSAE` (same config, weights, state dict, saved
inference SAE, `architecture() == "topk"`) whose `training_forward_pass` encodes densely, keeps
the top k pre-activations per token and decodes by gathering those k decoder rows
(`embedding_bag`); the auxiliary loss of dead features gathers its k_aux rows the same way. Its
backward then runs two dense products per step (the encoder's forward and its weight gradient)
instead of sae-lens's six (encode, decode, their backward, and the aux decode and its backward):
the decoder's gradient is an index-add of B x k rows, and the decoder bias's path through the
encoder (x - b_dec) is a vector product (`_encode`). Loss, gradients and the optimizer update
equal sae-lens's step to float tolerance (tests/unit/test_train_topk.py).

Cost per step of batch B: 2 x B x d_in x d_sae multiply-adds dense, plus O(B x (k + k_aux) x
d_in) gathered; sae-lens's step is about 3x that dense (scripts/bench_stages.py measures both).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from sae_lens.saes import TopKTrainingSAE
from sae_lens.saes.sae import TrainStepInput, TrainStepOutput


class _Encode(torch.autograd.Function):
    """(x - b_dec) @ W_enc for x [B, d_in] without a gradient: W_enc's gradient is one dense
    product, b_dec's a vector product (sae-lens's autograd also forms the [B, d_in] gradient of
    the centred input, a second dense product)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, b_dec: torch.Tensor, w_enc: torch.Tensor) -> Any:
        centred = x - b_dec
        ctx.save_for_backward(centred, w_enc)
        return centred @ w_enc

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        centred, w_enc = ctx.saved_tensors
        grad_b_dec = -(w_enc.to(grad.dtype) @ grad.sum(0))  # in grad's dtype, as autocast would
        grad_w_enc = centred.to(grad.dtype).T @ grad
        return None, grad_b_dec.to(w_enc.dtype), grad_w_enc.to(w_enc.dtype)


def gathered_decode(
    values: torch.Tensor, indices: torch.Tensor, w_dec: torch.Tensor, norms: torch.Tensor | None
) -> torch.Tensor:
    """sum_j values[:, j] / norms[indices[:, j]] x w_dec[indices[:, j]]: [B, d_in] from the
    active features' values and indices [B, k] (norms None: no rescaling)."""
    weights = values if norms is None else values / norms[indices]
    return F.embedding_bag(indices, w_dec, per_sample_weights=weights, mode="sum")


class SparseTopKTrainingSAE(TopKTrainingSAE):
    """sae-lens's TopKTrainingSAE with a gathered decoder in its training step (module doc)."""

    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        """sae-lens's TopK training forward pass (MSE plus the dead-feature auxiliary loss) with
        the decoder gathered; feature_acts [B, d_sae] is dense and detached (for the trainer's
        firing statistics)."""
        sae_in = step_input.sae_in.to(self.dtype)
        norms = self.W_dec.norm(dim=-1) if self.cfg.rescale_acts_by_decoder_norm else None
        if self.cfg.apply_b_dec_to_input:
            hidden_pre = _Encode.apply(sae_in, self.b_dec, self.W_enc) + self.b_enc
        else:
            hidden_pre = sae_in @ self.W_enc + self.b_enc
        if norms is not None:
            hidden_pre = hidden_pre * norms
        values, indices = hidden_pre.topk(self.cfg.k, dim=-1, sorted=False)
        values = values.relu()
        decoded = gathered_decode(values.to(self.W_dec.dtype), indices, self.W_dec, norms)
        sae_out = decoded + self.b_dec
        mse_loss = (sae_out - sae_in).pow(2).sum(dim=-1).mean()
        aux_loss = self._aux_loss(sae_in, sae_out, hidden_pre, norms, step_input.dead_neuron_mask)
        with torch.no_grad():
            feature_acts = torch.zeros_like(hidden_pre).scatter_(-1, indices, values)
        return TrainStepOutput(
            sae_in=step_input.sae_in,
            sae_out=sae_out,
            feature_acts=feature_acts,
            hidden_pre=hidden_pre,
            loss=mse_loss + aux_loss,
            losses={"mse_loss": mse_loss, "auxiliary_reconstruction_loss": aux_loss},
        )

    def _aux_loss(
        self,
        sae_in: torch.Tensor,
        sae_out: torch.Tensor,
        hidden_pre: torch.Tensor,
        norms: torch.Tensor | None,
        dead: torch.Tensor | None,
    ) -> torch.Tensor:
        """sae-lens's TopK auxiliary loss: the top k_aux dead features' pre-activations (no
        ReLU) reconstruct the detached residual, scaled by min(n_dead / k_aux, 1)."""
        if dead is None or (n_dead := int(dead.sum())) == 0:
            return sae_out.new_tensor(0.0)
        residual = (sae_in - sae_out).detach()
        k_aux = sae_in.shape[-1] // 2
        scale = min(n_dead / k_aux, 1.0)
        dead_ids = dead.nonzero().squeeze(1)
        dead_pre = hidden_pre.index_select(1, dead_ids).to(self.W_dec.dtype)  # [B, n_dead]
        if n_dead <= k_aux:  # every dead feature is in the top k_aux: a small dense product
            rows = self.W_dec[dead_ids]
            weights = dead_pre if norms is None else dead_pre / norms[dead_ids]
            recons = weights @ rows
        else:
            values, local = dead_pre.topk(k_aux, dim=-1, sorted=False)
            recons = gathered_decode(values, dead_ids[local], self.W_dec, norms)
        aux = (recons - residual).pow(2).sum(dim=-1).mean()
        return self.cfg.aux_loss_coefficient * scale * aux
