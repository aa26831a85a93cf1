"""A run directory written by mtrain before the package was reorganised into layers (commit
5884495, tests/fixtures/run-0.1.0: a tiny model trained 4 steps, its prepared data, metrics and
checkpoints, and the translations that code gave) still translates the same, resumes and averages."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

from mtrain.config_io import from_dict
from mtrain.run import checkpoint
from mtrain.training.session import train

from helpers import run_cli

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "run-0.1.0"


@pytest.fixture
def old_run(tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    return run


@pytest.mark.parametrize("name", ["checkpoint_avg", "checkpoint_last"])
def test_an_old_checkpoint_translates_as_it_did(old_run, tmp_path, name):
    out = tmp_path / "hyp.de"
    result = run_cli(
        "translate", "--checkpoint", str(old_run / f"{name}.pt"), "-i", str(old_run / "sources.en"), "-o", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert out.read_text() == (old_run / f"expected.{name}.de").read_text()


def test_an_old_run_directory_resumes_and_averages(old_run, tmp_path):
    values = yaml.safe_load((old_run / "config.yaml").read_text())
    values["out_dir"] = str(old_run)
    values["train"]["max_steps"] = 6
    result = train(from_dict(values))
    assert result["step"] == 6
    assert sorted(p.name for p in checkpoint.numbered(old_run)) == ["checkpoint_4.pt", "checkpoint_6.pt"]
    old_steps = (FIXTURE / "metrics.jsonl").read_text().splitlines()
    assert (old_run / "metrics.jsonl").read_text().splitlines()[: len(old_steps)] == old_steps  # history kept

    averaged = run_cli("average", str(FIXTURE), "--last", "2", "-o", str(tmp_path / "avg.pt"))
    assert averaged.returncode == 0, averaged.stderr
    mine, theirs = (
        checkpoint.load(tmp_path / "avg.pt")["model"],
        checkpoint.load(FIXTURE / "checkpoint_avg.pt")["model"],
    )
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
