"""DDP on CPU: 2 processes x 1 thread (gloo) against 1 process x 2 threads, same steps and
batches (the single process accumulates 2 micro-batches). Prints one JSON line.

    python scripts/bench_ddp.py --config configs/multi30k.yaml [--steps 40]

Throughput is the target tokens/second that training logs (metrics.jsonl), after the first
logged window (warm-up) is dropped. On GPUs, the same comparison is `--nproc-per-node 1`
through torchrun against a plain run, and N GPUs against one for scaling efficiency.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(config: str, steps: int, out: Path, nproc: int, threads: int, extra: list[str]) -> float:
    overrides = [
        f"out_dir={out}",
        f"train.max_steps={steps}",
        "train.log_every=5",
        "train.valid_every=0",
        f"train.save_every={steps}",
        f"train.update_freq={2 // nproc}",
        *extra,
    ]
    command = [sys.executable, "-m", "mtrain", "train", "--config", config, "--restart", "--nproc-per-node", str(nproc)]
    for o in overrides:
        command += ["--set", o]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    subprocess.run(command, check=True, cwd=ROOT, env=env, capture_output=True)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [r["tgt_tokens_per_s"] for r in records if r["kind"] == "train"][1:]
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/multi30k.yaml")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        extra = [f"data.dir={data_dir}", *args.overrides]
        one = run(args.config, args.steps, Path(tmp) / "one", 1, 2, extra)
        two = run(args.config, args.steps, Path(tmp) / "two", 2, 1, extra)
    print(
        json.dumps(
            {
                "bench": "ddp_cpu",
                "config": args.config,
                "steps": args.steps,
                "cpus": os.cpu_count(),
                "one_process_two_threads_tgt_tokens_per_s": round(one),
                "two_processes_one_thread_tgt_tokens_per_s": round(two),
                "ratio": round(two / one, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
