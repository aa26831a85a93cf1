"""The cost of markup handling (`translate --format html`) beside plain decoding, one JSON line.

    python scripts/bench_markup.py --checkpoint runs/multi30k-en-de/checkpoint_avg.pt \
        --src runs/multi30k-en-de/data/test.en.txt [--sentences 500] [--engine torch|ctranslate2]

Each source sentence gets one inline element around one to three words (the robustness report's
`tags` variant). Timed, alone and in this order (each --repeats times, the median kept): the clean
sentences decoded as text (the engine's beam), then the tagged sentences through the markup path,
whose extra work is parsing, the word alignment of every translation (from the cross-attention the
search records: the torch engine's AttentionRecorder, CTranslate2's returned attention) and putting
the tags back. The overhead is the markup run's time over the plain one's, less one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mtrain.data import noise  # noqa: E402
from mtrain.data.sources import read_lines  # noqa: E402
from mtrain.deploy.engines import open_engine  # noqa: E402
from mtrain.insight.markup import MarkupTranslator  # noqa: E402


def median_seconds(function, repeats: int) -> float:
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--src", type=Path, required=True, help="Source sentences, one a line.")
    parser.add_argument("--sentences", type=int, default=500)
    parser.add_argument("--engine", default="torch", choices=("torch", "ctranslate2"))
    parser.add_argument("--repeats", type=int, default=3, help="runs of each, the median timed")
    args = parser.parse_args()
    engine = open_engine([args.checkpoint], None, args.engine, "cpu", "fp32", 0, "float32")
    clean = read_lines(args.src)[: args.sentences]
    rng = np.random.default_rng(1)
    tagged = [noise.inline_element(s, rng) for s in clean]
    markup = MarkupTranslator(engine, "html")
    plain_s = median_seconds(lambda: engine.translate(clean), args.repeats)
    markup_s = median_seconds(lambda: markup(tagged), args.repeats)
    print(
        json.dumps(
            {
                "engine": args.engine,
                "sentences": len(clean),
                "beam": engine.config.beam,
                "plain_s": round(plain_s, 2),
                "markup_s": round(markup_s, 2),
                "overhead_pct": round(100 * (markup_s / plain_s - 1), 1),
                "markup_ms_per_sentence": round(1000 * (markup_s - plain_s) / len(clean), 2),
            }
        )
    )


if __name__ == "__main__":
    main()
