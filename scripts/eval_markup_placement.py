"""Where `translate --format html` puts tags, checked against eflomal's alignment, one JSON line.

    python scripts/eval_markup_placement.py --checkpoint runs/multi30k-en-de/checkpoint_avg.pt \
        --src runs/multi30k-en-de/data/test.en.txt --corpus data/multi30k/train [--langs en de]

Each test sentence gets one inline element around one to three words (the robustness report's
`tags` variant) and is translated with its markup kept. eflomal then aligns the words of every
(source, translation) pair, with a training corpus's pairs beside them for its statistics
(both directions, grow-diag-final-and); an element agrees when it spans exactly the target words
from the first to the last one eflomal links to the element's source words. Elements whose
words eflomal links to nothing are counted apart.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mtrain.data import noise  # noqa: E402
from mtrain.data.alignments import align_beside  # noqa: E402
from mtrain.data.markup import parse  # noqa: E402
from mtrain.data.placement import Segment  # noqa: E402
from mtrain.data.sources import read_lines, text_file  # noqa: E402
from mtrain.deploy.engines import open_engine  # noqa: E402
from mtrain.insight.markup import MarkupTranslator  # noqa: E402


def element_span(document: str) -> tuple[str, int, int]:
    (segment,) = [p for p in parse(document, "html") if isinstance(p, Segment)]
    (element,) = segment.elements
    return segment.text, element.first, element.last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--src", type=Path, required=True)
    parser.add_argument("--corpus", required=True, help="A training corpus prefix: PREFIX.SRC(.gz), PREFIX.TGT(.gz).")
    parser.add_argument("--langs", nargs=2, default=("en", "de"))
    args = parser.parse_args()
    engine = open_engine([args.checkpoint], device="cpu", precision="fp32")
    sources = read_lines(args.src)
    rng = np.random.default_rng(1)
    tagged = [noise.inline_element(s, rng) for s in sources]
    outputs = MarkupTranslator(engine, "html")(tagged)
    placed = [element_span(o) for o in outputs]
    corpus = [read_lines(text_file(args.corpus, lang)) for lang in args.langs]
    links = align_beside(sources, [text for text, _, _ in placed], *corpus)
    agree = unlinked = 0
    for source, (_, first, last), found in zip(tagged, placed, links):
        _, source_first, source_last = element_span(source)
        targets = sorted(j for i, j in found if source_first <= i < source_last)
        if not targets:
            unlinked += 1
        else:
            agree += (first, last) == (targets[0], targets[-1] + 1)
    print(
        json.dumps(
            {
                "sentences": len(sources),
                "agreement_pct": round(100 * agree / max(len(sources) - unlinked, 1), 1),
                "unlinked_elements": unlinked,
                "alignment_head": engine.info.get("alignment_head"),
            }
        )
    )


if __name__ == "__main__":
    main()
