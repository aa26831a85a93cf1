"""scripts/gpu_check.py without its subprocesses: the table it writes, the time box, the refusal on a
machine without a GPU. The whole script runs end to end on the CPU in CI's smoke test
(`bash scripts/gpu_check.sh --dry-run`, scripts/smoke.sh)."""

from __future__ import annotations

import argparse
import importlib.util
import subprocess

import pytest

from helpers import ROOT

spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)

THROUGHPUT = {"shape": "base", "precision": "bf16", "impl": "mtrain", "params_m": 63.1,
              "median_tgt_tokens_per_s": 250000, "peak_memory_mb": 9000, "warmup_s": 2.0, "mfu": 0.31}  # fmt: skip
RESULTS = {
    "throughput": {"results": [THROUGHPUT]},
    "ddp": {"plain_tgt_tokens_per_s": 200000, "torchrun_1_tgt_tokens_per_s": 190000},
    "recipe": {
        "test_set": "Multi30K EN->DE test 2016",
        "steps": 5000,
        "train_s": 180,
        "median_tgt_tokens_per_s": 150000,
        "bleu": 40.1,
        "chrf": 64.2,
    },
    "decode": {"results": [{"engine": "mtrain-torch", "setting": "cuda-bf16", "beam": 4, "sentences_per_s": 900.0}]},
}


def args(tmp_path, **values) -> argparse.Namespace:
    defaults = {"budget_minutes": 8.0, "dry_run": True, "data": None, "train_minutes": 3.0, "out": tmp_path}
    return argparse.Namespace(**{**defaults, **values})


def test_the_table_has_a_row_per_figure_and_says_what_did_not_run():
    report = {
        "environment": {"date": "2026-12-01 10:00 UTC", "gpu": "NVIDIA H200", "python": "3.12.3", "torch": "2.11.0",
                        "torch_cuda": "13.0", "nccl_available": True, "ctranslate2": None, "cpu_count": 16},
        "stages": {name: {"status": "ok", "result": result} for name, result in RESULTS.items()},
    }  # fmt: skip
    report["stages"]["decode"] = {"status": "skipped", "note": "20 s of the budget left, the stage needs 30 s"}
    table = gpu_check.markdown(report).splitlines()
    assert table[0].startswith("GPU check, 2026-12-01 10:00 UTC: NVIDIA H200; Python 3.12.3, torch 2.11.0 (CUDA 13.0)")
    assert table[2:4] == ["| stage | figure | value |", "| --- | --- | --- |"]
    assert table[4] == (
        "| throughput | base bf16 mtrain (63.1M) | 250,000 tgt tok/s, peak 9,000 MB, MFU 31.0%, warm-up 2.0 s |"
    )
    assert table[5] == "| ddp | plain / torchrun 1 process | 200,000 / 190,000 tgt tok/s (ratio 0.950) |"
    assert table[6] == "| recipe | Multi30K EN->DE test 2016 | BLEU 40.1, chrF 64.2 |"
    assert table[-1] == "| decode | skipped | 20 s of the budget left, the stage needs 30 s |"


def test_stages_run_in_order_while_the_budget_lasts_and_a_failure_does_not_stop_the_rest(tmp_path, monkeypatch):
    ran = []

    def stage(name, outcome):
        def function(args, out, timeout, log):
            ran.append((name, timeout))
            if isinstance(outcome, Exception):
                raise outcome
            return outcome

        return function

    outcomes = {
        "throughput": RESULTS["throughput"],
        "ddp": RuntimeError("torchrun exited 1"),
        "recipe": subprocess.TimeoutExpired("mtrain", 1),
        "decode": RESULTS["decode"],
    }
    for name, outcome in outcomes.items():
        monkeypatch.setattr(gpu_check, f"stage_{name}", stage(name, outcome))
    report = gpu_check.run_stages(args(tmp_path), tmp_path)
    assert [name for name, _ in ran] == ["throughput", "ddp", "recipe", "decode"]
    assert all(0 < timeout <= gpu_check.STAGES[name][1] for name, timeout in ran)  # capped by stage and budget
    assert [e["status"] for e in report["stages"].values()] == ["ok", "failed", "timeout", "ok"]
    assert report["stages"]["ddp"]["note"] == "torchrun exited 1"

    ran.clear()
    report = gpu_check.run_stages(args(tmp_path, budget_minutes=-1), tmp_path)
    assert not ran and {e["status"] for e in report["stages"].values()} == {"skipped"}


def test_without_a_gpu_only_the_dry_run_runs(tmp_path):
    if gpu_check.environment(False)["cuda_available"]:
        pytest.skip("this machine has a GPU")
    with pytest.raises(SystemExit, match="torch sees no CUDA GPU here; use --dry-run for the CPU rehearsal"):
        gpu_check.run_stages(args(tmp_path, dry_run=False), tmp_path)
