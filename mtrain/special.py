"""The special token ids and pieces every part of mtrain agrees on, without looking anything up.

Sentencepiece models are trained (or checked) with exactly these ids, so the model, the batches,
the decoder and the exported models share them: padding 0, unknown 1, begin 2, end of sentence 3.
A model trained with soft terms (data.augment.terms) also has the term markers as pieces of their
own: `word <t> Wort </t>` in a source says "translate word as Wort".
"""

PAD, UNK, BOS, EOS = 0, 1, 2, 3
TERM_OPEN, TERM_CLOSE = "<t>", "</t>"
# A model trained with tokenizer.case_tags reads a sentence written in UPPER CASE or Title Case as one
# of these pieces and the sentence in sentence case, and writes the piece before its translation.
UPPER_TAG, TITLE_TAG = "<upper>", "<title>"
