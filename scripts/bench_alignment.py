"""Alignment error rate of `mtrain translate --alignment` on the demo test set, per decoder layer.

    python scripts/bench_alignment.py --checkpoint runs/demo/checkpoint_avg.pt [--pairs 500]

The demo generator builds both sides by rule, so it knows the gold word alignment of every pair.
The model translates the demo test sources (its beam); the alignment of each output is read from
each decoder layer's cross-attention, with the row that produced a word and with the next row
(shift), and scored against the gold alignment where the output equals the reference (elsewhere
the gold alignment does not apply). A monotone diagonal is the baseline. One JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mtrain.data.sources import demo_split  # noqa: E402
from mtrain.inference.translator import open_translator
from mtrain.insight import alignment


def measure(checkpoint: Path, pairs: int) -> dict:
    translator = open_translator(checkpoint, "cpu")
    src_lang, tgt_lang = translator.info["src_lang"], translator.info["tgt_lang"]
    sources, references, gold = demo_split(pairs, "test", src_lang, tgt_lang)
    hypotheses = [h[0] for h in translator.translate_nbest(sources)]
    exact = [i for i, h in enumerate(hypotheses) if translator.tokenizer.decode_tgt(h.tokens) == references[i]]
    sources, targets, gold = (
        [sources[i] for i in exact],
        [hypotheses[i].tokens for i in exact],
        [gold[i] for i in exact],
    )
    figures = {
        "checkpoint": str(checkpoint),
        "pairs": pairs,
        "scored": len(exact),
        "diagonal": alignment.alignment_error_rate(
            [alignment.diagonal(len(s.split()), len(references[i].split())) for s, i in zip(sources, exact)], gold
        ),
    }
    for shift in (False, True):
        for layer in range(1, len(translator.model.decoder) + 1):
            found = alignment.alignments(translator, sources, targets, layer, shift)
            figures[f"layer{layer}{'_shift' if shift else ''}"] = alignment.alignment_error_rate(found, gold)
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--pairs", type=int, default=500)
    args = parser.parse_args()
    print(json.dumps({"bench": "alignment", **measure(args.checkpoint, args.pairs)}))


if __name__ == "__main__":
    main()
