"""What the routes of `mtrain serve` answer: the error response, one line of JSON
`{"error": "..."}`, never a traceback, with the status that says whose fault it was (4xx the
client's, 5xx the server's); the checks that a request's sentences are text the tokenizer can
take, within the server's limits; and the translations."""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING

from mtrain.data.tokenizer import Tokenizer
from mtrain.inference.confidence import confidences, word_confidences
from mtrain.inference.search import Hypothesis

if TYPE_CHECKING:  # FastAPI is an optional extra: mtrain serve imports it when it starts
    from fastapi.responses import JSONResponse

    from mtrain.deploy.serve.worker import ServeLimits

log = logging.getLogger("mtrain")


def error_response(status: int, message: str, headers: dict | None = None) -> "JSONResponse":
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status, headers=headers)


def loading_response() -> "JSONResponse":
    """What a route that needs the model answers while it loads."""
    return error_response(503, "loading the model", {"Retry-After": "1"})


def busy_response() -> "JSONResponse":
    """What a request gets when the queue in front of the model is full."""
    return error_response(503, "the server is busy (translation queue full); retry shortly", {"Retry-After": "1"})


def is_unicode_text(line: str) -> bool:
    """False for a string JSON can carry but UTF-8 cannot (a lone surrogate such as "\\ud800"): the
    tokenizer would fail on it, and with it every request batched alongside."""
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


CLIENT_GONE = 499  # nginx's status for a request whose client closed the connection (nobody reads it)


async def result_unless_client_left(future: Future, receive: Callable[[], Awaitable[dict]]) -> tuple[bool, object]:
    """(True, the job's result) once the worker has it, or (False, None) when the client closes its
    connection first: then the job is cancelled, and the worker drops it unless it already runs.
    A cancelled wait (the server's drain time is over) cancels the job too."""
    result = asyncio.wrap_future(future)
    left = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait({result, left}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        future.cancel()
        raise
    finally:
        left.cancel()
    if result.done():
        return True, result.result()
    future.cancel()
    return False, None


async def _disconnected(receive: Callable[[], Awaitable[dict]]) -> None:
    """Returns when the client has gone (ASGI's http.disconnect; the body was read before)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def over_limit(text: list[str], limits: "ServeLimits") -> tuple[int, str] | None:
    """The status and message of what is wrong with a request's sentences, or None."""
    if not text:
        return 422, "text must hold at least one sentence"
    if len(text) > limits.max_sentences:
        return 413, f"{len(text)} sentences in one request; at most {limits.max_sentences} (--max-sentences)"
    for i, line in enumerate(text):
        if len(line) > limits.max_chars:
            return 413, f"text.{i} has {len(line)} characters; at most {limits.max_chars} (--max-chars)"
        if not is_unicode_text(line):
            return 400, f"text.{i} is not valid Unicode (it holds a lone surrogate, e.g. \\ud800); send UTF-8 text"
    return None


def translations_response(
    tokenizer: Tokenizer,
    lines: list[str],
    results: list[list[Hypothesis]],
    nbest: int,
    scores: bool,
    info: dict,
    request_id: int,
    start: float,
) -> dict:
    """The translations; with `nbest` > 1 or `scores`, `nbest` scored hypotheses per sentence (an empty
    sentence's one empty hypothesis repeated, as `mtrain translate --nbest` prints it); with `scores`,
    each with its confidence and its words' (inference/confidence.py; `info`: the model's, which
    holds its calibration)."""
    tokens = sum(len(hyps[0].tokens) + 1 for hyps in results)
    log.info(
        "request %d | %d sentences | %d target tokens | %.1f ms",
        request_id,
        len(results),
        tokens,
        1000 * (time.perf_counter() - start),
    )
    if nbest == 1 and not scores:
        return {"translations": [tokenizer.decode_tgt(hyps[0].tokens) for hyps in results]}
    padded = [hyps + hyps[-1:] * (nbest - len(hyps)) for hyps in results]
    answer = [[{"text": tokenizer.decode_tgt(h.tokens), "score": h.score} for h in hyps] for hyps in padded]
    if scores:
        for line, hyps, records in zip(lines, padded, answer):
            found = confidences(tokenizer, [line] * len(hyps), [[h] for h in hyps], info)
            for h, record, confidence in zip(hyps, records, found):
                record.update(confidence=round(confidence, 4), words=word_confidences(tokenizer, h))
    return {"translations": answer}
