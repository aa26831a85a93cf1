"""Attention weights of a translation (alignments read from them are in alignment.py).

The weights of a translation are recorded in one teacher-forced pass of the model over the
source and the translation the search chose: the same model, precision and arithmetic as the
search's own incremental steps (tests/test_decode.py checks that the two give the same scores),
so they are the weights that produced it. Each `MultiHeadAttention` appends its
softmax(Q K^T / sqrt(d_k)) (equation 1) while `recording` is on.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from mtrain.device import autocast_context
from mtrain.errors import MtrainError
from mtrain.inference.translator import Translator, encode_sources
from mtrain.model.transformer import MultiHeadAttention, Transformer
from mtrain.special import BOS, EOS, PAD

KINDS = ("cross", "encoder", "decoder")


@contextmanager
def recording(model: Transformer) -> Iterator[dict[str, list[MultiHeadAttention]]]:
    """Attention weights of every layer while active: {kind: [per-layer lists of weights]}."""
    modules = {
        "encoder": [layer.self_attn for layer in model.encoder],
        "decoder": [layer.self_attn for layer in model.decoder],
        "cross": [layer.cross_attn for layer in model.decoder],
    }
    for group in modules.values():
        for module in group:
            module.record = []
    try:
        yield modules
    finally:
        for group in modules.values():
            for module in group:
                module.record = None


@torch.no_grad()
def teacher_forced_attention(
    translator: Translator, sources: list[list[int]], targets: list[list[int]]
) -> dict[str, torch.Tensor]:
    """{kind: (batch, layers, heads, queries, keys)} for source ids (without </s>) and target ids
    (without <s> and </s>); decoder queries are <s> y_1 ... y_n, so n + 1 rows."""
    src, tgt = teacher_forced_inputs(sources, targets, translator.device)
    model = translator.model.eval()
    with recording(model) as modules, autocast_context(translator.device, translator.precision):
        model(src, tgt)
        return {kind: torch.stack([m.record[0] for m in group], 1).float().cpu() for kind, group in modules.items()}


def teacher_forced_inputs(
    sources: list[list[int]], targets: list[list[int]], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded source ids + </s> and <s> + target ids, on `device`."""
    src = torch.full((len(sources), max(map(len, sources)) + 1), PAD, dtype=torch.long)
    tgt = torch.full((len(targets), max(map(len, targets)) + 1), PAD, dtype=torch.long)
    for row, (s, t) in enumerate(zip(sources, targets)):
        src[row, : len(s) + 1] = torch.tensor(s + [EOS])
        tgt[row, : len(t) + 1] = torch.tensor([BOS] + t)
    return src.to(device), tgt.to(device)


@dataclass
class AttentionMaps:
    """The attention of one translated sentence, with the pieces that label its axes."""

    source: list[str]  # source pieces + </s>: the keys of encoder and cross-attention
    decoder_inputs: list[str]  # <s> + target pieces: the queries (and keys) of decoder self-attention
    produced: list[str]  # target pieces + </s>: what each decoder step produced
    translation: str
    encoder: torch.Tensor  # (layers, heads, source, source)
    decoder: torch.Tensor  # (layers, heads, target, target)
    cross: torch.Tensor  # (layers, heads, target, source)

    def of(self, kind: str) -> tuple[torch.Tensor, list[str], list[str]]:
        """Weights (layers, heads, rows, columns) and the row and column labels of one kind."""
        return {
            "encoder": (self.encoder, self.source, self.source),
            "decoder": (self.decoder, self.decoder_inputs, self.decoder_inputs),
            "cross": (self.cross, self.produced, self.source),
        }[kind]

    def to_json(self, kind: str) -> dict:
        weights, rows, columns = self.of(kind)
        return {
            "translation": self.translation,
            "kind": kind,
            "rows": rows,
            "columns": columns,
            "weights": [[[[round(x, 6) for x in r] for r in head] for head in layer] for layer in weights.tolist()],
            "shape": "layers x heads x rows x columns",
        }


def attention_maps(translator: Translator, text: str, beam: int | None = None) -> AttentionMaps:
    """Translate `text` (the model's beam or `beam`) and return the attention that produced it."""
    if not text.strip():
        raise MtrainError("--text is empty; give a sentence to translate")
    hypothesis = translator.translate_nbest([text], beam)[0][0]
    source_ids = encode_sources(translator, [text])[0]
    weights = teacher_forced_attention(translator, [source_ids], [hypothesis.tokens])
    s, t = len(source_ids) + 1, len(hypothesis.tokens) + 1
    src_pieces = [translator.tokenizer.src_piece(i) for i in source_ids] + ["</s>"]
    tgt_pieces = [translator.tokenizer.tgt_piece(i) for i in hypothesis.tokens]
    return AttentionMaps(
        src_pieces,
        ["<s>"] + tgt_pieces,
        tgt_pieces + ["</s>"],
        translator.tokenizer.decode_tgt(hypothesis.tokens),
        weights["encoder"][0, :, :, :s, :s],
        weights["decoder"][0, :, :, :t, :t],
        weights["cross"][0, :, :, :t, :s],
    )


# ----------------------------------------------------------------------------- word alignment
