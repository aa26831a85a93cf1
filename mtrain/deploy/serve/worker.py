"""The batching worker behind `mtrain serve`: one thread owns the model and merges requests.

Requests that arrive together are merged: the worker takes every waiting request with the same
settings (waiting at most `max_wait_ms` after the first, so a lone client is not delayed) and
hands all their sentences to the translator in one call, which sorts them by length and cuts
token-budgeted batches exactly as `mtrain translate` does; results go back to each request in
its own order. Work that is not a translation (the page's attention maps) runs on the same thread, in
its turn, as a task."""

from __future__ import annotations

import copy
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from mtrain.errors import MtrainError

if TYPE_CHECKING:  # `mtrain serve --help` reads ServeLimits' defaults without loading torch
    from mtrain.inference.engine import TranslationEngine

CALL_SENTENCES = 256  # most sentences merged into one model call: bounds the wait of the first of them


@dataclass
class ServeLimits:
    """Bounds on what one request and the whole queue may hold (`mtrain serve --help` sets them)."""

    max_sentences: int = 64  # per request
    max_chars: int = 2000  # per sentence
    max_body_bytes: int = 1_000_000  # per request body
    max_queue: int = 2048  # sentences waiting for the model, all requests together
    max_wait_ms: float = 10.0  # how long the first waiting request may wait for others to join its batch
    max_beam: int = 16
    max_work: int = 512_000  # per request: source characters x beam (the largest request at beam 4)
    max_connections: int = 256  # open connections; beyond, new requests get 503 (idle sockets cannot exhaust the fds)
    drain_seconds: float = 30.0  # after SIGTERM, how long requests in flight (or half-sent) may take
    idle_seconds: float = 10.0  # a client silent this long while the server waits for its request is cut off
    receive_seconds: float = 20.0  # a request not whole this long after its first byte is cut off (slow clients)

    def check(self) -> None:
        counts = (
            "max_sentences",
            "max_chars",
            "max_body_bytes",
            "max_queue",
            "max_beam",
            "max_work",
            "max_connections",
        )
        for name in counts:
            if getattr(self, name) < 1:
                raise MtrainError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.max_wait_ms <= 10_000:
            raise MtrainError(f"--max-wait-ms must be between 0 and 10000, got {self.max_wait_ms}")
        if not 0 < self.drain_seconds <= 3600:
            raise MtrainError(f"--drain-seconds must be more than 0 and at most 3600, got {self.drain_seconds}")
        for name in ("idle_seconds", "receive_seconds"):
            if not 0 < getattr(self, name) <= 3600:
                raise MtrainError(
                    f"--{name.replace('_', '-')} must be more than 0 and at most 3600, got {getattr(self, name)}"
                )

    def over_work_limit(self, text: list[str], beam: int) -> tuple[int, str] | None:
        """The status and message when a request asks for more decoding than one request may: source
        characters x beam (a 64 x 2,000-character request at beam 16 once held the model for 56 s)."""
        work = sum(len(line) for line in text) * beam
        if work <= self.max_work:
            return None
        return 413, (
            f"this request asks for {work} characters x beam of decoding; at most {self.max_work} (--max-work): "
            "send fewer or shorter sentences per request, or ask for a smaller beam"
        )


class QueueFull(Exception):
    """More sentences are waiting than `max_queue` allows."""


@dataclass
class Job:
    lines: list[str]
    beam: int
    nbest: int
    scores: bool = False  # the hypotheses need their token log-probabilities (the confidence)
    future: Future = field(default_factory=Future)
    arrived: float = field(default_factory=time.monotonic)
    task: Callable[[TranslationEngine], object] | None = None  # set: run this instead of translating
    language: str = ""  # the target language asked for (decode.tgt_lang; "": the model's setting)

    @property
    def work(self) -> int:
        """Source characters x beam, what --max-work bounds."""
        return sum(len(line) for line in self.lines) * self.beam


