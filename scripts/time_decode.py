"""Decoding speed of one exported model: sentences/s of translating a file, load and start-up
excluded (a warm-up pass first, then the best of `--repeats` timed passes), and the output written.

    python scripts/time_decode.py runs/student/ct2-int8 test.en test.hyp.de --beam 4 --threads 2

Prints one JSON line: model, beam, threads, sentences, seconds, sentences_per_s. The distillation
recipe (scripts/run_distill.sh) times teacher and students with it, so that the interpreter's and
torch's start-up (about 2 s here, a third of the teacher's decoding time) does not shrink the
difference between them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mtrain.data.sources import read_lines  # noqa: E402
from mtrain.deploy.engines import open_engine  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="an exported model directory (mtrain export)")
    parser.add_argument("src", help="the sentences to translate (plain or .gz)")
    parser.add_argument("out", help="where the translations go")
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    lines = read_lines(Path(args.src))
    engine = open_engine(model_dir=Path(args.model), device="cpu", threads=args.threads)
    engine.translate(lines[:100], beam=args.beam)  # warm-up: allocations, caches
    best, hyps = float("inf"), []
    for _ in range(args.repeats):
        start = time.perf_counter()
        hyps = engine.translate(lines, beam=args.beam)
        best = min(best, time.perf_counter() - start)
    Path(args.out).write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
    row = {"model": args.model, "beam": args.beam, "threads": args.threads, "sentences": len(lines)}
    print(json.dumps({**row, "seconds": round(best, 3), "sentences_per_s": round(len(lines) / best, 1)}))


if __name__ == "__main__":
    main()
