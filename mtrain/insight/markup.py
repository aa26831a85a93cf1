"""Markup through a model (`translate --format html|xml`): every segment of every document is
translated in one batch, the word alignment of each translation is read from the cross-attention
the search recorded as it went (search.py's AttentionRecorder; insight/alignment.py), and
data/markup.py puts the tags back around the aligned target words."""

from __future__ import annotations

from mtrain.data.alignments import Links
from mtrain.data.markup import translate_markup
from mtrain.errors import MtrainError
from mtrain.inference.translator import Translator, encode_sources
from mtrain.insight.alignment import alignment_source, placement_alignment


class MarkupTranslator:
    """`markup(documents)` -> the documents translated, their markup kept (`fmt`: html or xml).
    The torch engine aligns through the cross-attention of `layer` (an ensemble: of its first
    member) recorded during its search; CTranslate2 through the attention it returns (`translate_aligned`)."""

    def __init__(self, translator: object, fmt: str, layer: int = 0, beam: int | None = None):
        self.translator, self.fmt, self.beam = translator, fmt, beam
        self.layer = 0  # 0: CTranslate2 aligns by itself
        if not isinstance(translator, Translator):
            if layer:
                raise MtrainError(
                    "--alignment-layer reads mtrain's own model; CTranslate2 aligns with its exported one"
                )
            return
        self.layer, self.head = alignment_source(translator, layer)

    def __call__(self, documents: list[str]) -> list[str]:
        return translate_markup(documents, self.fmt, self.aligned_translations)

    def aligned_translations(self, texts: list[str]) -> list[tuple[str, Links, Links]]:
        """Each text's best translation and its word alignment (source word, target word): the sure
        and the fallback links of insight/alignment.placement_alignment."""
        if not self.layer:
            return self.translator.translate_aligned(texts, self.beam)
        tokenizer = self.translator.tokenizer
        found = self.translator.translate_attending(texts, self.layer, self.head, self.beam)
        sources = encode_sources(self.translator, texts)
        aligned = []
        for source, best in zip(sources, found):
            pieces = [tokenizer.src_piece(t) for t in source], [tokenizer.tgt_piece(t) for t in best.tokens]
            links = placement_alignment(best.attention, *pieces) if best.attention is not None else (set(), set())
            aligned.append((tokenizer.decode_tgt(best.tokens), *links))
        return aligned
