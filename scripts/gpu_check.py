"""GPU evidence in one command (scripts/gpu_check.sh runs this): the figures mtrain lacks, within a
time budget, written as one JSON file and a markdown table.

    bash scripts/gpu_check.sh [--out DIR] [--budget-minutes 9] [--train-minutes 2.5] [--data DIR] [--dry-run]

Stages, each in processes of its own, time-boxed, and skipped with a note when the budget left is
too small (the later ones first need the earlier ones' time):

  environment  torch and its CUDA build, the GPU, bf16, NCCL, the optional packages
  throughput   scripts/bench_train.py on CUDA in bf16, the Multi30K shape and the paper's base
               shape, eager and with train.compile (compile time apart): target tokens/s, peak
               memory, model FLOPs utilisation against the GPU's dense bf16 peak
  ddp          the same training steps under `torchrun --nproc-per-node 1` (NCCL) against a plain run
  recipe       the Multi30K recipe trained for --train-minutes on the GPU, then tuned on validation
               (mtrain tune) and test 2016 decoded once: BLEU, chrF, steps reached
  decode       scripts/bench_decode.py on the recipe's model: mtrain bf16 beam 4 and greedy, and
               CTranslate2 (float32, int8) on CUDA when the installed CTranslate2 has CUDA

--dry-run runs every stage on the CPU with tiny shapes and the demo corpus, a few steps each, and
writes the same table: the test suite runs it, so the script works before a GPU ever appears.
mtrain runs from the working tree (PYTHONPATH, no install), on whatever torch is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MULTI30K_SPLITS = {"train": "train", "valid": "val", "test": "test_2016_flickr"}
# What each stage needs at least (seconds) before it is started, and at most may take.
STAGES = {  # name: (minimum, cap); the dry run starts a stage whatever is left
    "throughput": (60, 210),  # four runs, two of them compiled (a cold compile takes a minute or more)
    "ddp": (40, 75),
    "recipe": (120, 330),  # --train-minutes of training, then tuning and one test decode
    "decode": (30, 60),
}
TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1"]
TINY_MODEL = ["model.d_model=32", "model.heads=2", "model.encoder_layers=1", "model.decoder_layers=1", "model.d_ff=64"]


class Budget:
    """The wall-clock left of --budget-minutes; a stage gets min(its cap, what is left)."""

    def __init__(self, minutes: float):
        self.deadline = time.monotonic() + 60 * minutes

    def left(self) -> float:
        return self.deadline - time.monotonic()


def run(command: list[str], timeout: float, log: Path) -> subprocess.CompletedProcess:
    """A command of a stage, its output appended to the stage's log; raises TimeoutExpired."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "PYTHONUNBUFFERED": "1"}
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"$ {shlex.join(command)}\n")
        f.flush()
        result = subprocess.run(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=f, text=True, timeout=timeout
        )
        f.write(result.stdout)
    if result.returncode:
        raise RuntimeError(f"{shlex.join(command[:4])} ... exited {result.returncode}; see {log.name}")
    return result


def mtrain(*args: str) -> list[str]:
    return [sys.executable, "-m", "mtrain", *args]


def environment(dry_run: bool) -> dict:
    import torch

    facts = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "nccl_available": torch.distributed.is_available() and torch.distributed.is_nccl_available(),
        "cpu_count": os.cpu_count(),
        "dry_run": dry_run,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        facts |= {
            "gpu": props.name,
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "bf16_supported": torch.cuda.is_bf16_supported(),
        }
    for package in ("ctranslate2", "transformers", "sentencepiece", "sacrebleu"):
        try:
            module = __import__(package)
            facts[package] = getattr(module, "__version__", "installed")
        except ImportError:
            facts[package] = None
    if facts["ctranslate2"]:
        import ctranslate2

        facts["ctranslate2_cuda_devices"] = ctranslate2.get_cuda_device_count()
    return facts


def data_overrides(args: argparse.Namespace, out: Path) -> list[str]:
    """--set overrides that read Multi30K from --data (the dry run: the demo corpus) and prepare it
    once into {out}/data for every stage."""
    if args.dry_run:
        demo = ["data.train.demo=3000", "data.valid.demo=100", "data.test.demo=100", "tokenizer.vocab_size=200"]
        return demo + [f"data.{split}.path=" for split in MULTI30K_SPLITS] + [f"data.dir={out / 'data'}"]
    paths = [f"data.{split}.path={args.data / name}" for split, name in MULTI30K_SPLITS.items()]
    return paths + [f"data.dir={out / 'data'}"]


def device_overrides(args: argparse.Namespace) -> list[str]:
    """Train on the GPU in bf16; the dry run: on the CPU in fp32, with a tiny model."""
    if args.dry_run:
        return TINY_MODEL + ["train.device=cpu", "train.precision=fp32"]
    return ["train.device=cuda", "train.precision=bf16"]


def sets(overrides: list[str]) -> list[str]:
    return [arg for o in overrides for arg in ("--set", o)]


