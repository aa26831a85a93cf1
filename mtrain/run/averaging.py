"""Checkpoint averaging (section 6.1: the base models average the last 5 checkpoints): the mean of
several checkpoints' weights, chosen as the last N of a run, the N best validated, or given files."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mtrain.config import TrainConfig
from mtrain.errors import MtrainError
from mtrain.files import disk_errors
from mtrain.run.checkpoint import is_weights_only, load, numbered, save, step_of

log = logging.getLogger("mtrain")


def average(paths: list[Path]) -> dict:
    """A checkpoint whose model weights are the mean of the given checkpoints' (the paper
    averages the last 5 checkpoints for base models, 20 for big ones). The first checkpoint's
    config and vocabulary are kept, the newest one's progress (its step); the optimizer state is dropped."""
    if not paths:
        raise MtrainError("no checkpoints to average")
    first = state = load(paths[0])
    total = {k: v.double() for k, v in first["model"].items() if v.is_floating_point()}
    for path in paths[1:]:
        state = load(path)
        if state["spm"] != first["spm"]:
            raise MtrainError(f"cannot average: {path} uses another vocabulary than {paths[0]}")
        weights = state["model"]
        if weights.keys() != first["model"].keys() or any(weights[k].shape != first["model"][k].shape for k in weights):
            raise MtrainError(f"cannot average: {path} has another model shape than {paths[0]}")
        for key in total:
            total[key] += weights[key].double()
    model = {k: (total[k] / len(paths)).to(v.dtype) if k in total else v for k, v in first["model"].items()}
    _share_tied(model, first["model"])
    newest = max((first, state), key=lambda s: s.get("progress", {}).get("step", 0))
    return {
        **{k: v for k, v in first.items() if k not in ("optimizer", "scaler", "rng", "valid")},
        "model": model,
        "progress": newest.get("progress", {}),
        "averaged": [str(p) for p in paths],
    }


def _share_tied(averaged: dict, original: dict) -> None:
    """Tied weights (one matrix under several names, section 3.4) stay one tensor, so they are
    saved once; averaging key by key would otherwise store the shared matrix three times."""
    first_of: dict[tuple, str] = {}
    for key, tensor in original.items():
        storage = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if storage in first_of:
            averaged[key] = averaged[first_of[storage]]
        else:
            first_of[storage] = key


