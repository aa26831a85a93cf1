"""Run directories that survive faults, concurrency and bad input (fault injection included)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from mtrain import files
from mtrain.data.prepare import prepare
from mtrain.data.store import PreparedData
from mtrain.deploy.export import staged_directory
from mtrain.errors import MtrainError
from mtrain.evaluation.tune import write_setting
from mtrain.run import checkpoint
from mtrain.run import directory as rundir
from mtrain.run.metrics import DROPPED_METRICS_FILE
from mtrain.training.session import train

from helpers import ENV, ROOT, TINY_MODEL, run_cli, tiny_config


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def config_file(tmp_path, config):
    import yaml

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    return path


def one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in last, last


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run: steps 1-9, numbered checkpoints at 3, 6, 9."""
    out = tmp_path_factory.mktemp("finished")
    train(tiny_config(out, train={"max_steps": 9, "save_every": 3, "log_every": 1, "average_last": 3}))
    return out


def copy_run(source, target):

    shutil.copytree(source, target)
    (target / rundir.LOCK_FILE).unlink(missing_ok=True)
    return target


# ----------------------------------------------------------------------------- checkpoints


def test_flipped_bytes_inside_the_weights_are_refused_by_name(finished, tmp_path):
    damaged = tmp_path / "checkpoint_9.pt"
    damaged.write_bytes((finished / "checkpoint_9.pt").read_bytes())
    flip_weight_bytes(damaged)
    result = run_cli("translate", "--checkpoint", str(damaged), input="a man\n")
    one_line_error(result, f"{damaged} is damaged: its weights do not match the checksum saved with them")


def test_every_checkpoint_is_a_file_of_its_own(finished):
    paths = [
        finished / n
        for n in ("checkpoint_3.pt", "checkpoint_6.pt", "checkpoint_9.pt", "checkpoint_best.pt", "checkpoint_last.pt")
    ]
    inodes = {p.stat().st_ino for p in paths if p.exists()}
    assert all(p.stat().st_nlink == 1 for p in paths if p.exists())
    assert len(inodes) == sum(p.exists() for p in paths)


def flip_weight_bytes(path):
    """Flip 4,000 bytes inside the largest weight's data, where torch.load notices nothing."""
    state = checkpoint.load(path)
    flip_bytes_of(path, max(state["model"].values(), key=lambda t: t.numel()))


def flip_optimizer_bytes(path):
    """Flip bytes inside Adam's second moments of the largest weight: only a resume reads them."""
    moments = checkpoint.load(path)["optimizer"]["state"].values()
    flip_bytes_of(path, max((m["exp_avg_sq"] for m in moments), key=lambda t: t.numel()))


def flip_bytes_of(path, tensor):
    data = bytearray(path.read_bytes())
    start = data.find(tensor.numpy().tobytes()[:64])
    assert start > 0
    data[start + 100 : start + 4100] = bytes(b ^ 0xFF for b in data[start + 100 : start + 4100])
    path.write_bytes(bytes(data))


