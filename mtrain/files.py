"""Files that are never half-written, disk errors that read as one sentence, leftovers cleaned.

Every file mtrain writes for later use (checkpoints, config.yaml, translations, prepared data)
is written under a temporary name in the same directory and renamed over the final name:
a reader sees the old file or the new one, never a mix. The temporary name carries the
writer's pid, so a later run can tell the leftovers of a killed process from the files of a
live one. This module imports no torch, so the config and the CLI can use it cheaply.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from mtrain.errors import MtrainError

# OS errors that are the user's environment, not a bug: each with what to do about it.
DISK_ERRORS = {
    errno.ENOSPC: "no space left on the device; free some space",
    errno.EDQUOT: "the disk quota is exceeded; free some space",
    errno.EROFS: "the file system is read-only; choose a writable directory",
    errno.EACCES: "permission denied; choose a directory you may write to",
    errno.EPERM: "operation not permitted; choose a directory you may write to",
    errno.EIO: "an input/output error (a failing disk or network file system); check the device",
}


def temporary_name(path: Path) -> Path:
    """`.{name}.{pid}.tmp` beside `path`: hidden, and traceable to the process writing it."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Call `write(temporary_path)`, make the bytes durable, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # on a read-only file system this fails too: keep the first error
            tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_text_output(path: Path) -> Iterator[TextIO]:
    """A text file to write bit by bit that appears at `path` only when the block ends without an
    error (a stream written as it is translated, say): before, `path` keeps what it held."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        with open(tmp, "w", encoding="utf-8") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    write_atomically(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_copy(source: Path, target: Path) -> None:
    """`target` becomes a file of its own with `source`'s bytes (never a link: damage to one
    file must not reach the other)."""
    write_atomically(target, lambda tmp: shutil.copyfile(source, tmp))


@contextmanager
def disk_errors(action: str, then: str = "") -> Iterator[None]:
    """Turn a full disk, a read-only directory or a refused permission into a one-line error.

    `action` says what was being done ("saving checkpoint runs/x/checkpoint_last.pt"), `then`
    what still holds and how to go on ("the previous checkpoint is intact; ...")."""
    try:
        yield
    except OSError as e:
        if e.errno not in DISK_ERRORS:
            raise
        raise MtrainError(f"{action} failed: {DISK_ERRORS[e.errno]}{'; ' + then if then else ''}") from None


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _writer_pid(name: str) -> int | None:
    """The pid in a temporary name: `.x.PID.tmp` (files), `data.tmp-PID` and `data.old-PID` (prepared data)."""
    if name.startswith(".") and name.endswith(".tmp"):
        pid = name[:-4].rsplit(".", 1)[-1]
    else:
        pid = next((name.rsplit(marker, 1)[1] for marker in (".tmp-", ".old-") if marker in name), "")
    return int(pid) if pid.isdigit() else None


def remove_stale_temporaries(directory: Path, prefix: str = "") -> list[Path]:
    """Delete the temporary files and directories that killed processes left in `directory`
    (their pid no longer runs), only those named after `prefix` when given; returns what was removed."""
    removed = []
    if not Path(directory).is_dir():
        return removed
    for path in Path(directory).iterdir():
        if prefix and not path.name.lstrip(".").startswith(prefix + "."):
            continue
        pid = _writer_pid(path.name)
        if pid is None or pid == os.getpid() or process_alive(pid):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed
