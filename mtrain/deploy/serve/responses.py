"""What every route of `mtrain serve` shares: the error response, one line of JSON
`{"error": "..."}`, never a traceback, with the status that says whose fault it was (4xx the
client's, 5xx the server's); and the check that a sentence is text the tokenizer can take."""

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
