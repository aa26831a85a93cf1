"""Scores through sacreBLEU: detokenized BLEU and chrF with their signatures, and the paper's
tokenized BLEU with compound splitting for comparison with older tables.

Nothing here re-implements BLEU: the numbers are sacrebleu's, so they equal what the
`sacrebleu` command prints for the same files.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

from mtrain.data.sources import read_lines
from mtrain.errors import MtrainError

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


def read_references(paths: list[Path], count: int | None) -> list[list[str]]:
    refs = []
    for path in paths:
        if not Path(path).is_file():
            raise MtrainError(f"reference file not found: {path}")
        lines = read_lines(Path(path))
        if count is not None and len(lines) != count:
            raise MtrainError(
                f"line counts differ: {path} has {len(lines)} lines but the translations have {count}; every file "
                "must have one line per sentence"
            )
        refs.append(lines)
    return refs


def eval_command(
    ref_paths: list[Path],
    hyp: Path | None = None,
    src: Path | None = None,
    translator_options: dict | None = None,
    paper_bleu: bool = False,
    as_json: bool = False,
) -> dict:
    """`mtrain eval-bleu`: score --hyp, or translate --src with a model (`translator_options` for
    `translate.open_engine`: checkpoint or model_dir, engine, beam, ...) and score that."""
    if (hyp is None) == (translator_options is None):
        raise MtrainError("give either --hyp FILE, or a model (--checkpoint CKPT or --model DIR) with --src FILE")
    if hyp is not None:
        if not Path(hyp).is_file():
            raise MtrainError(f"hypothesis file not found: {hyp}")
        hyps = read_lines(Path(hyp))
    else:
        if src is None or not Path(src).is_file():
            raise MtrainError(f"translating needs an existing --src file (got {src})")
        from mtrain.translate import open_engine

        lines = read_lines(Path(src))
        read_references(ref_paths, len(lines))  # fail before translating, not after
        hyps = open_engine(**translator_options).translate(lines)
    if not hyps:
        raise MtrainError("there is nothing to score: the translations are empty (0 lines)")
    result = corpus_scores(hyps, read_references(ref_paths, len(hyps)), paper_bleu)
    if as_json:
        print(json.dumps(result))
    else:
        print(result["bleu_detail"].split(" = ", 1)[0] + f" = {result['bleu']:.2f}  {result['bleu_signature']}")
        print(f"  {result['bleu_detail']}")
        print(f"chrF2 = {result['chrf']:.2f}  {result['chrf_signature']}")
        if paper_bleu:
            print(f"paper-style tokenized BLEU (13a + compound splitting) = {result['paper_bleu']:.2f}")
    return result
