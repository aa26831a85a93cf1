"""What a new user meets first: a training log that shows progress at once, honest re-runs,
timestamps, thread control, n-best and stdin behaviour, compact checkpoints."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
import torch
import yaml

from mtrain.data.store import PreparedData
from mtrain.run import checkpoint

from helpers import ENV, ROOT, run_cli, tiny_config


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A tiny run trained through the CLI (not a terminal: stderr is a pipe), logging every 100 steps."""
    out = tmp_path_factory.mktemp("first_hour")
    config = tiny_config(
        out / "run",
        train={
            "max_tokens": 600,
            "max_steps": 6,
            "warmup_steps": 4,
            "log_every": 100,
            "valid_every": 0,
            "save_every": 3,
            "average_last": 2,
        },
    )
    path = out / "config.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    result = run_cli("train", "-c", str(path), "--threads", "1")
    assert result.returncode == 0, result.stderr
    return path, out / "run", result.stderr


def test_a_non_terminal_log_shows_progress_after_the_first_step(finished_run):
    _, _, log = finished_run
    assert "step 1/6 (16.7%)" in log and "ETA" in log  # not only after log_every = 100 steps
    assert "step 6/6 (100.0%)" in log
    assert "saved checkpoint_3.pt, checkpoint_last.pt at step 3 in" in log
    assert "TensorBoard logging" in log


@pytest.mark.parametrize("load, warned", [(1.8, True), (0.2, False)])
def test_a_busy_machine_is_named_with_the_threads_that_fit(monkeypatch, caplog, load, warned):
    """A stubbed load reading: 2 CPUs, other work keeping 1.8 of them busy; the default 2 threads would
    wait for cores, so one line says what mtrain sees and what to give instead. Idle, or a number of
    threads the user chose: nothing."""
    import mtrain.device as device

    monkeypatch.setattr(device.os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(device, "available_cpus", lambda: 2)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        with caplog.at_level("WARNING", logger="mtrain"):
            assert device.set_threads(0) == 2  # the default: every CPU
            assert device.set_threads(2) == 2  # chosen: kept, and nothing said
    finally:
        torch.set_num_threads(before)
    lines = [r.getMessage() for r in caplog.records if "busy" in r.getMessage()]
    expected = (
        "this machine is busy: load average 1.8 on 2 CPUs, and mtrain runs 2 threads; threads that wait for cores "
        "slow every step: give --threads 1 (train.threads: 1) while that work runs"
    )
    assert lines == ([expected] if warned else [])


def test_threads_option_is_honoured(finished_run):
    _, _, log = finished_run
    assert "1 CPU thread(s) per process" in log
    from mtrain.deploy.engines import open_engine

    before = torch.get_num_threads()
    try:
        open_engine(finished_run[1] / "checkpoint_avg.pt", device="cpu", threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_rerunning_a_finished_run_says_so_and_rewrites_nothing(finished_run):
    path, run, _ = finished_run
    before = {p.name: p.stat().st_mtime_ns for p in run.glob("checkpoint_*.pt")}
    result = run_cli("train", "-c", str(path))
    assert result.returncode == 0, result.stderr
    assert "already finished at step 6 (max_steps 6); raise train.max_steps to continue" in result.stderr
    assert {p.name: p.stat().st_mtime_ns for p in run.glob("checkpoint_*.pt")} == before


def test_metrics_carry_timestamps_and_elapsed_time_continues_across_resumes(finished_run, tmp_path):
    path, run, _ = finished_run
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all("time" in r and r["time"].endswith("+00:00") for r in records)
    finished_elapsed = records[-1]["elapsed_s"]
    longer = run_cli("train", "-c", str(path), "--set", "train.max_steps=7")
    assert longer.returncode == 0, longer.stderr
    assert "resumed from" in longer.stderr
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 7 and last["elapsed_s"] > finished_elapsed


def test_tied_embeddings_are_stored_once_in_an_averaged_checkpoint(finished_run):
    _, run, _ = finished_run
    state = torch.load(run / "checkpoint_avg.pt", weights_only=True)
    model = state["model"]
    assert (
        model["src_embed.weight"].data_ptr()
        == model["tgt_embed.weight"].data_ptr()
        == model["output.weight"].data_ptr()
    )
    weights_bytes = sum(
        t.numel() * t.element_size() for k, t in model.items() if k not in ("tgt_embed.weight", "output.weight")
    )
    saved = io.BytesIO()
    torch.save(model, saved)
    tied_matrix_bytes = model["output.weight"].numel() * 4
    assert len(saved.getvalue()) < weights_bytes + tied_matrix_bytes  # three copies would add two matrices


def test_nbest_gives_n_records_to_every_line_even_an_empty_one(finished_run):
    _, run, _ = finished_run
    result = run_cli(
        "translate",
        "--checkpoint",
        str(run / "checkpoint_avg.pt"),
        "--beam",
        "3",
        "--nbest",
        "3",
        input="The dog sees a cat.\n\nA man runs.\n",
    )
    indices = [line.split(" ||| ")[0] for line in result.stdout.splitlines()]
    assert indices == ["0"] * 3 + ["1"] * 3 + ["2"] * 3


def test_stdin_in_batches_equals_the_file_mode_and_refuses_binary(finished_run, tmp_path):
    _, run, _ = finished_run
    lines = PreparedData(run / "data").raw_text("test", "en")[:40] + ["", "last line without newline"]
    src = tmp_path / "src.en"
    src.write_text("\n".join(lines))
    from_file = run_cli("translate", "--checkpoint", str(run / "checkpoint_avg.pt"), "--input", str(src))
    from_stdin = run_cli("translate", "--checkpoint", str(run / "checkpoint_avg.pt"), input="\n".join(lines))
    assert from_stdin.stdout == from_file.stdout and len(from_stdin.stdout.splitlines()) == len(lines)
    garbage = subprocess.run(
        [sys.executable, "-m", "mtrain", "translate", "--checkpoint", str(run / "checkpoint_avg.pt")]
        + ["--output", str(tmp_path / "out.de")],
        input=b"fine\n\xff\xfe\x00garbage\n",
        capture_output=True,
        env=ENV,
        cwd=ROOT,
        timeout=120,
    )
    assert garbage.returncode == 2
    assert (
        garbage.stderr.decode()
        == "error: line 2 of the standard input is not UTF-8 text; convert the input, e.g. with iconv -t UTF-8\n"
    )
    assert not list(tmp_path.glob("*out.de*"))  # stdin mode writes --output whole or not at all


def test_not_a_checkpoint_says_so_in_a_whole_sentence(tmp_path):
    fake = tmp_path / "notes.pt"
    fake.write_text("just some text")
    with pytest.raises(Exception) as error:
        checkpoint.load(fake)
    assert str(error.value) == (
        f"{fake} is not an mtrain checkpoint (not a PyTorch file, or a damaged one); "
        "give a checkpoint_*.pt written by mtrain train or mtrain average"
    )


def test_a_missing_data_file_says_where_it_was_looked_for(tmp_path, monkeypatch):
    from mtrain.data.sources import text_file
    from mtrain.errors import MtrainError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(MtrainError) as error:
        text_file("data/train", "en")
    assert str(error.value) == (
        f"data file not found: data/train.en (nor data/train.en.gz) in {tmp_path} (relative paths are "
        "read from the directory mtrain runs in); check the path prefix in the config"
    )
