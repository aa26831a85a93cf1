"""The fault kinds of the third fault pass (issue 48), tried by scripts/bench_faults.py beside
scripts/user_faults.py's: user files named like temporaries at a training start, writers killed
with SIGKILL and run again, prepare stopped with SIGTERM, clients that leave before their answer,
and clients that send a byte at a time.

Each function makes one try and returns whether it *held*: nothing of the user's was touched, no
litter of mtrain's remained once the command ran again, and the server kept answering.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from user_faults import ROOT, Server, mtrain

from mtrain.files import TEMPORARY_PREFIX, temporary_name


def _dead_pid() -> int:
    """The pid of a process that has ended."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _litter(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.startswith(TEMPORARY_PREFIX)]


def user_files_survive_a_start(run: Path, config: Path) -> bool:
    """Files and folders a user named like old temporaries, in the run directory and beside its data,
    survive `mtrain train`; a temporary a killed mtrain of this host left is removed."""
    for folder in (run / "thesis.old-2023", run / "data.old-1999"):
        folder.mkdir()
        (folder / "chapter.txt").write_text("mine")
    for name in ("notes.tmp-1999", ".draft.12345.tmp"):
        (run / name).write_text("mine")
    ours = temporary_name(run / "checkpoint_last.pt")
    stale = ours.with_name(ours.name.replace(f"~{os.getpid()}~", f"~{_dead_pid()}~"))
    stale.write_bytes(b"half a checkpoint")
    result = mtrain("train", "-c", str(config))
    kept = all(
        (run / name).exists() for name in ("thesis.old-2023", "data.old-1999", "notes.tmp-1999", ".draft.12345.tmp")
    )
    return result.returncode == 0 and kept and not stale.exists()


def killed_writers_leave_nothing(run: Path, rng: random.Random) -> dict[str, bool]:
    """export (Hugging Face), average -o and tune --write -o killed with SIGKILL at a random moment:
    the same command run again succeeds and no mtrain temporary remains beside its output."""
    out = run.parent / f"{run.name}-outputs"
    out.mkdir(exist_ok=True)
    avg = str(run / "checkpoint_avg.pt")
    tune = ["tune", "--checkpoint", avg, "--beam", "1,2", "--lenpen", "0.6", "--write", "-o", str(out / "tuned.pt")]
    commands = {
        "export_sigkill": ["export", "--checkpoint", avg, "--format", "huggingface", "-o", str(out / "hf"), "--force"],
        "average_sigkill": ["average", str(run), "--last", "2", "-o", str(out / "avg.pt"), "--force"],
        "tune_write_sigkill": tune,
    }
    held = {}
    for kind, args in commands.items():
        process = subprocess.Popen(
            [sys.executable, "-m", "mtrain", *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(rng.uniform(0.5, 4.0))
        process.kill()
        process.wait()
        again = mtrain(*args)
        held[kind] = again.returncode == 0 and not _litter(out)
    return held


def prepare_stopped(config: Path, data: Path, rng: random.Random, sig: int) -> bool:
    """`mtrain prepare` sent `sig` while it cleans. SIGTERM: one line, exit 130, no temporary left.
    SIGKILL: whatever it left, the next prepare removes; that prepare completes either way."""
    process = subprocess.Popen(
        [sys.executable, "-m", "mtrain", "prepare", "-c", str(config)], cwd=ROOT, stderr=subprocess.PIPE, text=True
    )
    for line in process.stderr:
        if "reading and cleaning" in line:
            break
    time.sleep(rng.uniform(0.0, 1.0))
    process.send_signal(sig)
    rest = process.stderr.read()
    status = process.wait()
    stopped = status == -signal.SIGKILL or (status == 130 and "Traceback" not in rest and not _litter(data.parent))
    return stopped and mtrain("prepare", "-c", str(config)).returncode == 0 and not _litter(data.parent)


def abandoned_requests(server: Server, lines: list[str], max_work: int) -> bool:
    """Five requests of the server's --max-work whose clients leave after 0.2 s, then one sentence:
    it is answered in less than the time of two of them (at most the one already running is
    decoded, not five)."""
    import httpx

    text: list[str] = []
    for line in lines * 8:
        if len(text) == 64 or (sum(map(len, text)) + len(line)) * 16 > max_work:
            break
        text.append(line)
    big = {"text": text, "beam": 16}
    start = time.time()
    httpx.post(f"{server.url}/translate", json=big, timeout=120).raise_for_status()
    one_big = time.time() - start

    def leave(_: int) -> None:
        try:
            httpx.post(f"{server.url}/translate", json=big, timeout=0.2)
        except httpx.TimeoutException:
            pass

    with ThreadPoolExecutor(5) as pool:
        list(pool.map(leave, range(5)))
    start = time.time()
    answered = httpx.post(f"{server.url}/translate", json={"text": ["A dog runs."]}, timeout=120).status_code == 200
    waited = time.time() - start
    healthy = httpx.get(f"{server.url}/health", timeout=10).status_code == 200
    return answered and healthy and waited < 2 * one_big + 1


def byte_at_a_time_clients(server: Server, count: int, receive_seconds: float) -> bool:
    """`count` clients sending their request line one byte every 0.5 s: the server closes each within
    --receive-seconds (plus 2 s), and answers a normal request meanwhile."""
    import httpx

    request = b"POST /translate HTTP/1.1\r\nhost: x\r\ncontent-length: 30\r\n\r\n" + b'{"text": ["a"]}' * 4
    sockets = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(count)]
    closed_after: dict[int, float] = {}
    start = time.time()

    def trickle() -> None:
        for i in range(len(request)):
            for n, s in enumerate(sockets):
                if n in closed_after:
                    continue
                try:
                    s.sendall(request[i : i + 1])
                except OSError:
                    closed_after[n] = time.time() - start
            if len(closed_after) == count or time.time() - start > receive_seconds + 10:
                return
            time.sleep(0.5)

    thread = threading.Thread(target=trickle)
    thread.start()
    answered = httpx.post(f"{server.url}/translate", json={"text": ["A dog runs."]}, timeout=30).status_code == 200
    thread.join()
    for s in sockets:
        s.close()
    return answered and len(closed_after) == count and max(closed_after.values()) < receive_seconds + 2 + 1
