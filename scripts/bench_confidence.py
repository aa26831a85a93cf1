"""Confidence benchmark: what the confidence costs beside decoding, on one checkpoint and test set. One JSON line.

    python scripts/bench_confidence.py --checkpoint runs/multi30k-en-de/checkpoint_avg.pt \\
        --src ../shared/data/multi30k/test_2016_flickr.en.gz [--mc-dropout 10] [--repeats 3] [--ctranslate2]

Rows, each the median of --repeats runs on the same sentences (the checkpoint's decode settings):
- decode_s: the search (`translate_nbest`); mtrain's searches keep each token's log-probability as
  they go, so the default confidence needs no model call of its own;
- confidence_s: the default confidence of every sentence from those (features, calibration);
- mc_dropout_s: --mc-dropout passes of the outputs with dropout on;
- with --ctranslate2: the same checkpoint in CTranslate2 (int8), its decode_s and its confidence_s,
  which includes `score_batch` (CTranslate2's search returns no per-token log-probabilities).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mtrain.data.sources import read_lines  # noqa: E402
from mtrain.deploy.engines import open_engine  # noqa: E402
from mtrain.inference.confidence import line_confidences  # noqa: E402


def timed(function, repeats: int) -> tuple[float, object]:
    """The median seconds of `repeats` calls, and the last call's result."""
    seconds, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result


def engine_row(engine, lines: list[str], repeats: int, mc_dropout: int) -> dict:
    decode_s, results = timed(lambda: engine.translate_nbest(lines), repeats)
    keep = type(engine).__name__ == "Translator"  # the torch search's token log-probabilities come with it

    def confidence():
        fresh = [[type(h)(h.tokens, h.score, h.logprob, list(h.token_logprobs) if keep else [])] for (h,) in results]
        return line_confidences(engine, lines, fresh)

    confidence_s, _ = timed(confidence, repeats)
    row = {
        "decode_s": round(decode_s, 3),
        "confidence_s": round(confidence_s, 3),
        "confidence_share_pct": round(100 * confidence_s / decode_s, 2),
    }
    if mc_dropout:
        mc_s, _ = timed(lambda: line_confidences(engine, lines, results, mc_dropout), 1)
        row.update(mc_dropout_passes=mc_dropout, mc_dropout_s=round(mc_s, 3),
                   mc_dropout_share_pct=round(100 * mc_s / decode_s, 1))  # fmt: skip
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--src", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mc-dropout", type=int, default=10, help="passes (0: skip)")
    parser.add_argument("--ctranslate2", action="store_true", help="also the CTranslate2 engine (int8)")
    args = parser.parse_args()
    lines = read_lines(args.src)
    engine = open_engine(args.checkpoint, device="cpu", threads=2)
    report = {
        "sentences": len(lines),
        "beam": engine.config.beam,
        "calibrated": bool(engine.info.get("confidence")),
        "precision": engine.precision,
        "torch": engine_row(engine, lines, args.repeats, args.mc_dropout),
    }
    if args.ctranslate2:
        ct2 = open_engine(args.checkpoint, engine="ctranslate2", device="cpu", threads=2)
        report["ctranslate2_int8"] = engine_row(ct2, lines, args.repeats, 0)
    report["cpu"] = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line), "")
    report["avx512_bf16"] = "avx512_bf16" in open("/proc/cpuinfo").read()
    report["threads"] = 2
    print(json.dumps(report))


if __name__ == "__main__":
    main()
