"""Chunks of a corpus through worker processes, in order, with a bounded number in flight.

Both passes of `prepare` are CPU-bound: cleaning is Python, encoding is sentencepiece. On a
machine with several cores, worker processes work on several chunks at once while the main
process reads the next chunks and writes the finished ones. Results come back in the chunks'
order, so what is written does not depend on the number of workers.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
from collections import deque
from typing import Callable, Iterable, Iterator, TypeVar

Result = TypeVar("Result")


def ordered_map(function: Callable[..., Result], chunks: Iterable[tuple], workers: int = 0) -> Iterator[Result]:
    """function(*chunk) for every chunk, in order.

    A lone chunk runs in this process (small corpora start no processes); more go to `workers`
    processes (0: one per core), with at most two per worker queued, so memory stays bounded
    by a few chunks however long the corpus is. `function` must be importable by name."""
    workers = workers or os.cpu_count() or 1
    chunks = iter(chunks)
    head = list(itertools.islice(chunks, 2))
    if workers == 1 or len(head) < 2:
        for chunk in itertools.chain(head, chunks):
            yield function(*chunk)
        return
    context = multiprocessing.get_context("spawn")  # not fork: the caller may hold threads (torch's, a loader's)
    with context.Pool(workers, initializer=_leave_interrupts_to_the_parent) as pool:
        pending = deque()
        for chunk in itertools.chain(head, chunks):
            pending.append(pool.apply_async(function, chunk))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def _leave_interrupts_to_the_parent() -> None:
    """Ctrl-C reaches every process of the terminal's group: the workers ignore it, the parent stops
    and terminates them (leaving the pool's context), so one interruption is one message, not a
    traceback per worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
