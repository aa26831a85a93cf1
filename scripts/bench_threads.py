"""Training speed on an idle and on a busy machine, with the default threads and with one: 100 steps
of configs/demo.yaml (data prepared once, start-up included). Busy: two other processes spinning on
the CPUs, started a minute before so that the load average sees them. Prints one JSON line.

    python scripts/bench_threads.py
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPIN = [sys.executable, "-c", "while True: pass"]


def train_seconds(out: Path, *options: str) -> tuple[float, str]:
    """Wall seconds of a 100-step run (restarted over the prepared data), and its busy-machine line."""
    settings = ["out_dir=" + str(out), "train.max_steps=100", "train.valid_every=0", "train.save_every=0"]
    command = [sys.executable, "-m", "mtrain", "train", "-c", "configs/demo.yaml", "--restart", *options]
    command += [arg for setting in settings for arg in ("--set", setting)]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    found = re.search(r"this machine is busy[^\n]*", result.stderr)
    return round(time.perf_counter() - start, 1), found.group(0) if found else ""


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        prepare = [sys.executable, "-m", "mtrain", "prepare", "-c", "configs/demo.yaml", "--set", f"out_dir={out}"]
        subprocess.run(prepare, cwd=ROOT, capture_output=True, check=True)
        idle, _ = train_seconds(out)
        spinners = [subprocess.Popen(SPIN) for _ in range(2)]
        try:
            time.sleep(65)  # the 1-minute load average catches up with them
            busy, note = train_seconds(out)
            busy_one, _ = train_seconds(out, "--threads", "1")
        finally:
            for spinner in spinners:
                spinner.kill()
    figures = {"idle_default_s": idle, "busy_default_s": busy, "busy_threads_1_s": busy_one, "busy_note": note}
    print(json.dumps({"bench": "threads", "steps": 100, **figures}))


if __name__ == "__main__":
    main()