class BatchingWorker:
    """The one thread that runs the model: it merges waiting jobs with equal settings into one call."""

    def __init__(self, translator: TranslationEngine, limits: ServeLimits):
        self.translator, self.limits = translator, limits
        self.by_language: dict[str, TranslationEngine] = {}  # the model translating into a language asked for
        self.jobs: deque[Job] = deque()
        self.waiting = 0  # sentences in self.jobs
        self.condition = threading.Condition()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="mtrain-batching", daemon=True)
        self.thread.start()

    def submit(self, lines: list[str], beam: int, nbest: int, scores: bool = False, language: str = "") -> Future:
        return self._enqueue(Job(lines, beam, nbest, scores, language=language))

    def submit_task(self, task: Callable[[TranslationEngine], object], language: str = "") -> Future:
        """Run `task(translator)` on the model's thread in its turn (it counts as one queued sentence):
        the model is never used by two threads at once."""
        return self._enqueue(Job([""], 0, 0, task=task, language=language))

    def engine_for(self, language: str) -> TranslationEngine:
        """The model with decode.tgt_lang `language` ("": as it was loaded), a shallow copy sharing its
        weights, kept one per language token; MtrainError for a language the model lacks."""
        from mtrain.inference.translator import target_language

        if not language:
            return self.translator
        engine = copy.copy(self.translator)
        engine.config = replace(self.translator.config, tgt_lang=language)
        return self.by_language.setdefault(target_language(engine), engine)

    def _enqueue(self, job: Job) -> Future:
        with self.condition:
            if self.waiting + len(job.lines) > self.limits.max_queue:
                raise QueueFull
            self.jobs.append(job)
            self.waiting += len(job.lines)
            self.condition.notify()
        return job.future

    def stop(self) -> None:
        """Finish what is queued, then end the thread."""
        with self.condition:
            self.stopping = True
            self.condition.notify()
        self.thread.join()

    def _next_batch(self) -> list[Job]:
        """Wait for a job, let others join until the oldest has waited max_wait_ms (or a full request's
        worth of sentences waits; under load the queue fills while the model works, so nobody waits
        twice), then take the waiting jobs with the oldest one's settings."""
        with self.condition:
            while not self.jobs and not self.stopping:
                self.condition.wait()
            if not self.jobs:
                return []
            if self.jobs[0].task is not None:
                self.waiting -= 1
                return [self.jobs.popleft()]
            deadline = self.jobs[0].arrived + self.limits.max_wait_ms / 1000
            while (remaining := deadline - time.monotonic()) > 0 and self.waiting < self.limits.max_sentences:
                self.condition.wait(remaining)
            return self._take((self.jobs[0].beam, self.jobs[0].nbest, self.jobs[0].language))

    def _take(self, settings: tuple[int, int, str]) -> list[Job]:
        """Waiting jobs with these settings, oldest first, up to CALL_SENTENCES sentences and one
        request's --max-work (at least one job): a merged call takes no longer than the largest
        single request, and jobs left waiting can still be dropped if their clients leave."""
        taken, kept, count, work = [], deque(), 0, 0
        for job in self.jobs:
            fits = count + len(job.lines) <= CALL_SENTENCES and work + job.work <= self.limits.max_work
            if job.task is None and (job.beam, job.nbest, job.language) == settings and (not taken or fits):
                taken.append(job)
                count, work = count + len(job.lines), work + job.work
            else:
                kept.append(job)
        self.jobs, self.waiting = kept, self.waiting - count
        return taken

    def alive(self) -> bool:
        """Whether the model's thread still takes work (/health asks)."""
        return self.thread.is_alive()

    def _run(self) -> None:
        """Take batches until stopped. A job whose client went away (its future cancelled) is dropped
        before it runs; no exception of one batch, whatever it is, ends the thread."""
        while batch := self._next_batch():
            batch = [job for job in batch if job.future.set_running_or_notify_cancel()]
            try:
                if batch and batch[0].task is not None:
                    self._run_task(batch[0])
                elif batch:
                    self._translate(batch)
            except BaseException as e:  # noqa: BLE001 - the requests of this batch report it; the thread goes on
                for job in batch:
                    _settle(job.future, exception=e)

    def _translate(self, batch: list[Job]) -> None:
        """One model call for the merged requests; if it fails, each request again on its own, so a
        request that breaks the model fails alone instead of taking the others with it."""
        lines = [line for job in batch for line in job.lines]
        engine = self.engine_for(batch[0].language)
        try:
            results = engine.translate_nbest(lines, beam=batch[0].beam, nbest=batch[0].nbest)
        except Exception as e:  # noqa: BLE001 - the request reports it
            if len(batch) == 1:
                return _settle(batch[0].future, exception=e)
            for job in batch:
                self._translate([job])
            return
        start = 0
        for job in batch:
            found = results[start : start + len(job.lines)]
            if job.scores:
                engine.score_tokens(job.lines, found)
            _settle(job.future, result=found)
            start += len(job.lines)

    def _run_task(self, job: Job) -> None:
        try:
            _settle(job.future, result=job.task(self.engine_for(job.language)))
        except Exception as e:  # noqa: BLE001 - the request that asked reports it
            _settle(job.future, exception=e)


def _settle(future: Future, result: object = None, exception: BaseException | None = None) -> None:
    """Give a running job's future its outcome; one already settled stays as it is."""
    if future.done():
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)
