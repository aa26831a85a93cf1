"""Fault injection: kill training at random moments and fill the disk at random writes, resume each
time, and check that nothing was lost or mixed. Prints one JSON line of figures.

    python scripts/bench_faults.py --kills 20 --disk-faults 10

Kills: `mtrain train` is started as a user would, killed (SIGKILL, SIGTERM or SIGINT, in turn)
after a random delay, and started again until it finishes. After every kill all checkpoints
must load; at the end the weights must equal an uninterrupted run's, metrics.jsonl must hold each
step once, every scheduled numbered checkpoint must exist, and no temporary file may remain.
Disk faults: in one process, the k-th file write of a run raises ENOSPC; training must stop with a
one-line error and the checkpoints before must load; the run is then resumed to the end.
User faults (scripts/user_faults.py), each tried --user-faults times: export/average/tune/translate
outputs aimed at the run's own files, a deleted checkpoint_last.pt, flipped bytes in a checkpoint,
a server batch with one poisoned request, 200 idle sockets, a half-sent body then SIGTERM, and the
--nproc-per-node launcher killed with SIGKILL or SIGHUP; and the third pass's
(scripts/user_faults_third.py): user files named like temporaries at a training start, export,
average -o and tune --write killed with SIGKILL and run again, prepare stopped with SIGTERM or SIGKILL,
five large requests whose clients leave, and 100 clients sending a byte at a time.

    python scripts/bench_faults.py --kills 0 --disk-faults 0 --user-faults 3    # the user faults only
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import user_faults  # noqa: E402 (scripts/)
import user_faults_third as third  # noqa: E402 (scripts/)

from mtrain.config_io import from_dict
from mtrain.errors import MtrainError  # noqa: E402
from mtrain.run import checkpoint
from mtrain.run import metrics as metrics_log
from mtrain.training.session import train

STEPS, SAVE_EVERY = 400, 20


def config_values(out_dir: Path) -> dict:
    return {
        "out_dir": str(out_dir),
        "data": {"train": {"demo": 2000}, "valid": {"demo": 50}},
        "tokenizer": {"vocab_size": 200},
        "model": {
            "d_model": 64,
            "heads": 4,
            "encoder_layers": 2,
            "decoder_layers": 2,
            "d_ff": 128,
            "dropout": 0.1,
            "max_positions": 128,
        },
        "train": {
            "max_tokens": 600,
            "max_steps": STEPS,
            "warmup_steps": 10,
            "log_every": 1,
            "valid_every": 100,
            "save_every": SAVE_EVERY,
            "keep_last": 100,
            "average_last": 3,
            "threads": 1,
        },
    }


def all_checkpoints_load(run: Path) -> bool:
    try:
        for path in run.glob("checkpoint_*.pt"):
            checkpoint.load(path)
        return True
    except MtrainError:
        return False


def run_is_whole(run: Path, reference: Path) -> dict:
    """What must hold once an interrupted run has finished."""
    a, b = checkpoint.load(reference / "checkpoint_last.pt"), checkpoint.load(run / "checkpoint_last.pt")
    same = all(torch.allclose(a["model"][k], b["model"][k], rtol=1e-5, atol=1e-6) for k in a["model"])
    steps = [
        json.loads(line)["step"]
        for line in (run / "metrics.jsonl").read_text().splitlines()
        if '"kind": "train"' in line
    ]
    numbered = [int(p.stem.split("_")[1]) for p in checkpoint.numbered(run)]
    return {
        "weights_equal_uninterrupted": same,
        "metrics_each_step_once": steps == list(range(1, STEPS + 1)),
        "scheduled_checkpoints_complete": numbered == list(range(SAVE_EVERY, STEPS + 1, SAVE_EVERY)),
        "temporaries_left": sum(1 for p in run.rglob("*") if p.name.endswith(".tmp") or ".tmp-" in p.name),
    }


def combined(checks: list[dict]) -> dict:
    """Every check over every finished run: booleans must all hold, counts add up."""
    return {
        key: all(c[key] for c in checks) if isinstance(checks[0][key], bool) else sum(c[key] for c in checks)
        for key in checks[0]
    }


def kill_faults(work: Path, reference: Path, kills: int, rng: random.Random) -> dict:
    """Start, kill after a random delay, check; a run that finishes is checked and a new one begun."""
    signals = [signal.SIGKILL, signal.SIGTERM, signal.SIGINT]
    tried = held = 0
    checks = []
    while True:
        run, path = work / f"killed-{len(checks)}", work / f"killed-{len(checks)}.yaml"
        path.write_text(yaml.safe_dump(config_values(run)))
        job = subprocess.Popen(
            [sys.executable, "-m", "mtrain", "train", "-c", str(path)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if tried < kills:
            time.sleep(rng.uniform(1.0, 5.0))  # start-up takes 2-3 s: some kills land in preparation, most in training
            if job.poll() is None:
                job.send_signal(signals[tried % len(signals)])
                job.wait()
                tried += 1
                held += all_checkpoints_load(run)
                continue
        if job.wait() == 0:
            checks.append(run_is_whole(run, reference))
            if tried >= kills:
                break
    return {"kills": tried, "kills_held": held, "killed_runs": len(checks), **combined(checks)}


def disk_faults(work: Path, reference: Path, faults: int, rng: random.Random) -> dict:
    """ENOSPC at a random write (checkpoint, checkpoint copy or metrics line) of a run, resumed after each;
    a run that finishes is checked and a new one begun."""
    tried = held = 0
    checks = []
    while tried < faults:
        run = work / f"full-disk-{len(checks)}"
        countdown = [rng.randint(1, 500)]

        def failing(real_write):
            def write(*args, **kwargs):
                countdown[0] -= 1
                if countdown[0] == 0:
                    raise OSError(errno.ENOSPC, "No space left on device")
                return real_write(*args, **kwargs)

            return write

        real_fsync, os.fsync, metrics_log.open = (
            os.fsync,
            failing(os.fsync),
            failing(open),
        )  # atomic writes and appended lines
        try:
            train(from_dict(config_values(run)))
            checks.append(run_is_whole(run, reference))
        except MtrainError:
            tried += 1
            held += all_checkpoints_load(run)
        finally:
            os.fsync = real_fsync
            del metrics_log.open
    train(from_dict(config_values(run)))
    checks.append(run_is_whole(run, reference))
    return {"disk_faults": tried, "disk_faults_held": held, **{f"disk_{k}": v for k, v in combined(checks).items()}}


def tally(results: dict[str, list[bool]]) -> dict[str, str]:
    return {kind: f"{sum(held)}/{len(held)}" for kind, held in results.items()}


def user_fault_kinds(work: Path, reference: Path, repeats: int, rng: random.Random) -> dict:
    """Each user-level fault kind `repeats` times (see scripts/user_faults.py): held/tried per kind."""
    results: dict[str, list[bool]] = {}
    source = work / "source.en"
    source.write_text("\n".join((reference / "data" / "valid.en.txt").read_text().splitlines()[:20]) + "\n")
    good = user_faults.mtrain("translate", "--checkpoint", str(reference / "checkpoint_avg.pt"), "-i", str(source))
    for i in range(repeats):
        run = user_faults.copy_run(reference, work / f"user-{i}")
        config = work / f"user-{i}.yaml"
        config.write_text(yaml.safe_dump(config_values(run)))
        for kind, held in user_faults.aimed_at_the_run(run, rng).items():
            results.setdefault(kind, []).append(held)
        results.setdefault("deleted_checkpoint_last", []).append(user_faults.deleted_checkpoint_last(run, config))
        flipped = user_faults.flipped_bytes(run, rng, good.stdout.splitlines(), source)
        results.setdefault("flipped_checkpoint_bytes", []).append(flipped)
    max_work = 60_000  # about 64 sentences at beam 16: what one request (and one merged call) may decode
    options = ("--idle-seconds", "3", "--receive-seconds", "4", "--max-work", str(max_work))
    server = user_faults.Server(reference / "checkpoint_avg.pt", *options)
    try:
        lines = source.read_text().splitlines()
        for _ in range(repeats):
            results.setdefault("poisoned_batch", []).append(user_faults.poisoned_batch(server, lines, rng))
            results.setdefault("idle_sockets_200", []).append(user_faults.idle_sockets(server, 200, 3.0))
            results.setdefault("abandoned_requests", []).append(third.abandoned_requests(server, lines, max_work))
            results.setdefault("byte_at_a_time_100", []).append(third.byte_at_a_time_clients(server, 100, 4.0))
    finally:
        server.stop()
    for i in range(repeats):
        run = user_faults.copy_run(reference, work / f"third-{i}")
        config = work / f"third-{i}.yaml"
        config.write_text(yaml.safe_dump(config_values(run)))
        results.setdefault("user_files_named_like_temporaries", []).append(
            third.user_files_survive_a_start(run, config)
        )
        for kind, held in third.killed_writers_leave_nothing(run, rng).items():
            results.setdefault(kind, []).append(held)
        for name, sig in (("prepare_sigterm", signal.SIGTERM), ("prepare_sigkill", signal.SIGKILL)):
            prepare = config_values(work / f"{name}-{i}")
            prepare["data"]["train"] = {"demo": 120_000}
            (work / f"{name}-{i}.yaml").write_text(yaml.safe_dump(prepare))
            held = third.prepare_stopped(work / f"{name}-{i}.yaml", work / f"{name}-{i}" / "data", rng, sig)
            results.setdefault(name, []).append(held)
    for _ in range(repeats):
        held = user_faults.half_sent_body_then_sigterm(reference / "checkpoint_avg.pt", 3.0)
        results.setdefault("half_sent_body_sigterm", []).append(held)
    for i in range(repeats):
        for name, sig in (("launcher_sigkill", signal.SIGKILL), ("launcher_sighup", signal.SIGHUP)):
            run, config = work / f"{name}-{i}", work / f"{name}-{i}.yaml"
            values = config_values(run)
            values["train"].update(max_steps=60, save_every=10, valid_every=0)
            config.write_text(yaml.safe_dump(values))
            held = user_faults.launcher_signal(config, run / "metrics.jsonl", sig)
            results.setdefault(name, []).append(held)
    return tally(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--disk-faults", type=int, default=10)
    parser.add_argument("--user-faults", type=int, default=3, help="tries of each user-level fault kind")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    torch.set_num_threads(1)
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        reference = work / "reference"
        (work / "reference.yaml").write_text(yaml.safe_dump(config_values(reference)))
        subprocess.run(
            [sys.executable, "-m", "mtrain", "train", "-c", str(work / "reference.yaml")],
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        figures = {
            **(kill_faults(work, reference, args.kills, rng) if args.kills else {}),
            **(disk_faults(work, reference, args.disk_faults, rng) if args.disk_faults else {}),
            **(user_fault_kinds(work, reference, args.user_faults, rng) if args.user_faults else {}),
        }
    print(json.dumps({"bench": "faults", "steps": STEPS, **figures, "wall_s": round(time.time() - start, 1)}))


if __name__ == "__main__":
    main()
