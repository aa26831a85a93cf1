"""The ASGI middleware of `mtrain serve`: a bound on request bodies, and an answer for requests
cancelled when the server's drain time is over."""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from mtrain.deploy.serve.responses import error_response

Receive = Callable[[], Awaitable[dict]]  # ASGI's receive and send callables, and an ASGI application
Send = Callable[[dict], Awaitable[None]]
ASGIApp = Callable[[dict, Receive, Send], Awaitable[None]]


class BodySizeLimit:
    """ASGI middleware: refuse bodies over `max_bytes` with 413, by Content-Length or, for a body
    sent without one (chunked), by reading it whole first (at most `max_bytes`, then handing it on):
    an error raised while the application reads would reach it as a parse error."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self.max_bytes:
                return await self._refuse(scope, receive, send)
            return await self.app(scope, receive, send)
        body, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left before the body ended
                return
            body.append(message.get("body", b""))
            size, more = size + len(body[-1]), message.get("more_body", False)
            if size > self.max_bytes:
                return await self._refuse(scope, receive, send)
        whole = {"type": "http.request", "body": b"".join(body), "more_body": False}
        given = False

        async def replay() -> dict:
            nonlocal given
            if given:
                return await receive()
            given = True
            return whole

        await self.app(scope, replay, send)

    async def _refuse(self, scope: dict, receive: Receive, send: Send) -> None:
        response = error_response(413, f"request body over {self.max_bytes} bytes (--max-body-bytes)")
        await response(scope, receive, send)


class AnswerWhenCancelled:
    """ASGI middleware: a request still running when uvicorn's drain time (--drain-seconds) is over is
    cancelled; it gets a 503 if nothing was sent yet, and the log no CancelledError traceback."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        started = False

        async def tracked(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except asyncio.CancelledError:
            if scope["type"] == "http" and not started:
                with contextlib.suppress(Exception):
                    await error_response(503, "the server is shutting down; retry")(scope, receive, send)
