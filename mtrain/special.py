"""The special token ids every part of mtrain agrees on, without looking anything up.

Sentencepiece models are trained (or checked) with exactly these ids, so the model, the batches,
the decoder and the exported models share them: padding 0, unknown 1, begin 2, end of sentence 3.
"""

PAD, UNK, BOS, EOS = 0, 1, 2, 3