DAMAGE = {  # how checkpoint_last.pt is damaged, and what the error says about it
    "truncated": (lambda last: last.write_bytes(last.read_bytes()[:1000]), "checkpoint_last.pt is unreadable"),
    "deleted": (lambda last: last.unlink(), "checkpoint_last.pt is missing"),
    "flipped bytes": (flip_weight_bytes, "checkpoint_last.pt is unreadable"),
    "flipped optimizer bytes": (flip_optimizer_bytes, "checkpoint_last.pt is unreadable"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_last_checkpoint_names_the_fallback_and_recover_takes_it(finished, tmp_path, damage):
    """Never a new run over the old one's numbered checkpoints, which rotation would then delete."""
    run = copy_run(finished, tmp_path / "run")
    last = run / "checkpoint_last.pt"
    harm, message = DAMAGE[damage]
    harm(last)
    config = tiny_config(run, train={"max_steps": 11, "save_every": 3, "log_every": 1, "average_last": 3})
    path = config_file(tmp_path, config)
    one_line_error(run_cli("train", "-c", str(path)), message, "checkpoint_9.pt (step 9)", "--recover")
    result = run_cli("train", "-c", str(path), "--recover")
    assert result.returncode == 0, result.stderr
    assert "continuing from" in result.stderr and checkpoint.load(last)["progress"]["step"] == 11


def test_a_kill_inside_the_save_leaves_no_gap_and_resume_rewrites_it(tmp_path, monkeypatch):
    """The process dies after writing checkpoint_6.pt but before checkpoint_last.pt: the resumed
    run replays from step 3 and the finished run has every scheduled checkpoint."""
    config = tiny_config(tmp_path, train={"max_steps": 9, "save_every": 3, "log_every": 1, "average_last": 3})
    real_copy = files.atomic_copy

    def dying_copy(source, target):
        if target.name == "checkpoint_last.pt" and source.name == "checkpoint_6.pt":
            raise KeyboardInterrupt("killed inside the save")
        real_copy(source, target)

    monkeypatch.setattr("mtrain.run.checkpoint.atomic_copy", dying_copy)
    with pytest.raises(KeyboardInterrupt):
        train(config)
    assert checkpoint.load(tmp_path / "checkpoint_last.pt")["progress"]["step"] == 3
    monkeypatch.setattr("mtrain.run.checkpoint.atomic_copy", real_copy)
    train(config)
    assert [p.name for p in checkpoint.numbered(tmp_path)] == ["checkpoint_3.pt", "checkpoint_6.pt", "checkpoint_9.pt"]
    steps = [m["step"] for m in metrics(tmp_path) if m["kind"] == "train"]
    assert steps == list(range(1, 10))  # replayed steps are logged once


def test_averaging_refuses_gaps_and_says_which_steps_it_used(finished, tmp_path):
    run = copy_run(finished, tmp_path / "run")
    (run / "checkpoint_6.pt").unlink()
    out = tmp_path / "avg.pt"
    one_line_error(
        run_cli("average", str(run), "--last", "2", "-o", str(out)),
        "missing between steps 3 and 9 (steps 6)",
        "--allow-gaps",
    )
    assert not out.exists()
    result = run_cli("average", str(run), "--last", "2", "-o", str(out), "--allow-gaps")
    assert result.returncode == 0 and "checkpoint_3.pt, checkpoint_9.pt" in result.stdout


def test_resuming_from_an_averaged_checkpoint_starts_a_fresh_optimizer(finished, tmp_path):
    config = tiny_config(tmp_path / "new", train={"max_steps": 12, "save_every": 3, "log_every": 1})
    path = config_file(tmp_path, config)
    result = run_cli("train", "-c", str(path), "--resume", str(finished / "checkpoint_avg.pt"))
    assert result.returncode == 0, result.stderr
    assert "holds weights only" in result.stderr and "fresh Adam state" in result.stderr


def test_checkpoints_without_or_with_a_mismatched_tokenizer_are_refused(finished, tmp_path):
    state = checkpoint.load(finished / "checkpoint_avg.pt")
    no_spm = {k: v for k, v in state.items() if k != "spm"}
    torch.save(no_spm, tmp_path / "no_spm.pt")
    one_line_error(
        run_cli("translate", "--checkpoint", str(tmp_path / "no_spm.pt"), input="a\n"), "no sentencepiece model"
    )
    other = tiny_config(tmp_path / "other", tokenizer={"vocab_size": 150})
    state["spm"] = {"src": prepare(other).tokenizer().src_model, "tgt": None}
    checkpoint.save(state, tmp_path / "mixed.pt")
    one_line_error(
        run_cli("translate", "--checkpoint", str(tmp_path / "mixed.pt"), input="a\n"),
        "150 pieces but the weights have 200 rows",
    )


# ----------------------------------------------------------------------------- one run at a time, the same config


def test_a_second_run_on_a_locked_directory_is_refused(finished, tmp_path):
    run = copy_run(finished, tmp_path / "run")
    path = config_file(tmp_path, tiny_config(run, train={"max_steps": 12, "save_every": 3}))
    with rundir.RunLock(run):
        result = run_cli("train", "-c", str(path))
        one_line_error(result, "is in use by another mtrain run (pid", f"{os.getpid()}", "choose another out_dir")
        one_line_error(run_cli("prepare", "-c", str(path)), "is in use by another mtrain run")
    assert checkpoint.load(run / "checkpoint_last.pt")["progress"]["step"] == 9  # untouched


def test_a_stale_lock_of_a_dead_process_is_taken_over(finished, tmp_path):
    run = copy_run(finished, tmp_path / "run")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    (run / rundir.LOCK_FILE).write_text(f"pid {dead} on somewhere since 2026-01-01T00:00:00+00:00\n")
    result = run_cli(
        "train", "-c", str(config_file(tmp_path, tiny_config(run, train={"max_steps": 9, "save_every": 3})))
    )
    assert result.returncode == 0, result.stderr
    assert f"left locked by a run that did not end normally (pid {dead}" in result.stderr
    assert (run / rundir.LOCK_FILE).read_text() == ""  # released


def test_changed_training_settings_are_refused_unless_allowed_and_then_recorded(finished, tmp_path):
    run = copy_run(finished, tmp_path / "run")
    saved_yaml = (run / "config.yaml").read_text()
    changed = tiny_config(
        run, train={"max_steps": 12, "save_every": 3, "log_every": 1, "average_last": 3, "lr_scale": 2.0, "seed": 5}
    )
    path = config_file(tmp_path, changed)
    one_line_error(
        run_cli("train", "-c", str(path)), "train.lr_scale 1.0 -> 2.0", "train.seed 1 -> 5", "--allow-config-change"
    )
    assert (run / "config.yaml").read_text() == saved_yaml
    result = run_cli("train", "-c", str(path), "--allow-config-change")
    assert result.returncode == 0, result.stderr
    change = [m for m in metrics(run) if m["kind"] == "config_change"]
    assert change and change[0]["step"] == 9 and change[0]["changes"]["train.lr_scale"] == [1.0, 2.0]


def test_how_long_and_how_often_may_change_with_a_note(finished, tmp_path):
    run = copy_run(finished, tmp_path / "run")
    path = config_file(
        tmp_path, tiny_config(run, train={"max_steps": 12, "save_every": 4, "log_every": 2, "average_last": 3})
    )
    result = run_cli("train", "-c", str(path))
    assert result.returncode == 0, result.stderr
    assert "continuing with changed settings: train.max_steps 9 -> 12" in result.stderr


def test_a_finished_run_run_again_with_other_decode_settings_touches_nothing(finished, tmp_path):
    run = copy_run(finished, tmp_path / "run")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != rundir.LOCK_FILE}
    config = tiny_config(run, train={"max_steps": 9, "save_every": 3, "log_every": 1, "average_last": 3, "threads": 1})
    config.decode.beam = 2
    train(config)
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != rundir.LOCK_FILE}
    assert after == before


