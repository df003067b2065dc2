"""A TopK training step with a sparse backward: sae-lens's TopKTrainingSAE, the same loss, one
dense product per step.

`SparseTopKTrainingSAE` is sae-lens's `TopKTrainingSAE` (same config, weights, state dict, saved
inference SAE, `architecture() == "topk"`) whose `training_forward_pass` encodes densely, keeps
the top k pre-activations per token (and the dead features' top k_aux for the auxiliary loss)
and decodes by gathering those decoder rows (`embedding_bag`; a small dense product when every
dead feature reconstructs). Gradients reach only the selected entries (`_TopKEncode`), so the
encoder's weight gradient is a sparse product (dense when many features are dead), the
decoder's an index-add of B x k rows, and the decoder bias's path through the encoder a vector
product: one dense product per step (the encoder's forward) instead of sae-lens's six (encode,
decode, their backward) to nine (the aux decode and its backward). Loss, gradients and the
optimizer update equal sae-lens's step to float tolerance (tests/unit/test_train_topk.py).

Cost per step of batch B: B x d_in x d_sae multiply-adds dense, plus O(B x (k + k_aux) x d_in)
gathered or sparse; about 0.4-0.5 of sae-lens's step on the 2-core CPU (scripts/bench_stages.py).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from sae_lens.saes import TopKTrainingSAE
from sae_lens.saes.sae import TrainStepInput, TrainStepOutput

SPARSE_BACKWARD_SHARE = 32
"""The encoder's weight gradient is a sparse product while a row has at most d_sae /
SPARSE_BACKWARD_SHARE selected entries (top k plus dead features), else a dense one (measured
on the 2-core CPU: a sparse product of 32 entries per row takes 0.4 of the dense one)."""


class _TopKEncode(torch.autograd.Function):
    """The TopK encoder with a sparse backward: hidden_pre [B, d_sae] = ((x - b_dec) @ W_enc +
    b_enc) x norms, its top k per row (values and indices [B, k]) and, given the dead features'
    indices, their top k_aux (all of them when fewer: [B, min(n_dead, k_aux)]).

    Gradients reach only the selected entries, so the backward is sparse: W_enc's gradient is a
    sparse-dense product of B x (k + k_aux) entries, b_enc's and the norms' index-adds, b_dec's a
    vector product; x gets none. Forward values equal sae-lens's encoder bit for bit."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        b_dec: torch.Tensor | None,
        w_enc: torch.Tensor,
        b_enc: torch.Tensor,
        norms: torch.Tensor | None,
        k: int,
        dead_ids: torch.Tensor | None,
        k_aux: int,
    ) -> tuple[torch.Tensor, ...]:
        centred = x if b_dec is None else x - b_dec
        raw = (centred @ w_enc).to(b_enc.dtype) + b_enc  # under autocast: one fast cast, not a
        # mixed-dtype add (the same values: bfloat16 promotes exactly)
        hidden_pre = raw if norms is None else raw * norms
        values, indices = hidden_pre.topk(k, dim=-1, sorted=False)
        aux_indices = indices[:, :0]
        if dead_ids is not None:
            aux_values = hidden_pre.index_select(1, dead_ids)
            aux_indices = dead_ids.expand(len(x), -1)
            if len(dead_ids) > k_aux:
                aux_values, local = aux_values.topk(k_aux, dim=-1, sorted=False)
                aux_indices = dead_ids[local]
        else:
            aux_values = values[:, :0]
        chosen = torch.cat([indices, aux_indices], dim=1)
        ctx.save_for_backward(centred, w_enc, norms, raw.gather(1, chosen), chosen)
        ctx.has_b_dec = b_dec is not None
        ctx.mark_non_differentiable(indices, aux_indices, hidden_pre)
        return values, indices, aux_values, aux_indices, hidden_pre

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor | None) -> Any:  # type: ignore[override]
        centred, w_enc, norms, raw_chosen, chosen = ctx.saved_tensors
        grad_values, _, grad_aux, _, _ = grads
        assert grad_values is not None and grad_aux is not None  # materialized by autograd
        grad_pre = torch.cat([grad_values, grad_aux], dim=1).to(w_enc.dtype)  # [B, k + k_aux]
        flat = chosen.flatten()
        d_sae = w_enc.shape[1]
        grad_norms = None
        if norms is not None:
            grad_norms = grad_pre.new_zeros(d_sae).index_add_(
                0, flat, (grad_pre * raw_chosen.to(grad_pre.dtype)).flatten()
            )
            grad_pre = grad_pre * norms[chosen]
        grad_b_enc = grad_pre.new_zeros(d_sae).index_add_(0, flat, grad_pre.flatten())
        rows = torch.arange(len(chosen), device=chosen.device).repeat_interleave(chosen.shape[1])
        if chosen.shape[1] * SPARSE_BACKWARD_SHARE <= d_sae:
            sparse = torch.sparse_coo_tensor(
                torch.stack([flat, rows]),
                grad_pre.flatten(),
                (d_sae, len(chosen)),
                check_invariants=False,
            )
            grad_w_enc = torch.sparse.mm(sparse, centred.to(grad_pre.dtype)).T.contiguous()
        else:  # many dead features: one dense product beats a sparse one this full
            dense = grad_pre.new_zeros(len(chosen), d_sae)
            dense.index_put_((rows, flat), grad_pre.flatten(), accumulate=True)
            grad_w_enc = centred.to(grad_pre.dtype).T @ dense
        grad_b_dec = -(w_enc @ grad_b_enc) if ctx.has_b_dec else None
        return None, grad_b_dec, grad_w_enc, grad_b_enc, grad_norms, None, None, None


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
        a sparse encoder backward and a gathered decoder; feature_acts [B, d_sae] is dense and
        detached (for the trainer's firing statistics)."""
        sae_in = step_input.sae_in.to(self.dtype)
        norms = self.W_dec.norm(dim=-1) if self.cfg.rescale_acts_by_decoder_norm else None
        dead = step_input.dead_neuron_mask
        n_dead = 0 if dead is None else int(dead.sum())
        k_aux = sae_in.shape[-1] // 2
        values, indices, aux_values, aux_indices, hidden_pre = _TopKEncode.apply(
            sae_in,
            self.b_dec if self.cfg.apply_b_dec_to_input else None,
            self.W_enc,
            self.b_enc,
            norms,
            self.cfg.k,
            dead.nonzero().squeeze(1) if dead is not None and n_dead else None,
            k_aux,
        )
        values = values.relu().to(self.W_dec.dtype)
        sae_out = gathered_decode(values, indices, self.W_dec, norms) + self.b_dec
        mse_loss = (sae_out - sae_in).pow(2).sum(dim=-1).mean()
        aux_loss = sae_out.new_tensor(0.0)
        if n_dead:  # sae-lens's TopK auxiliary loss: dead features reconstruct the residual
            residual = (sae_in - sae_out).detach()
            aux_values = aux_values.to(self.W_dec.dtype)
            if n_dead <= k_aux:  # every dead feature reconstructs: a small dense product
                dead_ids = aux_indices[0]
                weights = aux_values if norms is None else aux_values / norms[dead_ids]
                aux_out = weights @ self.W_dec[dead_ids]
            else:
                aux_out = gathered_decode(aux_values, aux_indices, self.W_dec, norms)
            scale = min(n_dead / k_aux, 1.0)
            aux = (aux_out - residual).pow(2).sum(dim=-1).mean()
            aux_loss = self.cfg.aux_loss_coefficient * scale * aux
        with torch.no_grad():
            feature_acts = values.new_zeros(hidden_pre.shape).scatter_(-1, indices, values)
        return TrainStepOutput(
            sae_in=step_input.sae_in,
            sae_out=sae_out,
            feature_acts=feature_acts,
            hidden_pre=hidden_pre,
            loss=mse_loss + aux_loss,
            losses={"mse_loss": mse_loss, "auxiliary_reconstruction_loss": aux_loss},
        )
