"""metrics.jsonl, the run's log of record: one JSON object per line, appended as training goes
(`kind`: train, valid, config_change), mirrored to TensorBoard when it is installed.

It is cut back to the resumed checkpoint's step when a run resumes, so replayed steps are logged
once and a line half-written on a full disk is not glued to the next record."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path

from mtrain.extras import install_hint
from mtrain.files import atomic_write_bytes, disk_errors

log = logging.getLogger("mtrain")

METRICS_FILE = "metrics.jsonl"


DROPPED_METRICS_FILE = "metrics.dropped.jsonl"


def repair_metrics(run_dir: Path, step: int) -> int:
    """Keep the records of metrics.jsonl up to `step` (the resumed checkpoint's); move records of
    later (replayed) steps, damaged lines and a partial last line to metrics.dropped.jsonl.
    Returns how many lines were moved."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return 0
    *complete, tail = path.read_bytes().split(b"\n")
    keep, dropped = [], []
    for line in filter(bytes.strip, complete):
        try:
            record = json.loads(line)
            kept = isinstance(record, dict) and int(record.get("step", 0)) <= step
        except (ValueError, TypeError):
            kept = False
        (keep if kept else dropped).append(line)
    dropped += [tail] if tail.strip() else []
    if dropped:
        with disk_errors(f"repairing {path}"):
            with open(Path(run_dir) / DROPPED_METRICS_FILE, "ab") as f:
                f.write(b"".join(line + b"\n" for line in dropped))
            atomic_write_bytes(path, b"".join(line + b"\n" for line in keep))
        log.info(
            "metrics.jsonl: kept the %d record(s) up to step %d; moved %d replayed or damaged line(s) to %s",
            len(keep),
            step,
            len(dropped),
            DROPPED_METRICS_FILE,
        )
    return len(dropped)


def append_record(path: Path, record: dict) -> None:
    """One JSON line, appended; a full disk is a one-line error (the next resume repairs the file)."""
    with disk_errors(
        f"appending to {path}", "the checkpoints are intact; free space and run the same command again to resume"
    ):
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


class MetricsLog:
    """Where a run's records go: metrics.jsonl (with the UTC time each was written) and, when
    TensorBoard is installed, its scalars. Only the main rank writes; the others' calls do nothing."""

    def __init__(self, run_dir: Path, enabled: bool = True):
        self.path = Path(run_dir) / METRICS_FILE
        self.enabled = enabled
        self.tensorboard = None

    def open_tensorboard(self) -> None:
        """Mirror the records to {run_dir}/tensorboard when TensorBoard is installed, and say which."""
        if not self.enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.info(
                "TensorBoard logging off (%s to turn it on); metrics go to %s", install_hint("tensorboard"), self.path
            )
            return
        self.tensorboard = SummaryWriter(self.path.parent / "tensorboard")
        log.info("TensorBoard logging on: tensorboard --logdir %s", self.path.parent / "tensorboard")

    def write(self, record: dict) -> None:
        """One JSON line per record, with the wall-clock time (UTC) it was written."""
        if not self.enabled:
            return
        record = {**record, "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        append_record(self.path, record)
        if self.tensorboard is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self.tensorboard.add_scalar(f"{record['kind']}/{key}", value, record["step"])

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