def test_another_vocabulary_or_shape_is_refused_before_the_run_directory_changes(finished, tmp_path):
    run = copy_run(finished, tmp_path / "run")
    before = {p.name: p.read_bytes() for p in [*(run / "data").iterdir(), run / "config.yaml"]}
    other_vocabulary = tiny_config(run, tokenizer={"vocab_size": 180}, train={"max_steps": 12, "save_every": 3})
    with pytest.raises(MtrainError, match="another sentencepiece vocabulary"):
        train(other_vocabulary, allow_config_change=True)
    with pytest.raises(MtrainError, match="model.d_ff=128 but the config says 256"):
        train(tiny_config(run, model={"d_ff": 256}, train={"max_steps": 12, "save_every": 3}), allow_config_change=True)
    assert {p.name: p.read_bytes() for p in [*(run / "data").iterdir(), run / "config.yaml"]} == before
    assert not [p for p in run.iterdir() if "tmp" in p.name]


def test_restart_deletes_only_what_mtrain_wrote(finished, tmp_path):
    run = copy_run(finished, tmp_path / "run")
    (run / "notes.txt").write_text("mine")
    (run / "checkpoint_mine.pt").write_text("mine too")
    result = run_cli(
        "train",
        "-c",
        str(config_file(tmp_path, tiny_config(run, train={"max_steps": 3, "save_every": 3}))),
        "--restart",
    )
    assert result.returncode == 0, result.stderr
    assert (run / "notes.txt").read_text() == "mine" and (run / "checkpoint_mine.pt").exists()
    assert [p.name for p in checkpoint.numbered(run)] == ["checkpoint_3.pt"]


