"""Markup through a model (`translate --format html|xml`): every segment of every document is
translated in one batch, the word alignment of each translation is read from the cross-attention
(insight/alignment.py), and data/markup.py puts the tags back around the aligned target words."""

from __future__ import annotations

from mtrain.data.alignments import Links
from mtrain.data.markup import translate_markup
from mtrain.errors import MtrainError
from mtrain.inference.ensemble import Ensemble
from mtrain.inference.translator import Translator
from mtrain.insight.alignment import alignment_source, alignments


class MarkupTranslator:
    """`markup(documents)` -> the documents translated, their markup kept (`fmt`: html or xml).
    The torch engine aligns through the cross-attention of `layer` (an ensemble: of its first
    member); CTranslate2 through the attention it returns (`translate_aligned`)."""

    def __init__(self, translator: object, fmt: str, layer: int = 0, beam: int | None = None):
        self.translator, self.fmt, self.beam = translator, fmt, beam
        self.aligning: Translator | None = None  # CTranslate2 aligns by itself
        if not isinstance(translator, Translator):
            if layer:
                raise MtrainError(
                    "--alignment-layer reads mtrain's own model; CTranslate2 aligns with its exported one"
                )
            return
        self.aligning = translator
        if isinstance(translator.model, Ensemble):
            t = translator
            self.aligning = Translator(t.model.members[0], t.tokenizer, t.config, t.device, t.precision, t.info)
        self.layer, self.head = alignment_source(self.aligning, layer)

    def __call__(self, documents: list[str]) -> list[str]:
        return translate_markup(documents, self.fmt, self.aligned_translations)

    def aligned_translations(self, texts: list[str]) -> list[tuple[str, Links]]:
        """Each text's best translation and its word alignment (source word, target word)."""
        if self.aligning is None:
            return self.translator.translate_aligned(texts, self.beam)
        targets = [hyps[0].tokens for hyps in self.translator.translate_nbest(texts, beam=self.beam)]
        links = alignments(self.aligning, texts, targets, self.layer, cover_source=True, head=self.head)
        return [(self.translator.tokenizer.decode_tgt(t), found) for t, found in zip(targets, links)]
