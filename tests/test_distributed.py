"""DDP with gloo on CPU: 2 processes equal 1 process with the combined batch, resume, failures.
The runs train on two weighted corpora, one of them tagged."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from mtrain.run import checkpoint

from helpers import ENV, ROOT, run_cli, train_until_sigterm, two_corpora, wait_for_lines

MODEL = {
    "d_model": 32,
    "heads": 2,
    "encoder_layers": 1,
    "decoder_layers": 1,
    "d_ff": 64,
    "dropout": 0.0,
    "max_positions": 128,
}


def config_file(tmp_path, name, **train):
    # adam_eps 1e-6: Adam's 1e-9 turns the rounding noise of (near) zero gradients into visible steps,
    # and the order of DDP's all-reduce differs from the single process' sum in the last bits.
    values = {
        "out_dir": str(tmp_path / name),
        "data": {"dir": str(tmp_path / "data"), "train": two_corpora(tmp_path), "valid": {"demo": 60}},
        "tokenizer": {"vocab_size": 150},
        "model": MODEL,
        "train": {
            "max_tokens": 400,
            "max_steps": 12,
            "warmup_steps": 4,
            "log_every": 1,
            "valid_every": 6,
            "save_every": 6,
            "adam_eps": 1e-6,
            "lr_scale": 0.1,
            **train,
        },
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_same_weights(a_path, b_path):
    """Equal up to rounding noise. A different batch anywhere (another pair, another corpus draw)
    moves every weight it touches by ~lr = 1e-3 per step. Rounding noise is far smaller, except
    where Adam divides a (near) zero gradient by its own tiny running norm: a row seen once or
    twice in 12 steps can then move by a few 1e-5 either way. So: all weights within 1e-4, and
    all but 0.5% of each tensor within 1e-5."""
    a, b = checkpoint.load(a_path), checkpoint.load(b_path)
    assert a["progress"]["step"] == b["progress"]["step"]
    d = MODEL["d_model"]
    for key in a["model"]:
        x, y = a["model"][key], b["model"][key]
        if key.endswith("in_proj.bias"):
            # The key bias's gradient is zero in exact arithmetic (softmax ignores a constant added to
            # every score), so Adam moves it by rounding noise alone; compare the query and value parts.
            x, y = torch.cat([x[:d], x[2 * d :]]), torch.cat([y[:d], y[2 * d :]])
        torch.testing.assert_close(x, y, rtol=1e-3, atol=1e-4)
        stray = ~torch.isclose(x, y, rtol=1e-3, atol=1e-5)
        assert stray.float().mean() <= 0.005, f"{key}: {int(stray.sum())} of {stray.numel()} differ by > 1e-5"


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """1 process, update_freq 2: the reference run."""
    tmp = tmp_path_factory.mktemp("ddp")
    result = run_cli("train", "-c", str(config_file(tmp, "single", update_freq=2)))
    assert result.returncode == 0, result.stderr
    return tmp


def test_two_processes_stopped_by_sighup_and_resumed_equal_one_with_the_combined_batch(single):
    """2 processes with update_freq 1 take the same 12 steps as `single`, stopped by SIGHUP (the
    terminal closed) to `mtrain train --nproc-per-node 2` after their second step and resumed: the
    launcher forwards it as SIGTERM (as it forwards SIGTERM and SIGINT) to every rank, they save once
    and exit, the launcher exits 130 and leaves no rank running; the resumed run ends with the single
    process' weights, losses and validation losses (DDP = single process, resumed = uninterrupted)."""
    path = config_file(single, "ddp")
    launcher = ["mtrain", "train", "-c", str(path), "--nproc-per-node", "2"]
    status, stderr = train_until_sigterm(launcher, single / "ddp" / "metrics.jsonl", 2, signal.SIGHUP)
    assert status == 130, stderr[-3000:]
    assert not subprocess.run(["pgrep", "-f", str(path)], capture_output=True, text=True).stdout.split()
    stopped = checkpoint.load(single / "ddp" / "checkpoint_last.pt")["progress"]["step"]
    assert 2 <= stopped < 12, stderr[-2000:]
    result = run_cli("train", "-c", str(path), "--nproc-per-node", "2")
    assert result.returncode == 0, result.stderr
    assert f"at step {stopped}" in result.stderr and "world size 2" in result.stderr
    assert_same_weights(single / "single" / "checkpoint_last.pt", single / "ddp" / "checkpoint_last.pt")
    train = lambda run: [m["loss"] for m in metrics(single / run) if m["kind"] == "train"]
    valid = lambda run: [m["loss"] for m in metrics(single / run) if m["kind"] == "valid"]
    assert train("ddp") == pytest.approx(train("single"), rel=1e-5)
    assert valid("ddp") == pytest.approx(valid("single"), rel=1e-5)  # validation does not depend on world size


