"""The user-level fault kinds of scripts/bench_faults.py (the second fault pass, issue 34): commands
aimed at a run's own files, damaged checkpoints, a poisoned server batch, idle and half-sent
connections, and a multi-process launcher killed outright or hung up on.

Each kind is tried `repeats` times against a copy of a finished run; a try *holds* when nothing of
the run changed (or the damage was refused in one line, exit 2) and the system kept working.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def mtrain(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "mtrain", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def fingerprint(directory: Path) -> dict[str, str]:
    """Every file under `directory` by relative path, with its content hash."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != ".mtrain.lock"
    }


def one_line_refusal(result: subprocess.CompletedProcess) -> bool:
    return result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def refused_and_untouched(run: Path, *args: str) -> bool:
    """The command is refused in one line and leaves every file of the run as it was."""
    before = fingerprint(run)
    return one_line_refusal(mtrain(*args)) and fingerprint(run) == before


def aimed_at_the_run(run: Path, rng: random.Random) -> dict[str, bool]:
    """Outputs that would destroy the run's own files: each must be refused, nothing changed."""
    avg, numbered = run / "checkpoint_avg.pt", sorted(run.glob("checkpoint_[0-9]*.pt"))
    source = run / "data" / "valid.en.txt"
    link = run.parent / f"link-{rng.randint(0, 10**9)}.en"
    link.unlink(missing_ok=True)
    link.symlink_to(source)
    tries = {
        "export_force_onto_run": refused_and_untouched(
            run, "export", "--checkpoint", str(avg), "--format", "ctranslate2", "-o", str(run), "--force"
        ),
        "average_onto_training_checkpoint": refused_and_untouched(
            run, "average", str(run), "-o", str(rng.choice(numbered + [run / "checkpoint_last.pt"]))
        ),
        "tune_write_non_finite": refused_and_untouched(
            run, "tune", "--checkpoint", str(avg), "--lenpen", rng.choice(["nan", "inf", "0.6,nan", "1e308"]), "--write"
        ),
        "translate_onto_input": refused_and_untouched(
            run, "translate", "--checkpoint", str(avg), "-i", str(link), "-o", str(source)
        ),
    }
    link.unlink()
    return tries


def deleted_checkpoint_last(run: Path, config: Path) -> bool:
    """checkpoint_last.pt gone, numbered checkpoints left: train refuses (nothing rotated away)."""
    (run / "checkpoint_last.pt").unlink()
    numbered = fingerprint(run)
    result = mtrain("train", "-c", str(config))
    return one_line_refusal(result) and "--recover" in result.stderr and fingerprint(run) == numbered


def flipped_bytes(run: Path, rng: random.Random, reference_output: list[str], source: Path) -> bool:
    """Random bytes flipped in checkpoint_avg.pt: refused in one line, or (bytes outside the weights
    that nothing reads) the very same translations. Never other translations with exit 0."""
    damaged = run / "checkpoint_avg.pt"
    data = bytearray(damaged.read_bytes())
    start = rng.randint(0, len(data) - 4000)
    for i in rng.sample(range(start, start + 4000), rng.choice([1, 40, 4000])):
        data[i] ^= 0xFF
    damaged.write_bytes(bytes(data))
    result = mtrain("translate", "--checkpoint", str(damaged), "-i", str(source))
    return one_line_refusal(result) or (result.returncode == 0 and result.stdout.splitlines() == reference_output)


class Server:
    """`mtrain serve` on a free loopback port, ready."""

    def __init__(self, checkpoint: Path, *options: str):
        import httpx

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        command = [sys.executable, "-m", "mtrain", "serve", "--checkpoint", str(checkpoint), "--port", str(self.port)]
        self.process = subprocess.Popen([*command, "--threads", "1", *options], cwd=ROOT, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def poisoned_batch(server: Server, lines: list[str], rng: random.Random) -> bool:
    """20 requests at once, one holding a lone surrogate: that one gets 400, the others 200."""
    import httpx

    bad = rng.randrange(20)
    bodies = [{"text": ["\ud800" if i == bad else lines[i % len(lines)]]} for i in range(20)]

    def post(body: dict) -> int:
        raw = json.dumps(body)  # json escapes the surrogate as \ud800, as a client's JSON would
        headers = {"content-type": "application/json"}
        return httpx.post(f"{server.url}/translate", content=raw, headers=headers, timeout=120).status_code

    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(post, bodies))
    return statuses == [400 if i == bad else 200 for i in range(20)]


def idle_sockets(server: Server, count: int, idle_seconds: float) -> bool:
    """`count` connections that never send: a normal request is still answered, and the server has
    closed all of them once --idle-seconds have passed."""
    import httpx

    sockets = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(count)]
    answered = httpx.post(f"{server.url}/translate", json={"text": ["A dog runs."]}, timeout=30).status_code == 200
    time.sleep(idle_seconds + 2)
    closed = 0
    for s in sockets:
        s.settimeout(5)
        try:
            closed += s.recv(1) == b""
        except ConnectionResetError:
            closed += 1
        except TimeoutError:
            pass
        s.close()
    return answered and closed == count


def half_sent_body_then_sigterm(checkpoint: Path, drain_seconds: float) -> bool:
    """A client sends half a body; SIGTERM: the server exits 0 within --drain-seconds (plus start-up slack)."""
    server = Server(checkpoint, "--drain-seconds", str(drain_seconds), "--idle-seconds", "600")
    half = socket.create_connection(("127.0.0.1", server.port))
    half.sendall(b"POST /translate HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n" + b'{"text": ')
    signalled = time.time()
    server.process.send_signal(signal.SIGTERM)
    try:
        status = server.process.wait(drain_seconds + 20)
    except subprocess.TimeoutExpired:
        status = None
    held = status == 0 and time.time() - signalled < drain_seconds + 5
    half.close()
    server.stop()
    return held


def processes_of(config: Path) -> list[int]:
    found = subprocess.run(["pgrep", "-f", str(config)], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in found]


def launcher_signal(config: Path, metrics: Path, sig: int) -> bool:
    """`mtrain train --nproc-per-node 2` sent `sig` (SIGKILL or SIGHUP) mid-training: no process of the
    job remains after 15 s, every checkpoint loads, and the run then resumes to its end."""
    command = [sys.executable, "-m", "mtrain", "train", "-c", str(config), "--nproc-per-node", "2"]
    launcher = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 5):
        time.sleep(0.05)
    launcher.send_signal(sig)
    launcher.wait()
    deadline = time.time() + 15
    while time.time() < deadline and processes_of(config):
        time.sleep(0.1)
    orphans = processes_of(config)
    for pid in orphans:
        subprocess.run(["kill", "-9", str(pid)])
    resumed = mtrain("train", "-c", str(config), "--nproc-per-node", "2", timeout=600)
    return not orphans and resumed.returncode == 0


def copy_run(reference: Path, target: Path) -> Path:
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(reference, target, ignore=shutil.ignore_patterns(".mtrain.lock"))
    return target
