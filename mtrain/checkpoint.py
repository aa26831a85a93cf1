"""Checkpoints: atomic save, safe load, weight averaging, compatibility checks.

A checkpoint is a plain dict of tensors and Python primitives, loaded with
`torch.load(weights_only=True)` so that opening one can never run code. It carries the
resolved config and the sentencepiece model(s), so a checkpoint alone is enough to translate.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from mtrain import __version__
from mtrain.errors import MtrainError

FORMAT = 1  # the version of the checkpoint layout below; bump it when the layout changes


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same directory, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save(state: dict, path: Path) -> None:
    """torch.save, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint without executing anything from it."""
    path = Path(path)
    if not path.is_file():
        raise MtrainError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception:  # a truncated file, another format, or a pickle with code in it
        raise MtrainError(f"{path} is not an mtrain checkpoint (not a PyTorch file, or a damaged one); "
                          "give a checkpoint_*.pt written by mtrain train or mtrain average") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise MtrainError(f"{path} is not an mtrain checkpoint (no model weights and config in it)")
    if state.get("format", FORMAT) != FORMAT:
        raise MtrainError(f"{path} has checkpoint format {state.get('format')!r}; this mtrain ({__version__}) reads format {FORMAT}; "
                          "use the mtrain version that wrote it")
    return state


def describe(state: dict, path: Path, engine: str) -> dict:
    """What a served or exported model reports about itself (languages, shape, decode settings, step)."""
    config = state["config"]
    return {"engine": engine, "src_lang": config["data"]["src_lang"], "tgt_lang": config["data"]["tgt_lang"],
            "model": config["model"], "decode": config["decode"], "step": int(state.get("progress", {}).get("step", 0)),
            "checkpoint": str(path), "joint_vocabulary": state["spm"]["tgt"] is None}


def link_copy(source: Path, target: Path) -> None:
    """Make `target` a copy of `source` (a hard link when possible: no extra disk, still atomic)."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        import shutil

        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def numbered(run_dir: Path) -> list[Path]:
    """checkpoint_<step>.pt files of a run directory, oldest first."""
    found = []
    for path in Path(run_dir).glob("checkpoint_*.pt"):
        suffix = path.stem.split("_", 1)[1]
        if suffix.isdigit():
            found.append((int(suffix), path))
    return [path for _, path in sorted(found)]


def average(paths: list[Path]) -> dict:
    """A checkpoint whose model weights are the mean of the given checkpoints' (the paper
    averages the last 5 checkpoints for base models, 20 for big ones). The first checkpoint's
    config, vocabulary and progress are kept; the optimizer state is dropped."""
    if not paths:
        raise MtrainError("no checkpoints to average")
    first = load(paths[0])
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
    return {**{k: v for k, v in first.items() if k not in ("optimizer", "scaler", "rng")}, "model": model,
            "averaged": [str(p) for p in paths]}


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


def average_command(inputs: list[Path], output: Path, last: int) -> list[Path]:
    """`mtrain average`: the last `last` numbered checkpoints of a run directory, or the given files,
    averaged into `output`. Returns the checkpoints used."""
    if last < 1:
        raise MtrainError(f"--last must be >= 1, got {last}")
    if Path(output).is_dir():
        raise MtrainError(f"--output {output} is a directory; give a file name, e.g. {Path(output) / 'checkpoint_avg.pt'}")
    if len(inputs) == 1 and Path(inputs[0]).is_dir():
        paths = numbered(inputs[0])[-last:]
        if not paths:
            raise MtrainError(f"no checkpoint_<step>.pt files in {inputs[0]}")
    else:
        paths = list(inputs)
    save(average(paths), output)
    return paths
