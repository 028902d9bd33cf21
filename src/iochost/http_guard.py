"""What uvicorn leaves open on the API's sockets: connections that never send a request,
that send its headers slowly, or that are too many; and plain-text error answers.

uvicorn's ``timeout_keep_alive`` starts only after a response, and any byte received
cancels it, so a connection that sends nothing, or sends headers a byte at a time, stays
open for good; enough of them exhaust the daemon's open files, and then a worker cannot
be spawned. ``guarded_protocol`` wraps whichever HTTP protocol class uvicorn uses (h11 or
httptools: both keep ``cycle``, ``connections``, ``transport`` and ``loop`` and call
``on_response_complete``) with:

- a deadline from the connection's start, and again from the end of each response, that
  closes the connection unless a request is in progress by then (its headers complete);
  bytes received do not move it, so trickled headers are cut too;
- a cap on the connections open at once: one over it is closed at once (logged, at most
  once a minute), before it can hold an fd for long;
- an unparsable request answered in the API's JSON shape (``INVALID_REQUEST``), not with
  uvicorn's plain-text 400.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from http import HTTPStatus
from typing import Any

from iochost.errors import ErrorCode

log = logging.getLogger("iochost.api")

CAP_LOG_INTERVAL = 60.0  # seconds between warnings about refused connections


def json_error_bytes(code: ErrorCode, message: str) -> bytes:
    """A complete ``Connection: close`` HTTP/1.1 response in the API's error shape, for the
    places below the ASGI app (uvicorn's protocol) that answer on their own."""
    body = json.dumps({"code": code.value, "message": message}).encode()
    reason = HTTPStatus(code.http_status).phrase
    head = (f"HTTP/1.1 {code.http_status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
    return head.encode("latin-1") + body


class _CapLog:
    """Connections refused over the cap, logged once per CAP_LOG_INTERVAL with a count."""

    def __init__(self) -> None:
        self.refused = 0
        self.logged_at = -CAP_LOG_INTERVAL

    def refuse(self, cap: int) -> None:
        self.refused += 1
        now = time.monotonic()
        if now - self.logged_at >= CAP_LOG_INTERVAL:
            log.warning("closed %d API connection(s) at once: %d were open, the cap (--http-max-connections)",
                        self.refused, cap)
            self.refused, self.logged_at = 0, now


def guarded_protocol(base: type[asyncio.Protocol], timeout: float, cap: int) -> type[asyncio.Protocol]:
    """``base`` (uvicorn's HTTP protocol class) with the deadline, the cap and JSON error answers."""
    cap_log = _CapLog()

    class Guarded(base):  # type: ignore[valid-type,misc]
        _deadline: asyncio.TimerHandle | None = None
        _refused = False

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            if len(self.connections) > cap:
                self._refused = True
                cap_log.refuse(cap)
                transport.close()  # connection_lost forgets it
                return
            self._arm()

        def data_received(self, data: bytes) -> None:
            if not self._refused:
                super().data_received(data)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            super().connection_lost(exc)

        def send_400_response(self, msg: str) -> None:
            self.transport.write(json_error_bytes(ErrorCode.INVALID_REQUEST, f"invalid HTTP request: {msg}"))
            self.transport.close()

        def _arm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = self.loop.call_later(timeout, self._expired)

        def _expired(self) -> None:
            """Close unless a request is in progress (``on_response_complete`` re-arms then)."""
            self._deadline = None
            cycle: Any = self.cycle
            busy = (cycle is not None and not cycle.response_complete) or bool(getattr(self, "pipeline", None))
            if not busy and not self.transport.is_closing():
                self.transport.close()

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{base.__name__}"
    return Guarded


class AnswerCutRequests:
    """The outermost ASGI layer: a request cut before its response started (uvicorn cancels
    what outlives its graceful shutdown, e.g. an upgrade still validating at SIGTERM) is
    answered ``SHUTTING_DOWN`` in the API's shape, not with uvicorn's plain-text 500."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except asyncio.CancelledError:
            if not started:
                body = json.dumps({"code": ErrorCode.SHUTTING_DOWN.value,
                                   "message": "the daemon is stopping; this request was not completed"}).encode()
                await send({"type": "http.response.start", "status": ErrorCode.SHUTTING_DOWN.http_status,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
                await send({"type": "http.response.body", "body": body})
            raise
