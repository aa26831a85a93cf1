"""Connections that cannot hold the server: an idle deadline, and one log line per kind of flood.

uvicorn closes a keep-alive connection idle for `timeout_keep_alive` after a response, but has no
timer for a connection that sends nothing, or half a request line, headers or body: thousands of
such sockets held every file descriptor of the server (fault pass of 2026-11-30). The protocol
below closes a connection whose client has sent nothing for `--idle-seconds` while the server
waits for it, and one whose request has not arrived whole `--receive-seconds` after its first byte
(a client sending a byte a second is never idle, and 260 of them once held every connection); a
request whose body has arrived is never cut, however long it takes to translate.
"""

from __future__ import annotations

import asyncio
import logging
import time

LOG_INTERVAL_S = 10.0  # the same error from the event loop is logged once per interval


def idle_closing_protocol(idle_seconds: float, receive_seconds: float) -> type:
    """uvicorn's h11 protocol with deadlines on the client's silence and on the arrival of each whole
    request (imported when serving starts)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class IdleClosingH11Protocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            self.idle_timer = self.request_timer = None
            self._arm()

        def data_received(self, data: bytes) -> None:
            self._arm()
            if self.request_timer is None and waiting_for_client(self.cycle):  # a request begins
                self.request_timer = self.loop.call_later(receive_seconds, self._close_if_incomplete)
            super().data_received(data)

        def on_response_complete(self) -> None:
            self._end_request_timer()  # the next request gets a deadline of its own
            super().on_response_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            if self.idle_timer is not None:
                self.idle_timer.cancel()
            self._end_request_timer()
            super().connection_lost(exc)

        def _end_request_timer(self) -> None:
            if self.request_timer is not None:
                self.request_timer.cancel()
            self.request_timer = None

        def _close_if_incomplete(self) -> None:
            self.request_timer = None
            if waiting_for_client(self.cycle) and not self.transport.is_closing():
                self.transport.close()

        def _arm(self) -> None:
            if self.idle_timer is not None:
                self.idle_timer.cancel()
            self.idle_timer = self.loop.call_later(idle_seconds, self._close_if_waiting)

        def _close_if_waiting(self) -> None:
            if not waiting_for_client(self.cycle):
                self._arm()  # the request is whole and being answered: look again later
            elif not self.transport.is_closing():
                self.transport.close()

    return IdleClosingH11Protocol


def waiting_for_client(cycle: object | None) -> bool:
    """Whether the server waits for the client of a connection whose request/response cycle (uvicorn's)
    is `cycle`: no request yet, half of one (its body still to come), or the last one answered.
    Not while a whole request is being answered."""
    return cycle is None or cycle.more_body or cycle.response_complete


class OncePerInterval(logging.Filter):
    """Let one record of each message template through per `interval` seconds; the next one that
    passes says how many were held back. A flood of 'Too many open files' from the accept loop
    once wrote 196 MB of log in 30 s."""

    def __init__(self, interval: float = LOG_INTERVAL_S):
        super().__init__()
        self.interval = interval
        self.last: dict[str, float] = {}
        self.held: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key, now = str(record.msg), time.monotonic()
        if now - self.last.get(key, -self.interval) < self.interval:
            self.held[key] = self.held.get(key, 0) + 1
            return False
        self.last[key] = now
        held = self.held.pop(key, 0)
        if held:
            record.msg = f"{record.msg} ({held} more like it in the last {self.interval:g} s not logged)"
        return True
