"""Validation loss: the label-smoothed loss, NLL and perplexity per target token of held-out data,
summed over all ranks so the figure is the same for any world size."""

from __future__ import annotations

import math

import torch

from mtrain import distributed
from mtrain.data.batching import Batch
from mtrain.device import autocast_context
from mtrain.model.loss import label_smoothed_loss
from mtrain.model.transformer import Transformer


@torch.no_grad()
def validation_loss(
    model: Transformer, batches: list[Batch], label_smoothing: float, device: torch.device, precision: str
) -> dict:
    """{loss, nll, ppl} per target token over this rank's `batches` and every other rank's."""
    model.eval()
    loss_sum = nll_sum = torch.zeros((), dtype=torch.float64, device=device)
    tokens = 0
    for batch in batches:
        batch = batch.to(device)
        with autocast_context(device, precision):
            logits = model(batch.src, batch.tgt_in)
        loss, nll = label_smoothed_loss(logits, batch.tgt_out, label_smoothing)
        loss_sum, nll_sum, tokens = loss_sum + loss, nll_sum + nll, tokens + batch.tgt_tokens
    loss_sum, nll_sum, tokens = distributed.all_reduce_sum([loss_sum.item(), nll_sum.item(), tokens], device)
    return {"loss": loss_sum / tokens, "nll": nll_sum / tokens, "ppl": math.exp(min(nll_sum / tokens, 50))}