def last_json(result: subprocess.CompletedProcess) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def stage_throughput(args: argparse.Namespace, out: Path, timeout: float, log: Path) -> dict:
    """scripts/bench_train.py: eager and compiled, the config's shape (and on the GPU the paper's base)."""
    extra = data_overrides(args, out) + (TINY_MODEL if args.dry_run else [])
    command = [sys.executable, "scripts/bench_train.py", "--config", "configs/multi30k.yaml", "--compile"]
    command += ["--devices", "cpu" if args.dry_run else "cuda", "--precisions", "fp32" if args.dry_run else "bf16"]
    command += ["--steps", "2" if args.dry_run else "20", "--shapes", "config" if args.dry_run else "config,base"]
    return last_json(run(command + sets(extra), timeout, log))


def train_rate(command: list[str], run_dir: Path, timeout: float, log: Path) -> float:
    """Median target tokens/s that a training run logged, the first (warm-up) window left out."""
    run(command, timeout, log)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return statistics.median([r["tgt_tokens_per_s"] for r in records if r["kind"] == "train"][1:])


def stage_ddp(args: argparse.Namespace, out: Path, timeout: float, log: Path) -> dict:
    """The same steps in a plain process and under torchrun with one process (NCCL on the GPU)."""
    steps = 12 if args.dry_run else 200
    launchers = {"plain": mtrain("train"), "torchrun_1": [sys.executable, *TORCHRUN, "-m", "mtrain", "train"]}
    results = {}
    for name, launcher in launchers.items():
        run_dir = out / f"ddp-{name}"
        every = [f"train.max_steps={steps}", f"train.log_every={steps // 4}", f"train.save_every={steps}"]
        overrides = data_overrides(args, out) + device_overrides(args) + every + [f"out_dir={run_dir}"]
        command = launcher + ["--config", "configs/multi30k.yaml", "--restart", "--set", "train.valid_every=0"]
        results[f"{name}_tgt_tokens_per_s"] = round(train_rate(command + sets(overrides), run_dir, timeout / 2, log))
    return results


def stage_recipe(args: argparse.Namespace, out: Path, timeout: float, log: Path) -> dict:
    """The Multi30K recipe for --train-minutes, tuned on validation, test 2016 decoded once."""
    run_dir, started = out / "multi30k", time.monotonic()
    overrides = data_overrides(args, out) + device_overrides(args) + [f"out_dir={run_dir}"]
    if args.dry_run:
        overrides += ["train.max_steps=10", "train.valid_every=5", "train.save_every=5", "train.log_every=5"]
    else:
        overrides += [f"train.max_minutes={args.train_minutes}", "train.max_steps=100000"]
    run(mtrain("train", "--config", "configs/multi30k.yaml", "--restart", *sets(overrides)), timeout, log)
    trained = time.monotonic() - started
    checkpoint, device = str(run_dir / "checkpoint_avg.pt"), "cpu" if args.dry_run else "cuda"
    grid = "0.6,1.0" if args.dry_run else "0.4:2.0:0.2"
    left = timeout - trained
    run(
        mtrain("tune", "--checkpoint", checkpoint, "--beam", "4", "--lenpen", grid, "--write", "--device", device),
        left,
        log,
    )
    src, ref = (str(out / "data" / f"test.{lang}.txt") for lang in ("en", "de"))
    score = mtrain("eval-bleu", "--checkpoint", checkpoint, "--src", src, "--ref", ref, "--device", device, "--json")
    scores = last_json(run(score, left, log))
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "train"]
    return {
        "test_set": "demo test set (dry run)" if args.dry_run else "Multi30K EN->DE test 2016",
        "steps": steps[-1]["step"],
        "train_s": round(trained),
        "median_tgt_tokens_per_s": round(statistics.median(r["tgt_tokens_per_s"] for r in steps[1:] or steps)),
        "final_valid_nll": next((r["nll"] for r in reversed(records) if r["kind"] == "valid"), None),
        "bleu": round(scores["bleu"], 2),
        "chrf": round(scores["chrf"], 2),
    }


def stage_decode(args: argparse.Namespace, out: Path, timeout: float, log: Path) -> dict:
    """scripts/bench_decode.py on the recipe's model: mtrain beam 4 and greedy; CTranslate2 if installed."""
    checkpoint, data = out / "multi30k" / "checkpoint_avg.pt", out / "data"
    if not checkpoint.is_file():
        raise RuntimeError("no model: the recipe stage did not finish")
    command = [sys.executable, "scripts/bench_decode.py", "--checkpoint", str(checkpoint), "--beams", "4,1"]
    command += ["--src", str(data / "test.en.txt"), "--ref", str(data / "test.de.txt"), "--no-peer"]
    command += ["--devices", "cpu" if args.dry_run else "cuda", "--precisions", "fp32" if args.dry_run else "bf16"]
    return last_json(run(command + ([] if args.ctranslate2 else ["--no-ctranslate2"]), timeout, log))


