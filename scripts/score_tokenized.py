"""Score a translation the way published Multi30K results are scored: lowercased, punctuation-
normalized, Moses-tokenized BLEU against the tokenized references of the multi30k/dataset
repository (its scripts/task1-tokenize.sh: lowercase.perl | normalize-punctuation.perl -l L |
tokenizer.perl -l L), so mtrain's output can stand beside e.g. Wu et al. (2021) on equal terms.

    python scripts/score_tokenized.py --hyp runs/multi30k-en-de/test.hyp.de \\
        --ref ../shared/data/multi30k/tok/test_2016_flickr.lc.norm.tok.de.gz --lang de

Prints one JSON line: that BLEU, the sacreBLEU detail, and --check-raw's agreement when given (the
raw reference put through the same steps, compared line by line with the tokenized file: a check
that sacremoses reproduces the repository's Perl pipeline).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path


def read(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def tokenize(lines: list[str], lang: str) -> list[str]:
    try:
        from sacremoses import MosesPunctNormalizer, MosesTokenizer
    except ImportError:
        sys.exit("error: the Moses tokenization needs sacremoses: pip install sacremoses")

    normalizer, tokenizer = MosesPunctNormalizer(lang=lang), MosesTokenizer(lang=lang)
    return [tokenizer.tokenize(normalizer.normalize(line.lower()), return_str=True, escape=True) for line in lines]


def main() -> int:
    parser = argparse.ArgumentParser(description="lowercased Moses-tokenized BLEU against tokenized references")
    parser.add_argument("--hyp", type=Path, required=True, help="detokenized system output, one sentence a line")
    parser.add_argument("--ref", type=Path, required=True, help="the tokenized reference (.gz or plain)")
    parser.add_argument("--lang", required=True, help="target language code (de, fr, en)")
    parser.add_argument("--check-raw", type=Path, help="the raw reference: report how many lines tokenize identically")
    args = parser.parse_args()
    from sacrebleu.metrics import BLEU

    hyps, refs = tokenize(read(args.hyp), args.lang), read(args.ref)
    if len(hyps) != len(refs):
        print(f"error: {args.hyp} has {len(hyps)} lines, {args.ref} {len(refs)}", file=sys.stderr)
        return 2
    score = BLEU(tokenize="none", force=True).corpus_score(hyps, [refs])
    result = {"tokenized_lc_bleu": round(score.score, 2), "detail": str(score), "sentences": len(hyps)}
    if args.check_raw:
        same = sum(a == b for a, b in zip(tokenize(read(args.check_raw), args.lang), refs))
        result["raw_reference_lines_reproduced"] = f"{same}/{len(refs)}"
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