def missing_steps(paths: list[Path], save_every: int) -> list[int]:
    """Scheduled steps (multiples of save_every) absent between the first and last of `paths`."""
    steps = sorted(step_of(p) for p in paths)
    if save_every <= 0 or len(steps) < 2:
        return []
    scheduled = range((steps[0] // save_every + 1) * save_every, steps[-1], save_every)
    return [s for s in scheduled if s not in steps]


def best_validated(paths: list[Path], count: int) -> list[Path]:
    """The `count` checkpoints of `paths` with the best validation score they were saved with, by
    the run's train.best_metric (lowest loss or highest BLEU), oldest first."""
    scored = []
    for path in paths:
        state = load(path)
        metric = state["config"]["train"].get("best_metric", "loss")
        if state.get("valid") and metric in state["valid"]:
            scored.append((-state["valid"]["bleu"] if metric == "bleu" else state["valid"]["loss"], path))
    if len(scored) < count:
        raise MtrainError(
            f"--best {count}: only {len(scored)} of the {len(paths)} numbered checkpoints were saved with a validation "
            "score; validate whenever a checkpoint is saved (train.valid_every = train.save_every), or use --last"
        )
    chosen = {path for _, path in sorted(scored, key=lambda item: item[0])[:count]}
    return [path for path in paths if path in chosen]


def check_no_gaps(paths: list[Path], allow_gaps: bool) -> None:
    """Refuse to average the last N checkpoints of a run when scheduled ones are missing among them:
    the average would silently cover other steps than the user expects."""
    save_every = int(load(paths[-1])["config"]["train"]["save_every"])
    missing = missing_steps(paths, save_every)
    if missing and not allow_gaps:
        raise MtrainError(
            f"scheduled checkpoints are missing between steps {step_of(paths[0])} and "
            f"{step_of(paths[-1])} "
            f"(steps {', '.join(map(str, missing))}); pass --allow-gaps to average {', '.join(p.name for p in paths)} "
            "anyway"
        )


def settled(paths: list[Path], warmup_steps: int) -> list[Path]:
    """Of a run's last numbered checkpoints, those written when training had settled: after the
    warmup and in the second half of the run (the last one always). The paper averages checkpoints
    of the last hour of twelve; averaging checkpoints from early in a short run mixes weights that
    still change fast, and scores below the last checkpoint alone."""
    last = step_of(paths[-1])
    return [p for p in paths[:-1] if step_of(p) > warmup_steps and 2 * step_of(p) >= last] + paths[-1:]


def average_run(run_dir: Path, train: TrainConfig) -> list[Path]:
    """checkpoint_avg.pt: the mean of the run's last train.average_last numbered checkpoints written
    once training had settled (`settled`), unless scheduled ones are missing among them (then a
    warning says how to average what is there). Returns the checkpoints averaged (none when it was
    not written)."""
    average_last, save_every, warmup_steps = train.average_last, train.save_every, train.warmup_steps
    last = numbered(run_dir)[-average_last:]
    if not last:
        return []
    done = settled(last, warmup_steps)
    if len(done) < len(last):
        log.info(
            "checkpoint_avg.pt leaves out %s: written during warmup (%d steps) or in the first half of the run",
            ", ".join(p.name for p in last if p not in done),
            warmup_steps,
        )
    output = run_dir / "checkpoint_avg.pt"
    missing = missing_steps(done, save_every)
    if missing:
        log.warning(
            "checkpoint_avg.pt not written: the numbered checkpoints lack steps %s; average what is there with "
            "mtrain average %s --last %d --allow-gaps -o %s",
            ", ".join(map(str, missing)),
            run_dir,
            len(done),
            output,
        )
        return []
    with disk_errors(f"saving {output}", "the other checkpoints are intact; free space and run mtrain average"):
        save(average(done), output)
    log.info("checkpoint_avg.pt averages %d checkpoint(s): %s", len(done), ", ".join(x.name for x in done))
    return done


def average_checkpoints(
    inputs: list[Path], output: Path, last: int, allow_gaps: bool = False, best: int = 0, force: bool = False
) -> list[Path]:
    """What `mtrain average` does: the last `last` (or with `best`, the `best` best validated) numbered
    checkpoints of a run directory, or the given files, averaged into `output`. Returns the
    checkpoints used."""
    if last < 1:
        raise MtrainError(f"--last must be >= 1, got {last}")
    if best < 0:
        raise MtrainError(f"--best must be >= 1, got {best}")
    if Path(output).is_dir():
        raise MtrainError(
            f"--output {output} is a directory; give a file name, e.g. {Path(output) / 'checkpoint_avg.pt'}"
        )
    run_dir = len(inputs) == 1 and Path(inputs[0]).is_dir()
    if best and not run_dir:
        raise MtrainError("--best chooses among a run's checkpoints; give one run directory")
    if run_dir:
        paths = numbered(inputs[0])[-last:] if not best else best_validated(numbered(inputs[0]), best)
        if not paths:
            raise MtrainError(f"no checkpoint_<step>.pt files in {inputs[0]}")
        if not best:
            check_no_gaps(paths, allow_gaps)
    else:
        paths = list(inputs)
    check_output(Path(output), paths, force)
    with disk_errors(f"saving {output}", "the checkpoints averaged are intact; free space and average again"):
        save(average(paths), output)
    return paths


def check_output(output: Path, inputs: list[Path], force: bool) -> None:
    """Never write onto a checkpoint being averaged; replace a training checkpoint (one that holds
    Adam's state, which averaging drops) only with --force."""
    if not output.exists():
        return
    if any(p.exists() and os.path.samefile(p, output) for p in inputs):
        raise MtrainError(f"--output {output} is one of the checkpoints being averaged; write the average elsewhere")
    if not force and not is_weights_only(load(output)):
        raise MtrainError(
            f"--output {output} is a training checkpoint (with its optimizer state, which an average drops); "
            "choose another file, or add --force to replace it"
        )
