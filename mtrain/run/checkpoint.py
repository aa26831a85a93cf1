"""Checkpoints: atomic save, safe load, compatibility checks (averaging is in averaging.py).

A checkpoint is a plain dict of tensors and Python primitives, loaded with
`torch.load(weights_only=True)` so that opening one can never run code. It carries the
resolved config and the sentencepiece model(s), so a checkpoint alone is enough to translate.
"""

from __future__ import annotations

import errno
import shutil
import zlib
from pathlib import Path
from typing import Any

import torch

from mtrain import __version__
from mtrain.config import Config, ModelConfig
from mtrain.config_io import from_dict
from mtrain.data.tokenizer import Tokenizer
from mtrain.errors import MtrainError
from mtrain.files import atomic_copy, disk_errors, write_atomically

FORMAT = 1  # the version of the checkpoint layout below; bump it when the layout changes
REGULARIZATION = ("dropout", "attention_dropout", "activation_dropout")  # model settings that are not its shape


def weights_checksum(weights: dict[str, torch.Tensor]) -> int:
    """CRC-32 of every weight's bytes, in name order: flipped bytes inside a checkpoint load without
    complaint from torch, so the checkpoint carries this and `load` compares."""
    crc = 0
    for name in sorted(weights):
        crc = zlib.crc32(name.encode(), crc)
        crc = zlib.crc32(weights[name].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy(), crc)
    return crc


def _crc(value: Any, crc: int) -> int:
    """CRC-32 over a state's tree: its types, keys, tensors' dtypes, shapes and bytes, and values."""
    if isinstance(value, torch.Tensor):
        crc = zlib.crc32(f"T{value.dtype}{tuple(value.shape)}".encode(), crc)
        return zlib.crc32(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy(), crc)
    if isinstance(value, dict):
        crc = zlib.crc32(f"D{len(value)}".encode(), crc)
        for key in sorted(value, key=repr):
            crc = _crc(value[key], zlib.crc32(repr(key).encode(), crc))
        return crc
    if isinstance(value, (list, tuple)):
        crc = zlib.crc32(f"L{len(value)}".encode(), crc)
        for item in value:
            crc = _crc(item, crc)
        return crc
    if isinstance(value, bytes):
        return zlib.crc32(value, zlib.crc32(f"B{len(value)}".encode(), crc))
    return zlib.crc32(f"{type(value).__name__}:{value!r}".encode(), crc)


def state_checksum(state: dict) -> int:
    """CRC-32 of everything a checkpoint holds besides its checksums: the optimizer's moments, the
    progress, the random streams, the data order, the config and the vocabularies, so that no flipped
    byte a resume would read goes unnoticed."""
    return _crc({k: v for k, v in state.items() if k not in ("checksum", "state_checksum")}, 0)


def save(state: dict, path: Path) -> None:
    """torch.save, atomically (files.write_atomically), with the weights' checksum and the whole state's."""
    state = {**state, "checksum": weights_checksum(state["model"])}
    state["state_checksum"] = state_checksum(state)
    write_atomically(Path(path), lambda tmp: _torch_save(state, tmp))