# ----------------------------------------------------------------------------- logs and data that match


def test_metrics_are_cut_back_to_the_resumed_step_and_a_partial_line_is_moved_aside(finished, tmp_path):
    run = copy_run(finished, tmp_path / "run")
    original = [m for m in metrics(run) if m["kind"] == "train"]
    checkpoint.save(checkpoint.load(run / "checkpoint_3.pt"), run / "checkpoint_last.pt")  # as if killed after step 7
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "st')  # a full disk cut this line
    result = run_cli(
        "train",
        "-c",
        str(
            config_file(
                tmp_path, tiny_config(run, train={"max_steps": 9, "save_every": 3, "log_every": 1, "average_last": 3})
            )
        ),
    )
    assert result.returncode == 0, result.stderr
    again = [m for m in metrics(run) if m["kind"] == "train"]
    assert [m["step"] for m in again] == list(range(1, 10))
    assert [m["loss"] for m in again] == pytest.approx([m["loss"] for m in original], rel=1e-5)  # replayed exactly
    dropped = (run / DROPPED_METRICS_FILE).read_text().splitlines()
    assert dropped[-1] == '{"kind": "train", "st' and len(dropped) >= 7


def test_a_run_that_died_before_its_first_checkpoint_starts_over_with_its_metrics_moved_aside(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "metrics.jsonl").write_text(
        '{"kind": "train", "step": 1, "loss": 9.0}\n{"kind": "train", "step": 2, "lo'
    )
    train(tiny_config(tmp_path, train={"max_steps": 3, "save_every": 3, "log_every": 1}))
    assert [m["step"] for m in metrics(tmp_path) if m["kind"] == "train"] == [1, 2, 3]
    assert len((tmp_path / DROPPED_METRICS_FILE).read_text().splitlines()) == 2


