"""Ensemble decoding: several models that share one vocabulary, searched as one model.

Independently trained models make partly independent errors, so averaging their predictions gains
BLEU reliably (Sutskever et al. 2014 ensembled five LSTMs; WMT systems still do; averaging the
checkpoints of one run, the paper's section 6.1, is the cheap relative). At every decoding step each member
gives its next-token distribution and the ensemble's is their mean,
p(y_t | y_<t, x) = 1/N sum_i p_i(y_t | y_<t, x), as fairseq's EnsembleModel computes it (in log
space: logsumexp of the members' log-probabilities minus log N). The search itself does not change:
`Ensemble` offers the decoding interface of `Transformer` (encode, cross_attention_memory,
decoder, decode_step), so greedy, beam search and sampling run on it as on one model. Each member
keeps its own encoder output, cross-attention memory and self-attention caches; members may differ
in shape, but not in vocabulary (the token ids must mean the same pieces).
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from mtrain.model.transformer import KVCache, MemoryKV, Transformer


class Ensemble(nn.Module):
    def __init__(self, members: list[Transformer]):
        super().__init__()
        self.members = nn.ModuleList(members)
        # The output length limit must hold for every member's position encodings.
        self.config = dataclasses.replace(members[0].config, max_positions=min(m.config.max_positions for m in members))
        # One cache per decoder layer of every member, in member order (decode_step splits them again).
        self.decoder = [layer for m in members for layer in m.decoder]

    def encode(self, src: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Every member's encoder output, and the padding mask (the same for all: it depends on `src` only)."""
        encoded = [m.encode(src) for m in self.members]
        return [memory for memory, _ in encoded], encoded[0][1]

    def cross_attention_memory(self, memories: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The cross-attention keys/values of every decoder layer of every member, in member order."""
        return [kv for m, memory in zip(self.members, memories) for kv in m.cross_attention_memory(memory)]

    def decode_step(
        self, tokens: torch.Tensor, memory_kv: list[MemoryKV], src_mask: torch.Tensor, caches: list[KVCache], step: int
    ) -> torch.Tensor:
        """log(1/N sum_i p_i): the log of the members' mean next-token probability (batch, tgt_vocab)."""
        logps, start = [], 0
        for m in self.members:
            layers = slice(start, start + len(m.decoder))
            logps.append(m.decode_step(tokens, memory_kv[layers], src_mask, caches[layers], step))
            start = layers.stop
        return torch.logsumexp(torch.stack(logps), dim=0) - math.log(len(logps))
