"""Alignment error rate of `translate --alignment` on a real test set, against eflomal, one JSON line.

    python scripts/eval_alignment_aer.py --checkpoint runs/multi30k-en-de-guided/checkpoint_avg.pt \
        --src runs/multi30k-en-de-guided/data/test.en.txt --ref runs/multi30k-en-de-guided/data/test.de.txt \
        --corpus data/multi30k/train [--langs en de]

Real data has no gold alignment, so eflomal's symmetrized alignment of the (source, reference)
pairs stands in for it, with a training corpus's pairs beside them for its statistics (lowercased,
both directions, grow-diag-final-and). The model aligns the same pairs: the reference is forced
through the decoder (teacher forcing) and read where `translate --alignment` reads its own output,
the guided head of a model trained with train.guided_alignment, else the last layer's mean of the
heads. Every decoder layer's mean is scored beside it, and the monotone diagonal as a baseline.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mtrain.data.alignments import align_beside  # noqa: E402
from mtrain.data.sources import read_lines, text_file  # noqa: E402
from mtrain.inference.translator import open_translator  # noqa: E402
from mtrain.insight import alignment  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--src", type=Path, required=True)
    parser.add_argument("--ref", type=Path, required=True)
    parser.add_argument("--corpus", required=True, help="A training corpus prefix: PREFIX.SRC(.gz), PREFIX.TGT(.gz).")
    parser.add_argument("--langs", nargs=2, default=("en", "de"))
    args = parser.parse_args()
    sources, references = read_lines(args.src), read_lines(args.ref)
    corpus = [read_lines(text_file(args.corpus, lang)) for lang in args.langs]
    gold = align_beside(sources, references, *corpus)
    translator = open_translator(args.checkpoint, "cpu")
    targets = translator.tokenizer.encode_tgt(references)
    layer, head = alignment.alignment_source(translator)

    def aer(found: list[set[tuple[int, int]]]) -> float:
        return round(alignment.alignment_error_rate(found, gold), 3)

    figures = {
        "checkpoint": str(args.checkpoint),
        "pairs": len(sources),
        "read_from": {"layer": layer, "head": head},
        "aer": aer(alignment.alignments(translator, sources, targets, layer, head=head)),
        "diagonal": aer([alignment.diagonal(len(s.split()), len(r.split())) for s, r in zip(sources, references)]),
    }
    for each in range(1, len(translator.model.decoder) + 1):
        figures[f"layer_{each}_mean"] = aer(alignment.alignments(translator, sources, targets, each))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
