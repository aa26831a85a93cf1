"""`mtrain average`: average checkpoints of a run directory (the last N, or the N best validated)
or listed files into one."""

from __future__ import annotations

import os
from pathlib import Path

from mtrain.errors import MtrainError
from mtrain.files import disk_errors
from mtrain.run.averaging import average, best_validated, check_no_gaps
from mtrain.run.checkpoint import is_weights_only, load, numbered, save


def average_command(
    inputs: list[Path], output: Path, last: int, allow_gaps: bool = False, best: int = 0, force: bool = False
) -> list[Path]:
    """`mtrain average`: the last `last` (or with `best`, the `best` best validated) numbered
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
