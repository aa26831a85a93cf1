"""Markup through a model (`translate --format html|xml`): every segment of every document is
translated in one batch, the word alignment of each translation is read from the cross-attention
(insight/alignment.py), and data/markup.py puts the tags back around the aligned target words."""

from __future__ import annotations

from mtrain.data.markup import Links, translate_markup
from mtrain.errors import MtrainError
from mtrain.inference.ensemble import Ensemble
from mtrain.inference.translator import Translator
from mtrain.insight.alignment import alignments, default_alignment_layer


class MarkupTranslator:
    """`markup(documents)` -> the documents translated, their markup kept (`fmt`: html or xml)."""

    def __init__(self, translator: object, fmt: str, layer: int = 0, beam: int | None = None):
        if not isinstance(translator, Translator):
            raise MtrainError(
                f"--format {fmt} needs the torch engine (it aligns words through mtrain's cross-attention); drop "
                "--engine ctranslate2 / --model"
            )
        self.translator, self.fmt, self.beam = translator, fmt, beam
        self.aligning = translator  # an ensemble aligns through its first member's attention
        if isinstance(translator.model, Ensemble):
            first = translator.model.members[0]
            self.aligning = Translator(
                first, translator.tokenizer, translator.config, translator.device, translator.precision
            )
        self.layer = layer or default_alignment_layer(len(self.aligning.model.decoder))

    def __call__(self, documents: list[str]) -> list[str]:
        return translate_markup(documents, self.fmt, self.aligned_translations)

    def aligned_translations(self, texts: list[str]) -> list[tuple[str, Links]]:
        """Each text's best translation and its word alignment (source word, target word)."""
        targets = [hyps[0].tokens for hyps in self.translator.translate_nbest(texts, beam=self.beam)]
        links = alignments(self.aligning, texts, targets, self.layer, cover_source=True)
        return [(self.translator.tokenizer.decode_tgt(t), found) for t, found in zip(targets, links)]