def run_stages(args: argparse.Namespace, out: Path) -> dict:
    budget = Budget(args.budget_minutes)
    report = {"environment": environment(args.dry_run), "stages": {}}
    args.ctranslate2 = bool(report["environment"]["ctranslate2"])
    if not args.dry_run and not report["environment"]["cuda_available"]:
        raise SystemExit("gpu_check: torch sees no CUDA GPU here; use --dry-run for the CPU rehearsal")
    functions = {"throughput": stage_throughput, "ddp": stage_ddp, "recipe": stage_recipe, "decode": stage_decode}
    for name, function in functions.items():
        minimum, cap = STAGES[name]
        left = budget.left()
        entry: dict = {}
        if left < (0 if args.dry_run else minimum):
            entry = {"status": "skipped", "note": f"{left:.0f} s of the budget left, the stage needs {minimum} s"}
        else:
            start = time.monotonic()
            try:
                entry = {"status": "ok", "result": function(args, out, min(cap, left), out / f"{name}.log")}
            except subprocess.TimeoutExpired:
                entry = {"status": "timeout", "note": f"stopped after {min(cap, left):.0f} s"}
            except (RuntimeError, OSError, ValueError, KeyError) as e:
                entry = {"status": "failed", "note": str(e)}
            entry["seconds"] = round(time.monotonic() - start)
        report["stages"][name] = entry
        print(f"gpu_check: {name}: {entry['status']} {entry.get('note', '')}", file=sys.stderr, flush=True)
    return report


def markdown(report: dict) -> str:
    """The table the docs show: one row per figure, the stages in order."""
    env, stages = report["environment"], report["stages"]
    where = env.get("gpu") or f"CPU ({env['cpu_count']} cores), dry run"
    lines = [
        f"GPU check, {env['date']}: {where}; Python {env['python']}, torch {env['torch']} (CUDA {env['torch_cuda']}), "
        f"NCCL {'yes' if env['nccl_available'] else 'no'}, CTranslate2 {env['ctranslate2'] or 'not installed'}",
        "",
        "| stage | figure | value |",
        "| --- | --- | --- |",
    ]
    for name, entry in stages.items():
        if entry["status"] != "ok":
            lines.append(f"| {name} | {entry['status']} | {entry.get('note', '')} |")
            continue
        for figure, value in figures(name, entry["result"]):
            lines.append(f"| {name} | {figure} | {value} |")
    return "\n".join(lines) + "\n"


def figures(name: str, result: dict) -> list[tuple[str, str]]:
    """(figure, value) rows of one stage's result for the table."""
    if name == "throughput":
        rows = []
        for r in result["results"]:
            mfu = f", MFU {100 * r['mfu']:.1f}%" if "mfu" in r else ""
            value = f"{r['median_tgt_tokens_per_s']:,} tgt tok/s, peak {r['peak_memory_mb']:,} MB{mfu}"
            rows.append(
                (f"{r['shape']} {r['precision']} {r['impl']} ({r['params_m']}M)", f"{value}, warm-up {r['warmup_s']} s")
            )
        return rows
    if name == "ddp":
        plain, torchrun = result["plain_tgt_tokens_per_s"], result["torchrun_1_tgt_tokens_per_s"]
        return [("plain / torchrun 1 process", f"{plain:,} / {torchrun:,} tgt tok/s (ratio {torchrun / plain:.3f})")]
    if name == "recipe":
        speed = f"{result['steps']} steps in {result['train_s']} s, {result['median_tgt_tokens_per_s']:,} tgt tok/s"
        return [(result["test_set"], f"BLEU {result['bleu']}, chrF {result['chrf']}"), ("training", speed)]
    rows = []
    for r in result["results"]:
        bleu = f", BLEU {r['bleu']}" if "bleu" in r else ""
        rows.append((f"{r['engine']} {r['setting']} beam {r['beam']}", f"{r['sentences_per_s']} sent/s{bleu}"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu-check")
    parser.add_argument("--budget-minutes", type=float, default=9.0)
    parser.add_argument("--train-minutes", type=float, default=2.5, help="the recipe stage's training budget")
    parser.add_argument(
        "--data", type=Path, help="the Multi30K files (default: gpu-data/multi30k or ../shared/data/multi30k)"
    )
    parser.add_argument("--dry-run", action="store_true", help="every stage on the CPU, tiny, on the demo corpus")
    args = parser.parse_args()
    if not args.dry_run:
        places = (ROOT / "gpu-data" / "multi30k", ROOT.parent / "shared" / "data" / "multi30k")
        args.data = args.data or next((p for p in places if p.is_dir()), None)
        if args.data is None:
            raise SystemExit("gpu_check: no Multi30K files: copy ../shared/data/multi30k into gpu-data/, or --data DIR")
    args.out.mkdir(parents=True, exist_ok=True)
    report = run_stages(args, args.out.resolve())
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    (args.out / "gpu_check.md").write_text(table)
    print(table)
    unfinished = [name for name, entry in report["stages"].items() if entry["status"] not in ("ok", "skipped")]
    if unfinished or (args.dry_run and any(e["status"] != "ok" for e in report["stages"].values())):
        raise SystemExit(f"gpu_check: not every stage finished ({', '.join(unfinished) or 'skipped'}); see {args.out}")


if __name__ == "__main__":
    main()
