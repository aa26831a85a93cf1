"""Data pipeline benchmark: sentence pairs through `mtrain prepare` (streaming: sentencepiece
on a sample, then read -> clean -> encode -> write chunk by chunk) and the training batch
iterator. Prints one JSON line.

    python scripts/bench_data.py [--pairs 1000000] [--corpus ../shared/data/multi30k/train]
    python scripts/bench_data.py --pairs 10000000            # a corpus larger than comfortable
    python scripts/bench_data.py --pairs 1000000 --sampling-alpha 0.1   # + subword sampling
    python scripts/bench_data.py --pairs 10000000 --filters all          # + every data.filters filter

Stages: reading + cleaning + sampling (pass 1), sentencepiece training, encoding + writing
(pass 2). The corpus (Multi30K train, repeated to --pairs, or the demo generator when it is absent) is
written to a temporary directory first; writing it is not timed. `prepare` runs in a child
process, so its peak resident memory (peak_rss_mb) is its own; tree_peak_rss_mb is the peak
of its memory plus its worker processes' (one per core), sampled every 50 ms. With --sampling-alpha the
vocabulary is a unigram model and the iterator also re-segments the corpus for its epoch
(Kudo's l-best sampling), which is reported as subword_sampling_s. --filters all turns on every
filter of data.filters (language identification of both sides included), no-langid all but that.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mtrain.config_io import from_dict
from mtrain.data.batching import TrainBatches  # noqa: E402
from mtrain.data.demo import generate
from mtrain.data.prepare import prepare
from mtrain.data.sources import iter_lines  # noqa: E402
from mtrain.data.store import PreparedData


def write_corpus(prefix: str, pairs: int, tmp: str) -> str:
    """{tmp}/train.{en,de}: the corpus at `prefix` (or the demo generator) cycled to `pairs` lines."""
    en_path, de_path = Path(f"{prefix}.en.gz"), Path(f"{prefix}.de.gz")
    if en_path.is_file() and de_path.is_file():
        en, de, name = list(iter_lines(en_path)), list(iter_lines(de_path)), f"{prefix} repeated"
    else:
        en, de = generate(min(pairs, 200_000), seed=1)
        name = "demo generator, repeated"
    for lang, lines in (("en", en), ("de", de)):
        with open(f"{tmp}/train.{lang}", "w", encoding="utf-8") as f:
            for line in itertools.islice(itertools.cycle(lines), pairs):
                f.write(line + "\n")
    return name


FILTERS = {
    "off": {},
    "no-langid": {"copy": True, "control_chars": True, "min_letters": 0.5, "max_other_script": 0.2,
                  "max_token_chars": 50, "numbers": True},
}  # fmt: skip
FILTERS["all"] = {**FILTERS["no-langid"], "langid": True}


def bench_config(tmp: str, vocab_size: int, alpha: float, filters: str = "off"):
    tokenizer = {"vocab_size": vocab_size, "type": "unigram" if alpha else "bpe", "sampling_alpha": alpha}
    data = {"train": {"path": f"{tmp}/train"}, "filters": FILTERS[filters]}
    return from_dict({"out_dir": f"{tmp}/run", "data": data, "tokenizer": tokenizer})


def run_prepare(tmp: str, vocab_size: int, alpha: float, filters: str) -> dict:
    """In this (child) process: prepare, timing its stages from the log, and the peak RSS."""
    stamps = {}

    class Stamp(logging.Handler):  # prepare() logs each stage; the time stamps split it
        def emit(self, record):
            stamps.setdefault(record.getMessage().split(":")[0], time.perf_counter())

    logging.getLogger("mtrain").addHandler(Stamp())
    logging.getLogger("mtrain").setLevel(logging.INFO)
    tree = TreeMemory()
    start = time.perf_counter()
    kept = prepare(bench_config(tmp, vocab_size, alpha, filters)).manifest["clean"]["kept"]
    end = time.perf_counter()
    return {
        "prepare_s": end - start,
        "read_clean_s": stamps["sentencepiece"] - stamps["reading and cleaning the training data"],
        "spm_s": stamps["encoding train"] - stamps["sentencepiece"],
        "encode_s": end - stamps["encoding train"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "tree_peak_rss_mb": tree.stop(),
        "kept_pairs": kept,
    }


class TreeMemory(threading.Thread):
    """The peak of the summed resident memory of this process and its worker processes, sampled
    every 50 ms from /proc (Linux); 0 where /proc is absent."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.done = 0.0, threading.Event()
        self.start()

    def run(self):
        while not self.done.wait(0.05):
            self.peak = max(self.peak, sum(map(_rss_mb, [os.getpid(), *_children(os.getpid())])))

    def stop(self) -> float:
        self.done.set()
        self.join()
        return self.peak


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _rss_mb(pid: int) -> float:
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        return int(fields["VmRSS"].split()[0]) / 1024
    except (OSError, KeyError, ValueError):
        return 0.0


