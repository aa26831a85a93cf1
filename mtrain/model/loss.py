"""The training loss: label-smoothed cross entropy (section 5.4) over the output vocabulary,
computed in row chunks, and guided alignment's loss on one attention head.

The textbook computation (log-softmax of the logits in fp32, gather, mean) allocates five or six
fp32 tensors of the logits' size (positions x vocabulary: 130 MB at 4096 positions and 8000
types) in every step, forward and backward. On a CPU each of them is fresh memory from the
kernel, and zeroing those pages was a large share of the step (docs/benchmarks.md). Here the
forward pass keeps only the log-sum-exp of each row, and the backward pass writes the gradient,
softmax minus the smoothed target, into one tensor of the logits' size, a chunk of rows at a
time: over the logits themselves when the caller has no further use for them (the training step). The result equals
F.cross_entropy(logits, target, ignore_index=PAD, label_smoothing=epsilon, reduction="sum").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.autograd.function import FunctionCtx

from mtrain.special import PAD

if TYPE_CHECKING:
    from mtrain.config import TrainConfig
    from mtrain.data.batching import Batch
    from mtrain.model.transformer import MultiHeadAttention

CHUNK_ELEMENTS = 1 << 21  # fp32 temporaries of at most 8 MB: reused by malloc, never new pages


def label_smoothed_loss(
    logits: torch.Tensor, target: torch.Tensor, epsilon: float, overwrite_logits: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed label-smoothed cross entropy and summed NLL over non-padding targets.

    Smoothing puts epsilon uniformly over the vocabulary (Szegedy et al., 2016), the same
    definition as F.cross_entropy(label_smoothing=epsilon):
    loss = (1 - epsilon) * nll + epsilon * mean over the vocabulary of -log p.
    With `overwrite_logits` the backward pass leaves the gradient in the logits' memory."""
    flat = logits.reshape(-1, logits.size(-1))
    return SmoothedCrossEntropy.apply(flat, target.reshape(-1), epsilon, overwrite_logits)


def _row_chunks(rows: int, vocab: int):
    step = max(1, CHUNK_ELEMENTS // vocab)
    return (slice(start, start + step) for start in range(0, rows, step))


class SmoothedCrossEntropy(torch.autograd.Function):
    """loss and nll (both summed) of logits [N, V] against target [N]; the gradient of the loss
    with respect to logit j of row i is keep_i * (p_ij - (1 - epsilon) * [j = target_i] - epsilon / V).
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx, logits: torch.Tensor, target: torch.Tensor, epsilon: float, overwrite_logits: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rows, vocab = logits.shape
        lse = logits.new_empty(rows, dtype=torch.float32)
        mean_logit = torch.empty_like(lse)
        for chunk in _row_chunks(rows, vocab):
            block = logits[chunk].float()
            lse[chunk] = torch.logsumexp(block, dim=-1)
            mean_logit[chunk] = block.mean(dim=-1)
        keep = (target != PAD).float()
        target_logit = logits.gather(1, target[:, None]).squeeze(1).float()
        nll = ((lse - target_logit) * keep).sum()
        smooth = ((lse - mean_logit) * keep).sum()  # -mean_j log p_j = lse - mean_j logit_j
        ctx.save_for_backward(logits, target, lse, keep)
        ctx.epsilon, ctx.overwrite_logits = epsilon, overwrite_logits
        ctx.mark_non_differentiable(nll)
        return (1 - epsilon) * nll + epsilon * smooth, nll

    @staticmethod
    def backward(ctx: FunctionCtx, grad_loss: torch.Tensor, _grad_nll: torch.Tensor) -> tuple:
        logits, target, lse, keep = ctx.saved_tensors
        epsilon, vocab = ctx.epsilon, logits.size(1)
        row_scale = keep * grad_loss.float()
        grad = logits if ctx.overwrite_logits else torch.empty_like(logits)
        for chunk in _row_chunks(logits.size(0), vocab):
            block = logits[chunk].to(torch.float32, copy=True).sub_(lse[chunk, None]).exp_()  # p
            block.sub_(epsilon / vocab)
            block.scatter_add_(1, target[chunk, None], block.new_full((block.size(0), 1), epsilon - 1))
            grad[chunk] = block.mul_(row_scale[chunk, None])
        return grad, None, None, None


def guided_alignment_loss(attention: torch.Tensor, alignment: torch.Tensor) -> torch.Tensor:
    """Summed cross entropy between the alignment and one head's attention (Garg et al., 2019,
    "Jointly Learning to Align and Translate with Transformer Models", eq. 4; Marian's
    guided-alignment cost "ce"): -sum over target positions t and source positions s of
    A[t, s] log a[t, s], where each row of A holds a target token's links spread evenly over the
    source tokens it is aligned to (rows without links are zero and add nothing). `attention`
    and `alignment`: (batch, target positions, source positions)."""
    return -(alignment * attention.clamp_min(1e-9).log()).sum()


def training_loss(
    module: torch.nn.Module, batch: Batch, train: TrainConfig, guided: MultiHeadAttention | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A micro-batch's summed training loss (label-smoothed, plus the guided head's loss times
    train.guided_alignment.weight when `guided` is given) and its summed NLL."""
    logits = module(batch.src, batch.tgt_in)
    loss, nll = label_smoothed_loss(logits, batch.tgt_out, train.label_smoothing, overwrite_logits=True)
    if guided is not None:
        loss = loss + train.guided_alignment.weight * guided_alignment_loss(guided.guided, batch.align)
    return loss, nll
