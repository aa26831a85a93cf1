"""Data pipeline benchmark: one million sentence pairs through sentencepiece training,
encoding + writing, and the training batch iterator. Prints one JSON line.

    python scripts/bench_data.py [--pairs 1000000] [--corpus ../shared/data/multi30k/train]

The corpus (Multi30K train, repeated to --pairs, or the demo generator when it is absent) is
written to a temporary directory first; its reading is not timed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mtrain.config import from_dict  # noqa: E402
from mtrain.data.batching import TrainBatches  # noqa: E402
from mtrain.data.binarize import PreparedData, prepare  # noqa: E402
from mtrain.data.sources import read_lines  # noqa: E402
from mtrain.demo import generate  # noqa: E402


def corpus(prefix: str, pairs: int) -> tuple[list[str], list[str], str]:
    en_path, de_path = Path(f"{prefix}.en.gz"), Path(f"{prefix}.de.gz")
    if en_path.is_file() and de_path.is_file():
        en, de = read_lines(en_path), read_lines(de_path)
        name = f"{prefix} repeated"
    else:
        en, de = generate(min(pairs, 200_000), seed=1)
        name = "demo generator, repeated"
    take = lambda lines: list(itertools.islice(itertools.cycle(lines), pairs))
    return take(en), take(de), name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--corpus", default="../shared/data/multi30k/train")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--max-tokens", type=int, default=4096)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        en, de, name = corpus(args.corpus, args.pairs)
        for lang, lines in (("en", en), ("de", de)):
            with open(f"{tmp}/train.{lang}", "w", encoding="utf-8") as f:
                f.writelines(line + "\n" for line in lines)
        del en, de
        config = from_dict(
            {
                "out_dir": f"{tmp}/run",
                "data": {"train": {"path": f"{tmp}/train"}},
                "tokenizer": {"vocab_size": args.vocab_size, "input_sentence_size": 2_000_000},
            }
        )
        import logging

        timings = {}

        class Timer(logging.Handler):  # prepare() logs each stage; time stamps split it
            def emit(self, record):
                timings[record.getMessage().split(":")[0].split(" ")[0]] = time.perf_counter()

        logging.getLogger("mtrain").addHandler(Timer())
        logging.getLogger("mtrain").setLevel(logging.INFO)
        start = time.perf_counter()
        data: PreparedData = prepare(config)
        end = time.perf_counter()
        spm_seconds = timings["encoding"] - timings["sentencepiece"]
        encode_seconds = end - timings["encoding"]

        split = data.split("train")
        batches = TrainBatches(split, args.max_tokens, seed=1, max_len=1024)
        t0 = time.perf_counter()
        steps = batches.steps_in_epoch(1)
        tgt_tokens = src_tokens = 0
        for step in range(steps):
            for batch in batches.step(1, step):
                tgt_tokens += batch.tgt_tokens
                src_tokens += int((batch.src != 0).sum())
        iterate_seconds = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "bench": "data",
                "corpus": name,
                "pairs": args.pairs,
                "vocab_size": args.vocab_size,
                "cpus": os.cpu_count(),
                "total_prepare_s": round(end - start, 2),
                "spm_train_s": round(spm_seconds, 2),
                "encode_write_pairs_per_s": round(args.pairs / encode_seconds),
                "iterator_batches": steps,
                "iterator_tgt_tokens_per_s": round(tgt_tokens / iterate_seconds),
                "iterator_src_tgt_tokens_per_s": round((src_tokens + tgt_tokens) / iterate_seconds),
            }
        )
    )


if __name__ == "__main__":
    main()
