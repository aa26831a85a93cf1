"""The stdin mode of `mtrain translate`: lines translated as they arrive, every answer flushed."""

from __future__ import annotations

import contextlib
import os
import select
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from mtrain.errors import MtrainError
from mtrain.files import atomic_text_output


def translate_stream(output_path: Path | None, render: Callable[..., str]) -> None:
    """stdin mode: the lines already waiting are translated together (a pipe goes in batches), and a
    line typed by a person is answered at once; every answer is flushed. An --output file appears
    whole when the input ends (an interrupted or failed stream leaves no partial file)."""
    index = 0
    with atomic_text_output(output_path) if output_path else contextlib.nullcontext(sys.stdout) as out:
        for lines in waiting_lines(sys.stdin):
            out.write(render(index, lines))
            out.flush()
            index += len(lines)


def waiting_lines(stream: BinaryIO, max_bytes: int = 1 << 20) -> Iterator[list[str]]:
    """Groups of complete lines: each group is what can be read without waiting (up to about
    `max_bytes`), so nothing that is already there waits for a later line, and a pipe is read in
    batches. Lines must be UTF-8; the last line needs no newline."""
    fd, pending, line_number, at_end = stream.fileno(), b"", 0, False
    while not at_end:
        chunk = os.read(fd, 1 << 16)  # waits for the next input
        at_end = not chunk
        pending += chunk
        while not at_end and len(pending) < max_bytes and select.select([fd], [], [], 0)[0]:
            chunk = os.read(fd, 1 << 16)
            at_end = not chunk
            pending += chunk
        *complete, pending = pending.split(b"\n")
        if at_end and pending:
            complete, pending = complete + [pending], b""
        if complete:
            yield [_decode_line(raw, line_number + i + 1) for i, raw in enumerate(complete)]
            line_number += len(complete)


def _decode_line(raw: bytes, number: int) -> str:
    try:
        return raw.decode("utf-8").rstrip("\r")
    except UnicodeDecodeError:
        raise MtrainError(
            f"line {number} of the standard input is not UTF-8 text; convert the input, e.g. with iconv -t UTF-8"
        ) from None
