"""The run directory: one run at a time, a config that does not drift, logs that match the checkpoints.

A run directory holds what `mtrain train` wrote (config.yaml, metrics.jsonl, checkpoints,
tensorboard/, the prepared data) and nothing here ever deletes a file mtrain did not write.

- A lock (`.mtrain.lock`, an flock held for the life of the process, with the holder's pid,
  host and start time inside) keeps a second run out. The kernel releases it when its holder
  dies, however it dies, so a lock left by a killed run is taken over, not obeyed.
- On resume the config is compared with the one saved in the checkpoint: settings that only
  say how long or how often (RESUMABLE) may change; anything that changes what is learned is
  refused unless the user says --allow-config-change, and then recorded in metrics.jsonl.
- metrics.jsonl is cut back to the resumed checkpoint's step (metrics.py).
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import socket
from datetime import datetime, timezone
from pathlib import Path

from mtrain.config_io import corpus_lists
from mtrain.errors import MtrainError
from mtrain.files import disk_errors
from mtrain.run.metrics import DROPPED_METRICS_FILE, METRICS_FILE

log = logging.getLogger("mtrain")
LOCK_FILE = ".mtrain.lock"

# Settings a resumed run may change: how long, how often, where, with how many threads. They do
# not change the model that a given number of steps produces (except through train.cooldown, which
# ends the lr schedule where the budget ends: that is what raising a budget is for).
RESUMABLE = (
    "train.max_steps",
    "train.max_epochs",
    "train.max_minutes",
    "train.log_every",
    "train.valid_every",
    "train.valid_bleu",
    "train.patience",
    "train.save_every",
    "train.save_every_minutes",
    "train.keep_last",
    "train.average_last",
    "train.device",
    "train.threads",
    "train.compile",
    "train.dist_timeout_minutes",
    "decode.",
)


class RunLock:
    """An advisory lock on a run directory (see the module docstring)."""

    def __init__(self, directory: Path):
        self.path = Path(directory) / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> None:
        with disk_errors(f"creating the run directory {self.path.parent}"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise MtrainError(
                f"{self.path.parent} is in use by another mtrain run ({holder}); wait for it to end, "
                "stop it, or choose another out_dir"
            ) from None
        previous = os.read(fd, 4096).decode("utf-8", "replace").strip()
        if previous:
            log.warning(
                "%s was left locked by a run that did not end normally (%s); taking it over", self.path.parent, previous
            )
        since = datetime.now(timezone.utc).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {since}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)  # an empty lock file says: released normally
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def flatten(values: dict, prefix: str = "") -> dict:
    """{"train": {"seed": 1}} -> {"train.seed": 1}; a list of sections (data.train's corpora)
    -> data.train.count, data.train.0.path, ..."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        elif isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            flat[f"{prefix}{key}.count"] = len(value)
            for i, item in enumerate(value):
                flat.update(flatten(item, f"{prefix}{key}.{i}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_changes(saved: dict, current: dict) -> dict[str, tuple]:
    """{key: (saved value, current value)} for every setting that differs. Keys the saved config
    does not have (added by a later mtrain, with defaults that keep the old behaviour) are skipped,
    and so is out_dir (a run directory may be moved or copied)."""
    old, new = flatten(corpus_lists(saved)), flatten(corpus_lists(current))
    return {key: (old[key], new[key]) for key in new if key in old and old[key] != new[key] and key != "out_dir"}


def split_changes(changes: dict[str, tuple]) -> tuple[dict, dict]:
    """(changes a resume may make, changes that alter what is learned)."""
    allowed = {
        k: v for k, v in changes.items() if k in RESUMABLE or any(k.startswith(p) for p in RESUMABLE if p.endswith("."))
    }
    return allowed, {k: v for k, v in changes.items() if k not in allowed}


def describe_changes(changes: dict[str, tuple]) -> str:
    return ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in changes.items())


def clear_outputs(run_dir: Path, numbered: list[Path]) -> None:
    """What --restart deletes: the checkpoints, metrics and TensorBoard logs mtrain wrote; nothing else."""
    run_dir = Path(run_dir)
    for name in ("checkpoint_last.pt", "checkpoint_best.pt", "checkpoint_avg.pt", METRICS_FILE, DROPPED_METRICS_FILE):
        (run_dir / name).unlink(missing_ok=True)
    for path in numbered:
        path.unlink(missing_ok=True)
    shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)


def prepared_data_dir(config: dict, run_dir: Path) -> Path:
    """Where a run's prepared data is: data.dir when the config sets it, else {run_dir}/data
    (`config` as saved in a checkpoint or config.yaml; `run_dir` where its checkpoints are)."""
    configured = config.get("data", {}).get("dir", "")
    return Path(configured) if configured else Path(run_dir) / "data"
