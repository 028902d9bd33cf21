"""The PV gateway's process: ``python -m iochost.pvgateway.child [--ca] [--threads N]``.

Reads requests (``protocol``) from stdin and writes answers and monitor updates to the
stdout it was given; everything else it or a library prints goes to stderr, which the
daemon logs. Gets and puts run on a pool of ``--threads`` threads (the daemon never has
more in flight), so a get waiting out its timeout delays no other request; monitor starts
and stops run in order on one thread of their own. Updates are coalesced per monitor: when
the daemon reads slower than a PV changes, it gets the latest value, never a backlog.
Ends at the end of stdin (the daemon closed it or died), and with the daemon (PDEATHSIG).
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import math
import os
import signal
import sys
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from iochost.pvgateway import protocol as p
from iochost.pvgateway.values import json_safe
from iochost.sdk import pv_client

log = logging.getLogger("iochost.pvgateway.child")


class Output:
    """The one writer of the reply pipe: answers in order, then the latest update of each
    monitor that changed since the last write."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._changed = threading.Condition()
        self._answers: deque[p.Answer | p.Hello] = deque()
        self._updates: dict[str, p.Update] = {}
        threading.Thread(target=self._write_loop, name="pvgw-output", daemon=True).start()

    def answer(self, message: p.Answer | p.Hello) -> None:
        with self._changed:
            self._answers.append(message)
            self._changed.notify()

    def update(self, message: p.Update) -> None:
        with self._changed:
            self._updates.pop(message.key, None)  # re-inserted last: keys take turns
            self._updates[message.key] = message
            self._changed.notify()

    def forget(self, key: str) -> None:
        """A stopped monitor: an update of it not written yet is dropped."""
        with self._changed:
            self._updates.pop(key, None)

    def _write_loop(self) -> None:
        while True:
            with self._changed:
                while not self._answers and not self._updates:
                    self._changed.wait()
                batch: list[Any] = [*self._answers, *self._updates.values()]
                self._answers.clear()
                self._updates.clear()
            data = b"".join(_bounded_line(message) for message in batch)
            try:
                while data:
                    data = data[os.write(self._fd, data):]
            except OSError:  # the daemon is gone
                os._exit(0)


def _bounded_line(message: Any) -> bytes:
    """The message's line; a value too big for the pipe becomes an error naming its size."""
    line = p.encode(message)
    if len(line) <= p.MAX_REPLY_BYTES:
        return line
    error = (f"the value is {len(line)} bytes as JSON, over the PV gateway's limit of "
             f"{p.MAX_REPLY_BYTES} bytes")
    return p.encode(message.model_copy(update={"value": None, "error": error, "ok": False}
                                       if isinstance(message, p.Answer) else {"value": None, "error": error}))


def _failure(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class Gateway:
    """Carries out requests with ``pv_client`` and reports through ``Output``."""

    def __init__(self, output: Output, threads: int) -> None:
        self.output = output
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="pvgw-request")
        self.monitors = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pvgw-monitors")

    def handle(self, request: Any) -> None:
        if isinstance(request, p.GetPV):
            self.pool.submit(self._answer, request.id, lambda: json_safe(pv_client.get(request.pv_name,
                                                                                    request.timeout)))
        elif isinstance(request, p.PutPV):
            self.pool.submit(self._answer, request.id,
                             lambda: pv_client.put(request.pv_name, request.value, request.timeout))
        elif isinstance(request, p.StartMonitor):
            self.monitors.submit(self._answer, request.id, lambda: self._start(request.key, request.pv_name))
        elif isinstance(request, p.StopMonitor):
            self.monitors.submit(self._answer, request.id, lambda: self._stop(request.key))
        elif isinstance(request, p.Ping):
            self.output.answer(p.Answer(id=request.id, ok=True))

    def _answer(self, request_id: int, action: Callable[[], Any]) -> None:
        try:
            value = action()
        except Exception as exc:  # noqa: BLE001 - every failure is the request's answer
            self.output.answer(p.Answer(id=request_id, ok=False, error=_failure(exc)))
        else:
            self.output.answer(p.Answer(id=request_id, ok=True, value=value))

    def _start(self, key: str, pv_name: str) -> None:
        def on_value(update: pv_client.PVUpdate) -> None:
            self.output.update(p.Update(key=key, value=json_safe(update.value), severity=update.severity,
                                        alarm=update.message, timestamp=_finite(update.timestamp)))

        def on_connection(connected: bool) -> None:
            if not connected:
                self.output.update(p.Update(key=key, connected=False))

        pv_client.monitor(pv_name, on_value, name=key, conn_callback=on_connection, metadata=True)

    def _stop(self, key: str) -> bool:
        stopped = pv_client.unmonitor(key)
        self.output.forget(key)
        if not stopped:
            raise LookupError(f"no monitor {key!r}")
        return stopped


def _finite(timestamp: float | None) -> float | None:
    """A timestamp JSON can carry; none (a server that sent no time gives 0) is null."""
    return timestamp if timestamp and math.isfinite(timestamp) else None


def _die_with_parent() -> None:
    """SIGTERM from Linux when the daemon dies, besides the end of stdin."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m iochost.pvgateway.child")
    parser.add_argument("--ca", action="store_true", help="Channel Access instead of PV Access")
    parser.add_argument("--threads", type=int, default=8, help="gets and puts at once")
    args = parser.parse_args(argv)
    _die_with_parent()
    if os.getppid() == 1:  # the daemon died before we asked
        sys.exit(0)
    replies = os.dup(1)  # the reply pipe is ours alone: stray prints go to stderr
    os.dup2(2, 1)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    pv_client.init(pva=not args.ca)
    output = Output(replies)
    gateway = Gateway(output, max(1, args.threads))
    output.answer(p.Hello(pid=os.getpid(), provider=pv_client.get_provider()))
    decoder = p.request_decoder(lambda problem: log.error("from the daemon: %s", problem))
    while data := os.read(0, 65536):
        for request in decoder.feed(data):
            gateway.handle(request)
    os._exit(0)  # the daemon closed our stdin: monitors and client threads end with the process


if __name__ == "__main__":
    main()