FAKE_TORCHRUN = """
import os, subprocess, sys, time
rank = [sys.executable, "-c", "import sys, time; from mtrain.launcher import die_with_parent; die_with_parent(); "
        "open(sys.argv[1], 'w').write('ready'); time.sleep(120)", sys.argv[1] + ".rank"]
subprocess.Popen(rank)
time.sleep(120)
"""


def alive(pid: int) -> bool:
    """Whether a process runs (a zombie waiting for its reaper does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_the_launcher_does_not_import_torch():
    """It only starts torchrun (which imports torch itself) and forwards signals: the seconds torch
    takes to import are not spent twice before the ranks start."""
    code = (
        "import sys, mtrain.cli, mtrain.launcher; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert result.stdout.strip() == "[]", result.stderr


def test_a_launcher_killed_outright_leaves_no_orphans(tmp_path):
    """kill -9 to the --nproc-per-node launcher: torchrun (faked: it starts one fake rank) gets
    SIGTERM from the kernel, and its rank, which asked for the same as mtrain's ranks do, too."""
    marker = tmp_path / "started"
    script = (
        "import sys; import mtrain.launcher as d; "
        f"d.torchrun_command = lambda n, argv: [sys.executable, '-c', {FAKE_TORCHRUN!r}, {str(marker)!r}]; "
        "d.launch(2, [])"
    )
    launcher = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=ENV)
    wait_for_lines(tmp_path / "started.rank", 1, timeout=60)
    found = subprocess.run(["pgrep", "-f", str(marker)], capture_output=True, text=True).stdout.split()
    children = [pid for pid in found if int(pid) != launcher.pid]
    assert len(children) == 2  # the fake torchrun and its rank
    launcher.kill()
    launcher.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(alive(int(pid)) for pid in children):
        time.sleep(0.05)
    assert not any(alive(int(pid)) for pid in children)


def run_fault_worker(config_path, fault: str) -> subprocess.CompletedProcess:
    """Two ranks under torchrun, rank 1 with `fault` injected (see tests/ddp_fault_worker.py)."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
            str(ROOT / "tests" / "ddp_fault_worker.py"),
            str(config_path),
            fault,
        ],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_a_failing_rank_ends_the_job_quickly(single):
    path = config_file(single, "failing", max_steps=1000, dist_timeout_minutes=1.0)
    start = time.time()
    result = run_fault_worker(path, "fail")
    assert result.returncode != 0
    assert "injected failure on rank 1" in result.stderr
    assert time.time() - start < 90


def test_a_rank_out_of_time_stops_every_rank_at_the_same_step(single):
    """Only rank 1's clock runs (10 s per step): with max_minutes 1 both ranks stop after step 6,
    validate and save together, and the weights are the single process' at step 6. Only rank 1
    finds a timed save due (save_every_minutes): both save at every step instead of deadlocking in
    the save's collective."""
    path = config_file(single, "timed", max_minutes=1.0, save_every_minutes=60.0)
    result = run_fault_worker(path, "clock")
    assert result.returncode == 0, result.stderr[-2000:]
    assert all(f"saved checkpoint_last.pt at step {step} " in result.stderr for step in (1, 2, 4, 5))
    assert checkpoint.load(single / "timed" / "checkpoint_last.pt")["progress"]["step"] == 6
    assert [(m["kind"], m["step"]) for m in metrics(single / "timed")][-2:] == [("train", 6), ("valid", 6)]
    assert_same_weights(single / "single" / "checkpoint_6.pt", single / "timed" / "checkpoint_6.pt")
