"""What every route of `mtrain serve` shares: the error response, one line of JSON
`{"error": "..."}`, never a traceback, with the status that says whose fault it was (4xx the
client's, 5xx the server's); and the check that a sentence is text the tokenizer can take."""

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # FastAPI is an optional extra: mtrain serve imports it when it starts
    from fastapi.responses import JSONResponse


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