def _torch_save(state: dict, tmp: Path) -> None:
    """torch.save, whose zip writer reports a failed write as a RuntimeError: an OSError here (a
    full disk when the disk is nearly full, else an I/O error), which `disk_errors` turns into one line."""
    try:
        torch.save(state, tmp)
    except RuntimeError as e:
        if "PytorchStreamWriter" not in str(e):
            raise
        full = shutil.disk_usage(Path(tmp).parent).free < 64 << 20
        raise OSError(errno.ENOSPC if full else errno.EIO, str(e)) from None


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint without executing anything from it."""
    path = Path(path)
    if not path.is_file():
        raise MtrainError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except MemoryError:  # an intact file may still not fit: not damage
        raise MtrainError(
            f"not enough memory to load {path}; free memory, or raise the process's memory limit"
        ) from None
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
    if "checksum" in state and state["checksum"] != weights_checksum(state["model"]):
        raise MtrainError(
            f"{path} is damaged: its weights do not match the checksum saved with them; use another checkpoint "
            "(a numbered one, or train's --recover)"
        )
    if "state_checksum" in state and state["state_checksum"] != state_checksum(state):
        raise MtrainError(
            f"{path} is damaged: what it holds besides the weights (optimizer state, progress, settings) does not "
            "match the checksum saved with it; use another checkpoint (a numbered one, or train's --recover)"
        )
    state["spm"].setdefault("vocab", None)  # checkpoints from before imported vocabularies: the same shape
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
        tokenizer = Tokenizer.from_state(state["spm"])
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


def shape_difference(saved: dict, model: ModelConfig, free: tuple[str, ...]) -> tuple[str, Any, Any] | None:
    """The first model setting outside `free` where a checkpoint's config (`saved`, its model
    section) and `model` differ, as (key, saved value, value); a key older checkpoints lack has its
    default value."""
    defaults = vars(ModelConfig())
    for key, value in vars(model).items():
        if key not in free and saved.get(key, defaults[key]) != value:
            return key, saved.get(key, defaults[key]), value
    return None


def check_shape(state: dict, config: Config, path: Path) -> None:
    """Refuse to continue from a checkpoint of another model shape (the dropout values may differ:
    changing them is a training setting, which the resume check weighs)."""
    difference = shape_difference(state["config"]["model"], config.model, free=REGULARIZATION)
    if difference is not None:
        key, saved, value = difference
        raise MtrainError(
            f"checkpoint {path} has model.{key}={saved} but the config says {value}; use the same model "
            "shape, or --restart / a new out_dir"
        )


def is_weights_only(state: dict) -> bool:
    """An averaged checkpoint has weights but no optimizer state or random streams to resume."""
    return "optimizer" not in state


def describe(state: dict, path: Path, engine: str) -> dict:
    """What a served or exported model reports about itself (languages, shape, decode settings, step)."""
    config = state["config"]
    guided = config["train"].get("guided_alignment", {})
    return {
        "engine": engine,
        "src_lang": config["data"]["src_lang"],
        "tgt_lang": config["data"]["tgt_lang"],
        "model": config["model"],
        "decode": config["decode"],
        "step": int(state.get("progress", {}).get("step", 0)),
        "checkpoint": str(path),
        "joint_vocabulary": state["spm"]["tgt"] is None,
        # the head trained to align (train.guided_alignment): translate --alignment and markup read it
        "alignment_head": {"layer": guided["layer"] or config["model"]["decoder_layers"], "head": guided["head"]}
        if guided.get("weight", 0) > 0
        else None,
        "confidence": state.get("confidence"),  # the calibration mtrain tune fitted (inference/confidence.py)
    }


def step_of(path: Path) -> int | None:
    """The step in a checkpoint_<step>.pt name (None for checkpoint_last.pt and the like)."""
    suffix = Path(path).stem.split("_", 1)[-1]
    return int(suffix) if suffix.isdigit() else None


def numbered(run_dir: Path) -> list[Path]:
    """checkpoint_<step>.pt files of a run directory, oldest first."""
    found = [(step_of(path), path) for path in Path(run_dir).glob("checkpoint_*.pt")]
    return [path for step, path in sorted(f for f in found if f[0] is not None)]


def newest_readable(paths: list[Path]) -> tuple[Path, dict] | None:
    """The newest of `paths` (oldest first) that loads, with its state."""
    for path in reversed(paths):
        try:
            return path, load(path)
        except MtrainError:
            continue
    return None


def save_copies(state: dict, run_dir: Path, names: list[str], keep_last: int) -> None:
    """`state` under each of `names` in `run_dir` (the first written, the others copied: each a file
    of its own, so damage to one cannot reach another), then keep only the newest `keep_last`
    numbered checkpoints. Put checkpoint_last.pt last: a process killed in between resumes from the
    previous checkpoint_last.pt and writes the others again, so the numbered ones have no gaps."""
    first = run_dir / names[0]
    with disk_errors(
        f"saving {first}",
        "the checkpoints saved before are intact; free space and run the same command again to resume",
    ):
        save(state, first)
        for name in names[1:]:
            atomic_copy(first, run_dir / name)
        for old in numbered(run_dir)[:-keep_last]:
            old.unlink(missing_ok=True)
