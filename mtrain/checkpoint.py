"""Checkpoints: atomic save, safe load, weight averaging, compatibility checks.

A checkpoint is a plain dict of tensors and Python primitives, loaded with
`torch.load(weights_only=True)` so that opening one can never run code. It carries the
resolved config and the sentencepiece model(s), so a checkpoint alone is enough to translate.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mtrain import __version__
from mtrain.config import Config, from_dict
from mtrain.data.tokenizer import Tokenizer
from mtrain.errors import MtrainError
from mtrain.files import write_atomically

FORMAT = 1  # the version of the checkpoint layout below; bump it when the layout changes


def save(state: dict, path: Path) -> None:
    """torch.save, atomically (files.write_atomically)."""
    write_atomically(Path(path), lambda tmp: torch.save(state, tmp))


def load(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint without executing anything from it."""
    path = Path(path)
    if not path.is_file():
        raise MtrainError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception:  # a truncated file, another format, or a pickle with code in it
        raise MtrainError(
            f"{path} is not an mtrain checkpoint (not a PyTorch file, or a damaged one); "
            "give a checkpoint_*.pt written by mtrain train or mtrain average"
        ) from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise MtrainError(f"{path} is not an mtrain checkpoint (no model weights and config in it)")
    if not isinstance(state.get("spm"), dict) or not isinstance(state["spm"].get("src"), bytes):
        raise MtrainError(
            f"{path} has no sentencepiece model in it (damaged, or not written by mtrain); use a checkpoint written "
            "by mtrain train or mtrain average"
        )
    if state.get("format", FORMAT) != FORMAT:
        raise MtrainError(
            f"{path} has checkpoint format {state.get('format')!r}; this mtrain ({__version__}) reads format {FORMAT}; "
            "use the mtrain version that wrote it"
        )
    return state


def config_of(state: dict, path: Path) -> Config:
    """The checkpoint's config, rebuilt through the same validation as a YAML file's."""
    try:
        return from_dict(state["config"])
    except MtrainError as e:
        raise MtrainError(f"{path} carries an invalid config ({e}); it was not written by this mtrain") from None


def tokenizer_of(state: dict, path: Path) -> Tokenizer:
    """The checkpoint's sentencepiece models, checked against the sizes of its embeddings."""
    try:
        tokenizer = Tokenizer(state["spm"]["src"], state["spm"]["tgt"])
    except MtrainError as e:
        raise MtrainError(f"{path}: its sentencepiece model is damaged ({e})") from None
    weights = state["model"]
    for side, size, key in (
        ("source", tokenizer.src_vocab_size, "src_embed.weight"),
        ("target", tokenizer.tgt_vocab_size, "output.weight"),
    ):
        if key in weights and weights[key].shape[0] != size:
            raise MtrainError(
                f"{path}: the {side} sentencepiece model has {size} pieces but the weights have "
                f"{weights[key].shape[0]} rows; "
                "the checkpoint was assembled from different runs: use one written by mtrain train or mtrain average"
            )
    return tokenizer


def check_shape(state: dict, config: Config, path: Path) -> None:
    """Refuse to continue from a checkpoint of another model shape (dropout may differ)."""
    saved = state["config"]["model"]
    for key, value in vars(config.model).items():
        if key != "dropout" and saved.get(key) != value:
            raise MtrainError(
                f"checkpoint {path} has model.{key}={saved.get(key)} but the config says {value}; use the same model "
                "shape, or --restart / a new out_dir"
            )


def is_weights_only(state: dict) -> bool:
    """An averaged checkpoint has weights but no optimizer state or random streams to resume."""
    return "optimizer" not in state


def describe(state: dict, path: Path, engine: str) -> dict:
    """What a served or exported model reports about itself (languages, shape, decode settings, step)."""
    config = state["config"]
    return {
        "engine": engine,
        "src_lang": config["data"]["src_lang"],
        "tgt_lang": config["data"]["tgt_lang"],
        "model": config["model"],
        "decode": config["decode"],
        "step": int(state.get("progress", {}).get("step", 0)),
        "checkpoint": str(path),
        "joint_vocabulary": state["spm"]["tgt"] is None,
    }


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
    steps = sorted(int(p.stem.split("_", 1)[1]) for p in paths)
    if save_every <= 0 or len(steps) < 2:
        return []
    scheduled = range((steps[0] // save_every + 1) * save_every, steps[-1], save_every)
    return [s for s in scheduled if s not in steps]


def newest_readable(paths: list[Path]) -> tuple[Path, dict] | None:
    """The newest of `paths` (oldest first) that loads, with its state."""
    for path in reversed(paths):
        try:
            return path, load(path)
        except MtrainError:
            continue
    return None


def average_command(inputs: list[Path], output: Path, last: int, allow_gaps: bool = False, best: int = 0) -> list[Path]:
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
    save(average(paths), output)
    return paths


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
            f"scheduled checkpoints are missing between steps {paths[0].stem.split('_')[1]} and "
            f"{paths[-1].stem.split('_')[1]} "
            f"(steps {', '.join(map(str, missing))}); pass --allow-gaps to average {', '.join(p.name for p in paths)} "
            "anyway"
        )
