"""Scores through sacreBLEU: detokenized BLEU and chrF with their signatures, and the paper's
tokenized BLEU with compound splitting for comparison with older tables.

Nothing here re-implements BLEU: the numbers are sacrebleu's, so they equal what the
`sacrebleu` command prints for the same files.
"""

from __future__ import annotations

import re

from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

from mtrain.inference.engine import TranslationEngine

COMPOUND = re.compile(r"(\S)-(\S)")


def corpus_scores(hyps: list[str], refs: list[list[str]], paper_bleu: bool = False) -> dict:
    """BLEU and chrF of `hyps` against one or more reference streams."""
    bleu, chrf = BLEU(), CHRF()
    b, c = bleu.corpus_score(hyps, refs), chrf.corpus_score(hyps, refs)
    result = {
        "bleu": b.score,
        "bleu_signature": str(bleu.get_signature()),
        "bleu_detail": str(b),
        "brevity_penalty": b.bp,
        "length_ratio": b.sys_len / max(b.ref_len, 1),
        "chrf": c.score,
        "chrf_signature": str(chrf.get_signature()),
    }
    if paper_bleu:
        result["paper_bleu"] = paper_style_bleu(hyps, refs)
    return result


def greedy_bleu(translator: TranslationEngine, sources: list[str], references: list[str]) -> float:
    """sacreBLEU of the translator's greedy output (the validation BLEU that training can track)."""
    return corpus_scores(translator.translate(sources, beam=1), [references])["bleu"]


def paper_style_bleu(hyps: list[str], refs: list[list[str]]) -> float:
    """Tokenized BLEU as reported in Vaswani et al. (tensor2tensor's get_ende_bleu.sh): text
    tokenized (here with sacrebleu's 13a tokenizer, close to Moses'), compounds split at
    hyphens ("a-b" -> "a ##AT##-##AT## b"), then plain BLEU on tokens. Not comparable with
    detokenized sacreBLEU; use it only beside older papers' numbers."""
    tokenizer = Tokenizer13a()

    def split(line: str) -> str:
        return COMPOUND.sub(r"\1 ##AT##-##AT## \2", tokenizer(line))

    return (
        BLEU(tokenize="none", force=True)
        .corpus_score([split(h) for h in hyps], [[split(r) for r in ref] for ref in refs])
        .score
    )
