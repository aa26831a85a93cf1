"""Files that are never half-written, disk errors that read as one sentence, leftovers cleaned.

Every file mtrain writes for later use (checkpoints, config.yaml, translations, prepared data)
is written under a temporary name in the same directory and renamed over the final name:
a reader sees the old file or the new one, never a mix. A temporary name starts with
`.mtrain~` (a prefix no user file has) and carries the writer's host and pid, so a later run
removes only what mtrain provably wrote, and of that only the leftovers of a killed process on
this host, never a live writer's (a pid check alone is no proof of authorship: `notes.tmp-1999`
is a user's file). Each writer clears the dead leftovers of the path it writes before it
writes, so a command killed with kill -9 leaves litter only until that command runs again.
This module imports no torch, so the config and the CLI can use it cheaply.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import socket
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


TEMPORARY_PREFIX = ".mtrain~"


def _host() -> str:
    return socket.gethostname().replace("~", "-").replace("/", "-") or "localhost"


def temporary_name(path: Path, role: str = "tmp") -> Path:
    """`.mtrain~{role}~{host}~{pid}~{name}` beside `path`: hidden, mtrain's by its prefix, and traceable
    to the process writing it. `role` is "tmp" for what is being written, "old" for what is being
    replaced."""
    path = Path(path)
    return path.with_name(f"{TEMPORARY_PREFIX}{role}~{_host()}~{os.getpid()}~{path.name}")


def parse_temporary(name: str) -> tuple[str, int, str] | None:
    """(host, pid, the final name) of a name `temporary_name` made, else None."""
    if not name.startswith(TEMPORARY_PREFIX):
        return None
    parts = name[len(TEMPORARY_PREFIX) :].split("~", 3)
    if len(parts) != 4 or parts[0] not in ("tmp", "old") or not parts[2].isdigit() or not parts[3]:
        return None
    return parts[1], int(parts[2]), parts[3]


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Call `write(temporary_path)`, make the bytes durable, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, path.name)
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
    remove_stale_temporaries(path.parent, path.name)
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
    except Exception as e:
        code = error_number(e)
        if code not in DISK_ERRORS:
            raise
        raise MtrainError(f"{action} failed: {DISK_ERRORS[code]}{'; ' + then if then else ''}") from None


def error_number(error: BaseException) -> int | None:
    """The errno behind an exception: an OSError's own, or the one that libraries written in Rust
    (safetensors, tokenizers) put in their message instead of raising an OSError: "... (os error 28)",
    or in older versions "IoError(Os { code: 28, kind: StorageFull, ... })"."""
    if isinstance(error, OSError):
        return error.errno
    found = re.search(r"\(os error (\d+)\)|Os \{ code: (\d+)", str(error))
    return int(found.group(1) or found.group(2)) if found else None


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # none, or a number no pid can be
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(directory: Path, name: str = "") -> list[Path]:
    """Delete what killed mtrain processes of this host left in `directory` (temporary files and
    directories, and the old versions they were replacing), only those for the final name `name`
    when given; returns what was removed. Nothing without mtrain's prefix is ever touched."""
    removed: list[Path] = []
    try:
        entries = list(Path(directory).iterdir())
    except OSError:  # no such directory, or not readable: nothing of ours to clear
        return removed
    for path in entries:
        parsed = parse_temporary(path.name)
        if parsed is None or (name and parsed[2] != name):
            continue
        host, pid, _ = parsed
        if host != _host() or pid == os.getpid() or process_alive(pid):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
        removed.append(path)
    return removed
