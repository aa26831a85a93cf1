"""Nothing of the user's is deleted or overwritten by a command pointed at the wrong place (the
second fault pass, issue 34, "Data loss"): export --force, translate -o onto its input, average -o
onto a training checkpoint or an input, and a tune grid or --write that would store a broken value."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mtrain.config_io import decode_config
from mtrain.errors import MtrainError
from mtrain.evaluation.tune import parse_lenpens
from mtrain.run import checkpoint

from helpers import run_cli


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny finished run (a copy of tests/fixtures/run-0.1.0): checkpoint_2.pt, checkpoint_4.pt,
    checkpoint_last.pt, checkpoint_avg.pt and its prepared data."""
    out = tmp_path_factory.mktemp("data-loss") / "run"
    shutil.copytree(Path(__file__).resolve().parent / "fixtures" / "run-0.1.0", out)
    return out


def files_of(directory):
    return {p.relative_to(directory): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def one_line_error(result, message: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_export_force_never_replaces_the_run_directory_or_a_directory_it_did_not_write(run, tmp_path):
    before = files_of(run)
    ckpt = str(run / "checkpoint_avg.pt")
    one_line_error(
        run_cli("export", "--checkpoint", ckpt, "--format", "ctranslate2", "-o", str(run), "--force"),
        "holds the checkpoint being exported",
    )
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("three years")
    one_line_error(
        run_cli("export", "--checkpoint", ckpt, "--format", "ctranslate2", "-o", str(mine), "--force"),
        "is not a directory mtrain exported (it has no mtrain.json): --force replaces only an earlier export",
    )
    assert files_of(run) == before and (mine / "thesis.txt").read_text() == "three years"
    exported = tmp_path / "ct2"
    for _ in range(2):  # an earlier export is replaced
        assert (
            run_cli(
                "export", "--checkpoint", ckpt, "--format", "ctranslate2", "-o", str(exported), "--force"
            ).returncode
            == 0
        )
    assert (exported / "mtrain.json").is_file()


def test_translate_refuses_to_write_onto_its_input_also_through_a_link(run, tmp_path):
    source = tmp_path / "in.en"
    source.write_text("The dog sees a cat.\n")
    link = tmp_path / "link.en"
    link.symlink_to(source)
    for output in (source, link):
        result = run_cli(
            "translate", "--checkpoint", str(run / "checkpoint_avg.pt"), "-i", str(source), "-o", str(output)
        )
        one_line_error(result, "is the input file; write the translations to another file")
    assert source.read_text() == "The dog sees a cat.\n"


def test_average_never_overwrites_an_input_or_a_training_checkpoint_without_force(run, tmp_path):
    last = run / "checkpoint_last.pt"
    before = last.read_bytes()
    one_line_error(
        run_cli("average", str(run / "checkpoint_2.pt"), str(last), "-o", str(last)),
        "is one of the checkpoints being averaged",
    )
    one_line_error(
        run_cli("average", str(run), "--last", "2", "-o", str(last)),
        "is a training checkpoint (with its optimizer state, which an average drops)",
    )
    assert last.read_bytes() == before
    copy = tmp_path / "last-copy.pt"
    copy.write_bytes(before)
    assert run_cli("average", str(run), "--last", "2", "-o", str(copy), "--force").returncode == 0
    assert checkpoint.is_weights_only(checkpoint.load(copy))
    again = run_cli("average", str(run), "--last", "2", "-o", str(copy))  # an earlier average may be replaced
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize("grid", ["nan", "0.6,inf", "0.4:nan:0.2", "1e308", "0:1e300:1"])
def test_tune_grids_must_be_finite_and_in_range(grid):
    with pytest.raises(MtrainError, match=f"--lenpen '{grid}': expected START:STOP:STEP"):
        parse_lenpens(grid)


def test_tune_write_stores_only_settings_the_config_accepts(run, tmp_path):
    result = run_cli("tune", "--checkpoint", str(run / "checkpoint_avg.pt"), "--lenpen", "nan", "--write")
    one_line_error(result, "--lenpen 'nan': expected")
    with pytest.raises(MtrainError, match="decode.lenpen"):
        decode_config(checkpoint.load(run / "checkpoint_avg.pt")["config"]["decode"], lenpen=float("nan"))
    out = tmp_path / "tuned.pt"
    written = run_cli(
        "tune", "--checkpoint", str(run / "checkpoint_avg.pt"), "--lenpen", "0.8", "--write", "-o", str(out)
    )
    assert written.returncode == 0, written.stderr
    assert checkpoint.load(out)["config"]["decode"]["lenpen"] == 0.8


def test_export_refuses_the_current_directory_and_its_parents(run):
    ckpt = str(run / "checkpoint_avg.pt")
    one_line_error(  # run_cli runs in the repository root
        run_cli("export", "--checkpoint", ckpt, "--format", "ctranslate2", "-o", ".", "--force"),
        "--output . is the current directory or holds it",
    )
    parent = run_cli("export", "--checkpoint", ckpt, "--format", "ctranslate2", "-o", "..", "--force")
    assert parent.returncode == 2 and parent.stderr.count("\n") == 1  # it holds the repository (or the checkpoint)
    assert (
        "--output .. is the current directory or holds it" in parent.stderr or "holds the checkpoint" in parent.stderr
    )


@pytest.mark.parametrize(
    "option, message",
    [
        (["--beam", "100000"], "decode.beam (--beam) must be from 1 to 1024, got 100000"),
        (["--lenpen", "1e308"], "decode.lenpen (--lenpen) must be a number from 0 to 10, got 1e+308"),
        (["--sampling", "topk", "--temperature", "1e-300"], "must be a finite number >= 1e-06, got 1e-300"),
        (["--threads", "100000"], "--threads must be from 0 (the default) to 1024, got 100000"),
    ],
)
def test_translate_refuses_decode_values_that_would_exhaust_or_break_it(run, option, message):
    one_line_error(run_cli("translate", "--checkpoint", str(run / "checkpoint_avg.pt"), *option, input="a\n"), message)
