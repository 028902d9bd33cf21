"""What uvicorn leaves open on the API's sockets: connections that never send a request,
that send its headers slowly, or that are too many; and plain-text error answers.

uvicorn's ``timeout_keep_alive`` starts only after a response, and any byte received
cancels it, so a connection that sends nothing, or sends headers a byte at a time, stays
open for good; enough of them exhaust the daemon's open files, and then a worker cannot
be spawned. ``guarded_protocol`` wraps whichever HTTP protocol class uvicorn uses (h11 or
httptools: both keep ``cycle``, ``connections``, ``transport`` and ``loop`` and call
``on_response_complete``) with:

- a deadline from the connection's start, and again from the end of each response, by
  which a request must have arrived in full (headers and body): a connection still without
  one is closed, and one whose body is still arriving is answered ``INVALID_REQUEST`` and
  closed; bytes received do not move it, so trickled headers and bodies are cut too, and a
  request received in full runs as long as it takes (an upgrade, the event stream);
- a cap on the connections open at once: a new connection over it closes the oldest one
  with no request in progress (silent, idle or still sending headers), so the health probes
  of a fresh connection are answered during a flood of idle ones; only when every open
  connection is serving a request is the new one closed (logged, at most once a minute);
- a response its client stops reading (an event stream): once the daemon's send buffer
  has stayed full (writing paused) for the same timeout, the connection is dropped;
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

from iochost.errors import ErrorCode, error_body

log = logging.getLogger("iochost.api")

CAP_LOG_INTERVAL = 60.0  # seconds between warnings about refused connections


def json_error_bytes(code: ErrorCode, message: str) -> bytes:
    """A complete ``Connection: close`` HTTP/1.1 response in the API's error shape, for the
    places below the ASGI app (uvicorn's protocol) that answer on their own."""
    body = json.dumps(error_body(code, message)).encode()
    reason = HTTPStatus(code.http_status).phrase
    head = (f"HTTP/1.1 {code.http_status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
    return head.encode("latin-1") + body


class _CapLog:
    """Connections closed at the cap, logged once per CAP_LOG_INTERVAL with counts."""

    def __init__(self) -> None:
        self.evicted = 0
        self.refused = 0
        self.logged_at = -CAP_LOG_INTERVAL

    def closed(self, cap: int, *, evicted: bool) -> None:
        if evicted:
            self.evicted += 1
        else:
            self.refused += 1
        now = time.monotonic()
        if now - self.logged_at >= CAP_LOG_INTERVAL:
            log.warning("API connections at the cap (--http-max-connections %d): closed %d idle one(s) for newer "
                        "ones and %d new one(s) while all were serving requests", cap, self.evicted, self.refused)
            self.evicted, self.refused, self.logged_at = 0, 0, now


def guarded_protocol(base: type[asyncio.Protocol], timeout: float, cap: int) -> type[asyncio.Protocol]:
    """``base`` (uvicorn's HTTP protocol class) with the deadline, the cap and JSON error answers."""
    cap_log = _CapLog()

    class Guarded(base):  # type: ignore[valid-type,misc]
        _deadline: asyncio.TimerHandle | None = None
        _stalled: asyncio.TimerHandle | None = None
        _refused = False
        _opened = 0.0

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self._opened = time.monotonic()
            if len(self.connections) > cap:
                idle = [c for c in self.connections if c is not self and isinstance(c, Guarded) and not c._busy()
                        and not c.transport.is_closing()]
                if idle:  # the oldest idle one makes room: a probe's fresh connection gets in
                    min(idle, key=lambda c: c._opened).transport.close()
                    cap_log.closed(cap, evicted=True)
                else:
                    self._refused = True
                    cap_log.closed(cap, evicted=False)
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
            for timer in (self._deadline, self._stalled):
                if timer is not None:
                    timer.cancel()
            self._deadline = self._stalled = None
            super().connection_lost(exc)

        def pause_writing(self) -> None:
            super().pause_writing()
            if self._stalled is None:
                self._stalled = self.loop.call_later(timeout, self._unread)

        def resume_writing(self) -> None:
            super().resume_writing()
            if self._stalled is not None:
                self._stalled.cancel()
                self._stalled = None

        def _unread(self) -> None:
            """The client read nothing for ``timeout``: drop it (``close`` would wait for a
            buffer that never drains); the response's sender then sees the disconnect."""
            self._stalled = None
            log.debug("API client %s stopped reading its response for %g s; connection dropped",
                      self.client, timeout)  # debug, as idle closes: one line per connection would be a flood
            self.transport.abort()

        def send_400_response(self, msg: str) -> None:
            self.transport.write(json_error_bytes(ErrorCode.INVALID_REQUEST, f"invalid HTTP request: {msg}"))
            self.transport.close()

        def _arm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = self.loop.call_later(timeout, self._expired)

        def _busy(self) -> bool:
            """A request is in progress: its headers arrived and its response has not ended."""
            cycle: Any = self.cycle
            return (cycle is not None and not cycle.response_complete) or bool(getattr(self, "pipeline", None))

        def _expired(self) -> None:
            """Close unless a request received in full is in progress (``on_response_complete``
            re-arms then); a request whose body is still arriving is answered first."""
            self._deadline = None
            if self.transport.is_closing():
                return
            cycle: Any = self.cycle
            if self._busy():
                if getattr(self, "pipeline", None) or not cycle.more_body:
                    return  # received in full: it runs as long as it takes
                if not cycle.response_started:  # its body is still arriving
                    self.transport.write(json_error_bytes(
                        ErrorCode.INVALID_REQUEST, f"the request's body did not arrive in full within {timeout:g} s "
                        "(--http-timeout)"))
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
            if started:
                raise
            body = json.dumps(error_body(ErrorCode.SHUTTING_DOWN,
                                         "the daemon is stopping; this request was not completed")).encode()
            await send({"type": "http.response.start", "status": ErrorCode.SHUTTING_DOWN.http_status,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body})
            # Answered: the request ends here. Raising on would have uvicorn log an "Exception
            # in ASGI application" traceback at ERROR for every request a shutdown cuts.
            log.info("%s %s cut by the daemon's shutdown; answered %s", scope["method"], scope["path"],
                     ErrorCode.SHUTTING_DOWN.value)
