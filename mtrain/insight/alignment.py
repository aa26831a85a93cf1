"""Word alignments read from cross-attention, in Pharaoh format, and their error rate (AER).

Word alignment (as fairseq's --print-alignment and the aligners' Pharaoh format `i-j`): average a
decoder layer's cross-attention over heads, read for each target subword the row of the step that
produced it (or, `shift`, the next step's row, whose query has seen the word: Chen et al., 2020;
measured worse here),
sum over each source word's subwords, average over each target word's subwords, and link each
target word to the source word it attends to most. The layer and the row choice were picked by
alignment error rate on the demo corpus, whose generator knows the gold alignment
(docs/guides/inside.md).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mtrain.data.tokenizer import word_numbers
from mtrain.device import autocast_context
from mtrain.errors import MtrainError
from mtrain.inference.ensemble import Ensemble
from mtrain.inference.translator import Translator, encode_sources
from mtrain.insight.attention import teacher_forced_inputs

ALIGNMENT_SHIFT = False  # chosen by AER on the demo corpus (docs/guides/inside.md)


def default_alignment_layer(decoder_layers: int) -> int:
    """The layer whose cross-attention aligns best (1-based): the last one, by AER on the demo
    corpus with 2- and 3-layer decoders (docs/guides/inside.md: earlier layers and shifted rows were far worse)."""
    return decoder_layers


def alignment_source(translator: Translator, layer: int = 0) -> tuple[int, int | None]:
    """(layer from 1, head or None for the mean of the heads) to align with: `layer` when given (all
    its heads), else the guided head of a model trained with train.guided_alignment, else the
    last layer's mean. An ensemble aligns through its first member."""
    model = translator.model
    layers = len(model.members[0].decoder if isinstance(model, Ensemble) else model.decoder)
    guided = translator.info.get("alignment_head")
    if layer:
        check_layer(layer, layers)
        return layer, None
    if guided:
        return guided["layer"], guided["head"]
    return default_alignment_layer(layers), None


def check_layer(layer: int, layers: int) -> None:
    if not 1 <= layer <= layers:
        raise MtrainError(f"--alignment-layer must be between 1 and the model's {layers} decoder layers, got {layer}")


def align_words(
    cross: torch.Tensor,
    source_pieces: list[str],
    target_pieces: list[str],
    shift: bool = ALIGNMENT_SHIFT,
) -> set[tuple[int, int]]:
    """(source word, target word) links from one layer's cross-attention, head-averaged or one
    head's (rows: <s> y_1 ... y_n queries, columns: source pieces + </s>): each target word linked
    to the source word it attends to most."""
    if not source_pieces or not target_pieces:
        return set()
    by_word = _word_attention(cross, source_pieces, target_pieces, shift)
    return {(int(i), j) for j, i in enumerate(by_word.argmax(1))}


def placement_alignment(
    cross: torch.Tensor, source_pieces: list[str], target_pieces: list[str]
) -> tuple[set[tuple[int, int]], set[tuple[int, int]]]:
    """(sure, fallback) word links to put markup back by (data/placement.py). The attention is
    normalised over the source words (rows) and over the target words (columns), and the geometric
    mean of the two read both ways: a link is sure when the target word attends most to that source
    word and the source word is attended most by that target word (the mutual argmax, SimAlign's
    "Argmax", Jalili Sabet et al., 2020); the fallback links every source word to the target word
    that attends to it most, for elements whose words have no sure link. Chosen by placement
    agreement with eflomal on the Multi30K validation set (docs/trials.md)."""
    if not source_pieces or not target_pieces:
        return set(), set()
    by_word = _word_attention(cross, source_pieces, target_pieces, ALIGNMENT_SHIFT)
    pieces_per_word = torch.bincount(torch.tensor(word_numbers(target_pieces))).float()
    by_word = by_word / pieces_per_word[:, None]  # each target word's mean row
    rows = by_word / by_word.sum(1, keepdim=True).clamp_min(1e-9)
    columns = by_word / by_word.sum(0, keepdim=True).clamp_min(1e-9)
    both = (rows * columns).sqrt()
    forward = {(int(i), j) for j, i in enumerate(both.argmax(1))}
    backward = {(i, int(j)) for i, j in enumerate(both.argmax(0))}
    return forward & backward, backward


def _word_attention(
    cross: torch.Tensor, source_pieces: list[str], target_pieces: list[str], shift: bool
) -> torch.Tensor:
    """Attention summed over each source word's pieces and each target word's pieces (target words x source words)."""
    n = len(target_pieces)
    rows = cross[1 : n + 1] if shift else cross[:n]
    rows = rows[:, : len(source_pieces)].float()  # </s> is no word
    src_words, tgt_words = torch.tensor(word_numbers(source_pieces)), torch.tensor(word_numbers(target_pieces))
    by_source = torch.zeros(n, int(src_words.max()) + 1).index_add_(1, src_words, rows)
    return torch.zeros(int(tgt_words.max()) + 1, by_source.size(1)).index_add_(0, tgt_words, by_source)


def alignments(
    translator: Translator,
    lines: list[str],
    targets: list[list[int]],
    layer: int,
    shift: bool = ALIGNMENT_SHIFT,
    batch_size: int = 64,
    head: int | None = None,
    aligner: Callable | None = None,
) -> list:
    """Word alignments of translations (target ids) of `lines`, from 1-based decoder `layer`: the
    mean of its heads, or `head` alone; `aligner(attention, source pieces, target pieces)` in place
    of align_words (e.g. placement_alignment)."""
    check_layer(layer, len(translator.model.decoder))
    sources = encode_sources(translator, lines)
    align = aligner or (lambda weights, src, tgt: align_words(weights, src, tgt, shift))
    found: list = [align(torch.zeros(0, 0), [], []) for _ in lines]
    todo = [i for i in range(len(lines)) if sources[i] and targets[i]]
    for start in range(0, len(todo), batch_size):
        rows = todo[start : start + batch_size]
        src, tgt = teacher_forced_inputs([sources[r] for r in rows], [targets[r] for r in rows], translator.device)
        with torch.no_grad(), autocast_context(translator.device, translator.precision):
            cross = translator.model.eval().cross_attention(src, tgt, layer).float().cpu()
        for b, r in enumerate(rows):
            src_pieces = [translator.tokenizer.src_piece(i) for i in sources[r]]
            tgt_pieces = [translator.tokenizer.tgt_piece(i) for i in targets[r]]
            weights = cross[b].mean(0) if head is None else cross[b, head]
            found[r] = align(weights, src_pieces, tgt_pieces)
    return found


def diagonal(source_words: int, target_words: int) -> set[tuple[int, int]]:
    """The monotone baseline: target word j linked to the source word at the same relative position."""
    if not source_words or not target_words:
        return set()
    return {(round(j * (source_words - 1) / max(target_words - 1, 1)), j) for j in range(target_words)}


def alignment_error_rate(predicted: list[set], gold: list[set]) -> float:
    """AER (Och and Ney, 2003) with every gold link sure: 1 - 2 |A ∩ S| / (|A| + |S|)."""
    hits = sum(len(a & s) for a, s in zip(predicted, gold))
    total = sum(len(a) + len(s) for a, s in zip(predicted, gold))
    return 1.0 - 2.0 * hits / total if total else 0.0
