"""Helpers the tests share: small configs, running the CLI as a user would, waiting for a run.

Fixtures live in conftest.py; everything importable lives here (tests import `helpers`, never
`conftest`).
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import BinaryIO

import torch
from typer.testing import CliRunner

from mtrain.config import Config
from mtrain.config_io import from_dict
from mtrain.special import EOS, PAD

ROOT = Path(__file__).resolve().parent.parent
torch.set_num_threads(min(2, os.cpu_count() or 1))

TINY_MODEL = {
    "d_model": 64,
    "heads": 4,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "d_ff": 128,
    "dropout": 0.0,
    "max_positions": 128,
}


def tiny_config(out_dir: Path, **sections) -> Config:
    """A fast demo config: small corpus, small vocabulary, tiny model; sections override parts."""
    values = {
        "out_dir": str(out_dir),
        "data": {"train": {"demo": 2000}, "valid": {"demo": 100}, "test": {"demo": 100}},
        "tokenizer": {"vocab_size": 200},
        "model": dict(TINY_MODEL),
        "train": {
            "max_tokens": 600,
            "max_steps": 6,
            "warmup_steps": 4,
            "log_every": 2,
            "valid_every": 0,
            "save_every": 3,
        },
    }
    for section, overrides in sections.items():
        if isinstance(values.get(section), dict):
            values[section] = {**values[section], **overrides}
        else:
            values[section] = overrides
    return from_dict(values)


def data_files(directory: Path) -> dict[str, bytes]:
    """A prepared data directory's files (but its manifest, which records times and sizes) by name."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.name != "manifest.json"}


def two_corpora(directory: Path, tag: str = "<X>") -> list[dict]:
    """data.train for two weighted corpora: the demo generator's pairs, and 300 other demo pairs
    written to {directory}/extra.{en,de}, tagged and sampled three times as often."""
    from mtrain.data.demo import generate

    en, de = generate(300, seed=77)
    for lang, lines in (("en", en), ("de", de)):
        (directory / f"extra.{lang}").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return [{"demo": 1200, "weight": 1.0}, {"path": str(directory / "extra"), "weight": 3.0, "tag": tag}]


ENV = {**os.environ, "PYTHONPATH": str(ROOT)}  # subprocesses import this checkout's mtrain


@dataclass
class CliResult:
    """What a command run in-process returns: the parts of subprocess.CompletedProcess tests read."""

    returncode: int
    stdout: str
    stderr: str


class _RealStdinRunner(CliRunner):
    """Typer's CliRunner with a real file as stdin: mtrain reads stdin by file descriptor."""

    def __init__(self, stdin: BinaryIO):
        super().__init__()
        self.stdin = stdin

    @contextlib.contextmanager
    def isolation(self, *args, **kwargs):
        with super().isolation(*args, **kwargs) as streams:
            captured, sys.stdin = sys.stdin, io.TextIOWrapper(self.stdin, encoding="utf-8")
            try:
                yield streams
            finally:
                sys.stdin.detach()
                sys.stdin = captured


def run_cli(*args: str, input: str | None = None, timeout: float = 300) -> CliResult | subprocess.CompletedProcess:
    """Run `mtrain ...` as a user would and capture its output: in this process (Typer's CliRunner:
    no interpreter and torch start-up per call; `input` becomes a real file on stdin, which mtrain
    reads by file descriptor), or in a subprocess where only a real process will do
    (--nproc-per-node launches torchrun from sys.argv)."""
    if "--nproc-per-node" in args:
        return run_cli_process(*args, input=input, timeout=timeout)
    from mtrain.cli import app

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        with tempfile.TemporaryFile() as stdin:
            stdin.write((input or "").encode("utf-8"))
            stdin.seek(0)
            result = _RealStdinRunner(stdin).invoke(app, list(args))
    finally:
        os.chdir(cwd)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):  # a bug: keep its traceback
        stderr += "".join(traceback.format_exception(result.exception))
    return CliResult(result.exit_code, result.stdout, stderr)


def run_cli_process(*args: str, input: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m mtrain ...` in a process of its own, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "mtrain", *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
        cwd=ROOT,
    )


def train_until_sigterm(command: list[str], metrics: Path, lines: int, sig: int = signal.SIGTERM) -> tuple[int, str]:
    """Start a training command (`python -m ...`) in a process of its own, send it SIGTERM (or `sig`)
    once its metrics.jsonl has `lines` records, and wait for it: (exit status, stderr). The caller resumes."""
    process = subprocess.Popen([sys.executable, "-m", *command], cwd=ROOT, env=ENV, stderr=subprocess.PIPE, text=True)
    wait_for_lines(metrics, lines)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    return process.returncode, stderr


def wait_for_lines(path: Path, count: int, timeout: float = 180) -> None:
    """Wait until a file (a run's metrics.jsonl) has at least `count` lines."""
    deadline = time.time() + timeout
    while time.time() < deadline and not (path.exists() and len(path.read_text().splitlines()) >= count):
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_process(checkpoint: Path, *args: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """A real `mtrain serve` process of `checkpoint` on a free loopback port, ready (or failed)."""
    import httpx

    port = free_port()
    command = [sys.executable, "-m", "mtrain", "serve", "--checkpoint", str(checkpoint), "--port", str(port)]
    command += ["--threads", "1", *args]
    process = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    try:
        yield url, process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# ----------------------------------------------------------------------------- a scripted model
VOCAB = 6  # pad, unk, bos, eos and two words: unk (1), 4 and 5 can be produced besides </s>
PRODUCIBLE = (1, 4, 5)


class Scripted:
    """Stands in for the Transformer: next-token probabilities are a function of the prefix.
    The prefix is kept in the decoder's key/value cache (as one-dimensional "keys"), which the
    search reorders with its beams, so these tests check the cache's reordering too."""

    def __init__(self, probabilities):
        self.probabilities = probabilities  # prefix (tuple of ids, <s> excluded) -> VOCAB probabilities
        self.config = SimpleNamespace(max_positions=64)
        self.decoder = [None]

    def encode(self, src):
        return torch.zeros(src.size(0), 1, 1), (src != PAD)[:, None, None, :]

    def cross_attention_memory(self, memory):
        return [(memory, memory)]

    def decode_step(self, tokens, memory_kv, src_mask, caches, step):
        as_keys = tokens[:, None, :, None].float()  # (batch, heads 1, steps, d_k 1)
        prefixes, _ = caches[0].append(as_keys, as_keys)
        return torch.tensor([self.probabilities(tuple(row[1:])) for row in prefixes[:, 0, :, 0].long().tolist()]).log()


def random_probabilities(prefix: tuple) -> list[float]:
    """A fixed random distribution over the producible tokens and </s>, different for every prefix."""
    rng = random.Random(str(prefix))
    weights = [0.0] * VOCAB
    for token in (*PRODUCIBLE, EOS):
        weights[token] = rng.random() + 0.05
    return [w / sum(weights) for w in weights]