def test_damaged_prepared_data_is_rebuilt_by_prepare_and_refused_when_opened(finished, tmp_path):
    run = copy_run(finished, tmp_path / "run")
    config = tiny_config(run, train={"max_steps": 9, "save_every": 3})
    bin_file = run / "data" / "train.en.bin"
    good = bin_file.read_bytes()
    bin_file.write_bytes(good[: len(good) // 2])
    with pytest.raises(
        MtrainError, match="prepared data in .* is damaged \\(train.en.bin has .* bytes, the manifest says"
    ):
        PreparedData(run / "data")
    prepare(config)
    assert bin_file.read_bytes() == good
    bin_file.write_bytes(b"\0" * len(good))  # same size, other bytes: the checksum notices
    prepare(config)
    assert bin_file.read_bytes() == good


def test_a_manifest_of_random_bytes_is_rebuilt_or_refused_in_one_line(finished, tmp_path):
    run = copy_run(finished, tmp_path / "run")
    (run / "data" / "manifest.json").write_bytes(os.urandom(300))
    with pytest.raises(MtrainError, match="manifest.json is damaged"):
        PreparedData(run / "data")
    assert prepare(tiny_config(run)).manifest["splits"]["train"]["pairs"] > 0


def test_only_mtrains_own_temporaries_of_dead_writers_are_removed(finished, tmp_path):
    """User files that look like temporaries survive (a pid check is no proof of authorship);
    mtrain's own leftovers of a dead process on this host go; a live writer's, and another host's,
    stay."""
    run = copy_run(finished, tmp_path / "run")
    dead = int(
        subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout
    )
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])

    def ours(role, pid, name, host=files._host()):
        return f"{files.TEMPORARY_PREFIX}{role}~{host}~{pid}~{name}"

    users = [
        run / f"thesis.old-{dead}",
        run / f"notes.tmp-{dead}",
        run / f".draft.{dead}.tmp",
        run / f"data.old-{dead}",
    ]
    litter = [
        run / ours("tmp", dead, "checkpoint_last.pt"),
        run / ours("tmp", dead, "data"),
        run / ours("old", dead, "data"),
    ]
    kept = [
        run / ours("tmp", live.pid, "checkpoint_last.pt"),
        run / ours("tmp", dead, "checkpoint_last.pt", "other-host"),
    ]
    try:
        for path in users[::2] + litter[1:]:
            path.mkdir()
            (path / "work.txt").write_text("keep me")
        for path in users[1::2] + litter[:1] + kept:
            path.write_bytes(b"half")
        result = run_cli(
            "train", "-c", str(config_file(tmp_path, tiny_config(run, train={"max_steps": 9, "save_every": 3})))
        )
        assert result.returncode == 0, result.stderr
        assert all(path.exists() for path in users + kept)
        assert not any(path.exists() for path in litter)
    finally:
        live.kill()


def test_every_writer_clears_its_own_dead_leftovers(tmp_path):
    """What kill -9 of export, average, tune --write or translate -o leaves is cleared by the next
    write of the same path (and only of that path)."""
    dead = int(
        subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout
    )
    target, other = tmp_path / "model.avg.pt", tmp_path / "other.pt"
    litter = tmp_path / files.temporary_name(target).name.replace(f"~{os.getpid()}~", f"~{dead}~")
    elsewhere = tmp_path / files.temporary_name(other).name.replace(f"~{os.getpid()}~", f"~{dead}~")
    litter.write_bytes(b"half"), elsewhere.write_bytes(b"half")
    files.atomic_write_text(target, "whole")
    assert target.read_text() == "whole" and not litter.exists() and elsewhere.exists()
    folder = tmp_path / "ct2"
    stale_dir = tmp_path / files.temporary_name(folder).name.replace(f"~{os.getpid()}~", f"~{dead}~")
    stale_dir.mkdir()
    with staged_directory(folder, force=False) as staged:
        staged.mkdir()
        (staged / "x").write_text("x")
    assert not stale_dir.exists() and (folder / "x").is_file()


# ----------------------------------------------------------------------------- disk faults


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """torch.save's zip writer reports a full disk as a RuntimeError; it is still one line."""
    config = tiny_config(tmp_path, train={"max_steps": 9, "save_every": 3, "log_every": 1})
    real_save = torch.save

    def save_until_step_6(state, path):
        if state["progress"]["step"] >= 6:
            Path(path).write_bytes(b"PK\x03\x04 half a zip")
            raise RuntimeError("[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed writing file")
        real_save(state, path)

    monkeypatch.setattr(torch, "save", save_until_step_6)
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda path: SimpleNamespace(total=10**9, used=10**9, free=0))
    with pytest.raises(
        MtrainError,
        match="saving .*checkpoint_6.pt failed: no space left on the device; free some space; "
        "the checkpoints saved before are intact",
    ):
        train(config)
    assert checkpoint.load(tmp_path / "checkpoint_last.pt")["progress"]["step"] == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(files.TEMPORARY_PREFIX)]


