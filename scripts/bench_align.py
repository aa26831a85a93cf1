"""The cost of data.alignments: eflomal over a prepared run's training pairs, one JSON line.

    python scripts/bench_align.py --data runs/multi30k-en-de/data [--pairs 29000]

Aligns the first --pairs training pairs of a prepared data directory the way prepare does
(eflomal on the subword pieces, both directions, grow-diag-final-and, one chunk), timing the
eflomal run and the symmetrization apart, and states the time per million pairs and what 10
million pairs take at that rate (eflomal is linear in the corpus; prepare aligns a million pairs
at a time).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import eflomal  # noqa: E402

from mtrain.data import alignments  # noqa: E402
from mtrain.data.store import IndexedArray, PreparedData  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="A prepared data directory.")
    parser.add_argument("--pairs", type=int, default=29_000)
    args = parser.parse_args()
    data = PreparedData(args.data)
    split, tokenizer = data.split("train"), data.tokenizer()
    pairs = min(args.pairs, len(split))
    src, tgt = (IndexedArray(side.offsets[: pairs + 1], side.data) for side in (split.src, split.tgt))
    timed = {"eflomal": 0.0, "symmetrize": 0.0}
    eflomal_align, symmetrize = eflomal.Aligner.align, alignments.grow_diag_final_and

    def timed_align(*args, **kwargs):
        started = time.perf_counter()
        result = eflomal_align(*args, **kwargs)
        timed["eflomal"] += time.perf_counter() - started
        return result

    def timed_symmetrize(*args):
        started = time.perf_counter()
        result = symmetrize(*args)
        timed["symmetrize"] += time.perf_counter() - started
        return result

    eflomal.Aligner.align, alignments.grow_diag_final_and = timed_align, timed_symmetrize
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        alignments.align_training_pairs(src, tgt, tokenizer, Path(scratch) / "train.align", Path(scratch) / "stage")
        total = time.perf_counter() - started
        links = IndexedArray.open(Path(scratch) / "train.align").lengths.sum() // 2
    per_million = total * 1_000_000 / pairs
    print(
        json.dumps(
            {
                "pairs": pairs,
                "links_per_pair": round(float(links) / pairs, 2),
                "total_s": round(total, 1),
                "eflomal_s": round(timed["eflomal"], 1),
                "symmetrize_s": round(timed["symmetrize"], 1),
                "s_per_million_pairs": round(per_million),
                "projected_10m_pairs_h": round(10 * per_million / 3600, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
