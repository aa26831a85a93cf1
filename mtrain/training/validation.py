"""Validation loss: the label-smoothed loss, NLL and perplexity per target token of held-out data,
summed over all ranks so the figure is the same for any world size."""

from __future__ import annotations

import dataclasses
import math

import torch

from mtrain import distributed
from mtrain.data.batching import Batch
from mtrain.data.store import PreparedData
from mtrain.device import autocast_context
from mtrain.evaluation.scores import greedy_bleu
from mtrain.inference.translator import Translator
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


def over_directions(results: dict[str, dict]) -> dict:
    """The validation record of one split's results by split name: that split's alone, or with
    several language pairs their unweighted means and each pair's ("directions", by "en-fr")."""
    if len(results) == 1:
        return next(iter(results.values()))
    keys = next(iter(results.values()))
    means = {key: sum(r[key] for r in results.values()) / len(results) for key in keys}
    return {**means, "directions": {name.partition(".")[2]: r for name, r in results.items()}}


def validation_bleu(translator: Translator, data: PreparedData, split: str, is_main: bool) -> float:
    """Greedy BLEU on a validation split (a multilingual model told the split's target language),
    decoded on the main rank and sent to the others."""
    if not is_main:
        return distributed.broadcast_object(None)
    src_lang, tgt_lang = data.split_langs(split)
    translator.config = dataclasses.replace(translator.config, tgt_lang=data.asked_language(split))
    sources, references = (data.raw_text(split, lang) for lang in (src_lang, tgt_lang))
    return distributed.broadcast_object(greedy_bleu(translator, sources, references, tgt_lang=tgt_lang))