def test_a_checkpoint_that_does_not_fit_in_memory_is_not_called_damaged(finished, monkeypatch):
    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(checkpoint.torch, "load", no_memory)
    with pytest.raises(MtrainError, match="not enough memory to load .*checkpoint_9.pt; free memory"):
        checkpoint.load(finished / "checkpoint_9.pt")


def test_a_full_disk_under_average_and_tune_write_is_one_line(finished, tmp_path, monkeypatch):
    """`average -o` and `tune --write -o` save through torch.save too: its RuntimeError is one line."""

    def full_save(state, path):
        Path(path).write_bytes(b"PK\x03\x04 half a zip")
        raise RuntimeError("[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed writing file")

    monkeypatch.setattr(torch, "save", full_save)
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda path: SimpleNamespace(total=10**9, used=10**9, free=0))
    run = copy_run(finished, tmp_path / "run")
    result = run_cli("average", str(run), "--last", "2", "-o", str(tmp_path / "avg.pt"))
    one_line_error(result, f"saving {tmp_path / 'avg.pt'} failed: no space left on the device")
    with pytest.raises(MtrainError, match="writing .*tuned.pt failed: no space left on the device; free some space"):
        write_setting(run / "checkpoint_9.pt", {"beam": 2, "lenpen": 0.6}, tmp_path / "tuned.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_full_disk_while_appending_metrics_or_preparing_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr("mtrain.run.metrics.open", enospc, raising=False)
    with pytest.raises(MtrainError, match="appending to .*metrics.jsonl failed: no space left"):
        train(tiny_config(tmp_path / "a", train={"max_steps": 3, "save_every": 3}))
    monkeypatch.undo()
    monkeypatch.setattr("mtrain.data.prepare.np.save", enospc)
    with pytest.raises(
        MtrainError,
        match="preparing data in .* failed: no space left on the device; free some space; "
        "the data prepared before is intact",
    ):
        prepare(tiny_config(tmp_path / "b"))
    assert not list((tmp_path / "b").glob("data*"))


def test_a_read_only_out_dir_is_one_line(tmp_path, monkeypatch):
    def read_only(path, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(rundir.os, "open", read_only)
    with pytest.raises(
        MtrainError,
        match="creating the run directory .* failed: the file system is read-only; choose a writable directory",
    ):
        train(tiny_config(tmp_path / "run"))


# ----------------------------------------------------------------------------- bad input


def test_a_dataset_column_of_numbers_is_refused(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [{"en": i, "de": f"satz {i}"} for i in range(50)]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "numbers.parquet"))
    config = tiny_config(
        tmp_path / "run",
        data={
            "train": {"dataset": "parquet", "data_files": [str(tmp_path / "numbers.parquet")]},
            "valid": {},
            "test": {},
        },
    )
    with pytest.raises(MtrainError, match="language 'en': row 0 holds int 0, not text"):
        prepare(config)


def test_a_resume_compares_corpus_lists_item_by_item():
    one = {"data": {"train": {"path": "a", "weight": 1.0}}}  # a config saved before corpus lists
    same = {"data": {"train": [{"path": "a", "weight": 1.0}]}}
    reweighted = {"data": {"train": [{"path": "a", "weight": 2.0}]}}
    added = {"data": {"train": [{"path": "a", "weight": 1.0}, {"path": "b", "weight": 1.0}]}}
    assert rundir.config_changes(one, same) == {}
    assert rundir.config_changes(one, reweighted) == {"data.train.0.weight": (1.0, 2.0)}
    assert rundir.config_changes(same, added) == {"data.train.count": (1, 2)}
    allowed, refused = rundir.split_changes(rundir.config_changes(same, added))
    assert not allowed and refused  # more data changes what is learned: refused without --allow-config-change


def test_dropout_values_are_not_the_models_shape(finished):
    """Changing attention or activation dropout on resume is a training-setting change (weighed by
    --allow-config-change), not a shape change refused outright."""
    state = checkpoint.load(finished / "checkpoint_9.pt")
    regularized = tiny_config(finished, model={**TINY_MODEL, "attention_dropout": 0.1, "activation_dropout": 0.1})
    checkpoint.check_shape(state, regularized, finished / "checkpoint_9.pt")
    with pytest.raises(MtrainError, match="has model.d_ff=128 but the config says 96"):
        checkpoint.check_shape(state, tiny_config(finished, model={**TINY_MODEL, "d_ff": 96}), finished)


@pytest.mark.parametrize("stop", ["ctrl-c", "kill"])
def test_an_interrupted_prepare_is_one_line_and_leaves_nothing(tmp_path, stop):
    """SIGINT to the whole process group (what Ctrl-C does), or SIGTERM to mtrain alone (what kill
    does), while worker processes clean chunks: one line, exit 130, no traceback from any worker, no
    temporary left."""
    config = tiny_config(tmp_path / "run", data={"train": {"demo": 120_000}, "valid": {}, "test": {}})
    path = config_file(tmp_path, config)
    process = subprocess.Popen(
        [sys.executable, "-m", "mtrain", "prepare", "-c", str(path)],
        cwd=ROOT, env=ENV, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    for line in process.stderr:
        if "reading and cleaning" in line:
            time.sleep(0.5)  # the workers are busy with the first chunks
            if stop == "ctrl-c":
                os.killpg(process.pid, signal.SIGINT)
            else:
                process.terminate()
            break
    rest = process.stderr.read()
    assert process.wait(60) == 130, rest
    assert "Traceback" not in rest and rest.strip().splitlines()[-1].startswith("interrupted;")
    assert [p.name for p in (tmp_path / "run").iterdir()] == [rundir.LOCK_FILE]


def test_ctrl_c_while_sentencepiece_reads_its_lines_interrupts_prepare():
    """sentencepiece reads its training lines from C++ and took Ctrl-C there for a failed training
    (one misleading line, exit 2); now the interruption is raised once it returns."""
    from mtrain.config import TokenizerConfig
    from mtrain.data.tokenizer import train_model

    def lines():
        for i in range(100_000):
            if i == 1000:
                os.kill(os.getpid(), signal.SIGINT)
            yield f"a dog runs to the house number {i} and the cat sleeps"

    with pytest.raises(KeyboardInterrupt):
        train_model(lines(), TokenizerConfig(vocab_size=60), seed=1)


def test_a_full_disk_under_any_command_is_one_line(finished, tmp_path, monkeypatch):
    """The command line turns a full disk (or a read-only target) wherever a command writes into
    one line, exit 2: here `translate -o`."""

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr("mtrain.cli.translate.atomic_write_text", full)
    source = tmp_path / "in.en"
    source.write_text("a man\n")
    result = run_cli(
        "translate",
        "--checkpoint",
        str(finished / "checkpoint_9.pt"),
        "-i",
        str(source),
        "-o",
        str(tmp_path / "out.de"),
    )
    one_line_error(result, f"{tmp_path / 'out.de'}: no space left on the device; free some space")
    assert result.returncode == 2


def test_the_end_of_run_average_leaves_out_checkpoints_of_the_early_part():
    from mtrain.run.averaging import settled

    paths = lambda *steps: [Path(f"checkpoint_{s}.pt") for s in steps]  # noqa: E731
    assert settled(paths(150, 300, 450), warmup_steps=600) == paths(450)  # a short run: the last one alone
    assert settled(paths(150, 300, 450), warmup_steps=100) == paths(300, 450)  # the first half left out
    assert settled(paths(1350, 1500, 1650, 1800, 1948), warmup_steps=600) == paths(1350, 1500, 1650, 1800, 1948)