def iterate(tmp: str, vocab_size: int, alpha: float, max_tokens: int) -> dict:
    """One epoch of the training batch iterator (with its subword sampling when alpha > 0)."""
    from mtrain.data.subword import SubwordSampler

    config = bench_config(tmp, vocab_size, alpha)
    data = PreparedData(config.data_dir)
    split, tokenizer = data.split("train"), data.tokenizer()
    sampler = SubwordSampler(split, tokenizer.src, tokenizer.tgt, [None], alpha, seed=1) if alpha else None
    start = time.perf_counter()
    schedule = TrainBatches(split, max_tokens, seed=1, max_len=1024, segmentation=sampler)
    steps = schedule.steps_in_epoch(1)
    sampled = time.perf_counter()
    tgt_tokens = src_tokens = 0
    for step in range(steps):
        for batch in schedule.step(1, step):
            tgt_tokens += batch.tgt_tokens
            src_tokens += int((batch.src != 0).sum())
    seconds = time.perf_counter() - start
    result = {
        "iterator_batches": steps,
        "iterator_tgt_tokens_per_s": round(tgt_tokens / seconds),
        "iterator_src_tgt_tokens_per_s": round((src_tokens + tgt_tokens) / seconds),
    }
    if alpha:
        result["subword_sampling_s"] = round(sampled - start, 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--corpus", default="../shared/data/multi30k/train")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--sampling-alpha", type=float, default=0.0)
    parser.add_argument("--filters", choices=list(FILTERS), default="off")
    parser.add_argument("--no-iterator", action="store_true", help="time prepare only, not the batch iterator")
    parser.add_argument("--prepare-in", metavar="DIR", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.prepare_in:
        print(json.dumps(run_prepare(args.prepare_in, args.vocab_size, args.sampling_alpha, args.filters)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        name = write_corpus(args.corpus, args.pairs, tmp)
        child = [sys.executable, __file__, "--prepare-in", tmp, "--vocab-size", str(args.vocab_size)]
        child += ["--sampling-alpha", str(args.sampling_alpha), "--filters", args.filters]
        out = subprocess.run(child, capture_output=True, text=True)
        if out.returncode:
            sys.exit(out.stderr[-3000:])
        prepared = json.loads(out.stdout.strip().splitlines()[-1])
        iterated = {} if args.no_iterator else iterate(tmp, args.vocab_size, args.sampling_alpha, args.max_tokens)
    print(
        json.dumps(
            {
                "bench": "data",
                "corpus": name,
                "pairs": args.pairs,
                "vocab_size": args.vocab_size,
                "tokenizer": "unigram" if args.sampling_alpha else "bpe",
                "filters": args.filters,
                "kept_pairs": prepared["kept_pairs"],
                "cpus": os.cpu_count(),
                "total_prepare_s": round(prepared["prepare_s"], 1),
                "prepare_pairs_per_s": round(args.pairs / prepared["prepare_s"]),
                "read_clean_sample_s": round(prepared["read_clean_s"], 1),
                "spm_train_s": round(prepared["spm_s"], 1),
                "encode_write_pairs_per_s": round(args.pairs / prepared["encode_s"]),
                "peak_rss_mb": round(prepared["peak_rss_mb"]),
                "tree_peak_rss_mb": round(prepared["tree_peak_rss_mb"]),
                **iterated,
            }
        )
    )


if __name__ == "__main__":
    main()
