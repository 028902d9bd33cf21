"""The daemon's event loop: asyncio's selector loop, except that a refused accept backs off once.

When ``accept()`` on the API's socket fails for want of resources (EMFILE, ENFILE, ENOBUFS,
ENOMEM), asyncio reports it, stops watching the socket and schedules one retry a second
later (``ACCEPT_RETRY_DELAY``). Python releases without the fix for CPython gh-151615
then go on calling ``accept()`` for the rest of the backlog (uvicorn's: 2048), and every
failure schedules one more retry; each retry finds the connections still queued and does the
same. Measured on Python 3.11 with the daemon at its open-file limit and 200 connections
queued: 590,000 log lines in 60 s, the event loop busy with nothing but retries, and a crashed
worker due for a respawn in 3 s never respawned. ``DaemonEventLoop`` ends the pass at the first
such failure, as the fixed releases do: one retry a second while the files are short.

The failure itself is logged at most once a minute, with how often it happened since
(``accept_refusals``), so a flood at the open-file limit says so without filling the disk.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from typing import Any

log = logging.getLogger("iochost.api")

RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
REPORT_INTERVAL = 60.0  # seconds between log lines about refused accepts
ACCEPT_REFUSED = "socket.accept() out of system resource"  # asyncio's message for the context


class _StopAfterRefusal:
    """The listening socket as one accept pass sees it: after the first resource error,
    ``accept()`` says there is nothing more to accept, which ends asyncio's pass."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.refused = False

    def accept(self) -> tuple[socket.socket, Any]:
        if self.refused:
            raise BlockingIOError(errno.EAGAIN, "accept pass ended after a refusal")
        try:
            return self.sock.accept()
        except OSError as exc:
            self.refused = exc.errno in RESOURCE_ERRORS
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def __getattr__(self, name: str) -> Any:  # family, type, getsockname ... for asyncio's report
        return getattr(self.sock, name)


class _AcceptRefusals:
    """Refused accepts, logged at most once per REPORT_INTERVAL with their count."""

    def __init__(self) -> None:
        self.count = 0
        self.logged_at = -REPORT_INTERVAL

    def report(self, exc: BaseException | None) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self.logged_at >= REPORT_INTERVAL:
            log.error("API: cannot accept new connections: %s (%d time(s) since the last report); they wait in "
                      "the listen backlog, retried every second", exc, self.count)
            self.count, self.logged_at = 0, now


class DaemonEventLoop(asyncio.SelectorEventLoop):
    """The loop ``iochost serve`` runs uvicorn and the supervisor on (uvicorn's ``loop``)."""

    def __init__(self) -> None:
        super().__init__()
        self.accept_refusals = _AcceptRefusals()
        self.set_exception_handler(self._handle_exception)

    def _accept_connection(self, protocol_factory: Any, sock: Any, *args: Any, **kwargs: Any) -> None:
        listening = sock.sock if isinstance(sock, _StopAfterRefusal) else sock  # a retry passes ours back
        super()._accept_connection(protocol_factory, _StopAfterRefusal(listening),  # type: ignore[misc]
                                   *args, **kwargs)

    def _handle_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == ACCEPT_REFUSED:
            self.accept_refusals.report(context.get("exception"))
        else:
            loop.default_exception_handler(context)
