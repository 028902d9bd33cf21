"""The daemon's side of the PV gateway: one child process, started on first use.

``PVGateway`` is what the API calls. It holds the requests in flight (at most
``--pv-gateway-max-pending``; each is answered within its own timeout plus
``ANSWER_MARGIN``, and a child that lets one pass unanswered is killed as hung), the
monitors (at most ``--pv-gateway-max-monitors``; ``monitors.MonitorTable``, the table the
API lists) and the child (``process.py``: a session of its own, known to the orphan sweep).
A child that dies fails what was in flight with the reason, is logged as an error, counted
(``status()``: what ``GET /pvs/provider`` shows), and started again: at once with backoff
while monitors exist, which it subscribes again, else on the next request. ``close()``
ends its process group.
"""

from __future__ import annotations

import asyncio
import fnmatch
import itertools
import logging
import os
import time
from collections.abc import AsyncGenerator, Callable, Coroutine, Mapping
from typing import Any

from iochost.contract.messages import Message
from iochost.environ import python_child_environ
from iochost.errors import ErrorCode, IochostError
from iochost.pvgateway import process
from iochost.pvgateway import protocol as p
from iochost.pvgateway.monitors import Closed, MonitorTable
from iochost.settings import Settings
from iochost.supervisor.epics import client_address_lists

log = logging.getLogger("iochost.pvgateway")

ANSWER_MARGIN = 5.0  # seconds past a request's timeout before the child is presumed hung
MONITOR_WAIT = 10.0  # seconds a monitor start or stop may take (pv_client's own limit is 5 s)
START_WAIT = 30.0  # seconds from spawn to the child's hello
HEARTBEAT = 5.0  # seconds between pings while monitors exist (each answered within MONITOR_WAIT)
BACKOFF_FIRST, BACKOFF_MAX, BACKOFF_RESET = 1.0, 30.0, 60.0  # restarts while monitors exist


class PVGateway:
    """Gets, puts and monitors of any PV, carried out by the child; what ``/pvs/*`` calls."""

    def __init__(self, settings: Settings, environ: Mapping[str, str] | None = None) -> None:
        self.provider = "pva" if settings.pv_gateway_pva else "ca"
        self.patterns = settings.pv_gateway_write_patterns
        self.max_pending = settings.pv_gateway_max_pending
        self.max_monitors = settings.pv_gateway_max_monitors
        env = python_child_environ()
        env.update(client_address_lists(settings, os.environ if environ is None else environ))
        self._env = env
        self._ids = itertools.count(1)
        self._proc: process.Process | None = None
        self._ready: asyncio.Future[None] | None = None  # the current child's hello
        self._starting = asyncio.Lock()
        self._pending: dict[int, tuple[int, asyncio.Future[p.Answer]]] = {}  # id -> (child's pid, answer)
        self._monitors = MonitorTable()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._restart: asyncio.TimerHandle | None = None
        self._backoff = BACKOFF_FIRST
        self._started_at = 0.0
        self._closed = False
        self.restarts = 0  # exits the daemon did not ask for
        self.last_failure: str | None = None
        self.last_failure_at: float | None = None

    # -- what the API calls ------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Whether the child runs, its pid, and its unasked exits (the last one's reason)."""
        running = self._proc is not None and self._proc.returncode is None
        return {"running": running, "pid": self._proc.pid if running and self._proc else None,
                "pending": len(self._pending), "monitors": len(self._monitors),
                "restarts": self.restarts, "last_failure": self.last_failure,
                "last_failure_at": self.last_failure_at}

    def check_writable(self, pv_name: str) -> None:
        """PV_NOT_ALLOWED unless ``pv_name`` matches a ``--pv-gateway-allow`` pattern."""
        if not any(fnmatch.fnmatchcase(pv_name, pattern) for pattern in self.patterns):
            raise IochostError(ErrorCode.PV_NOT_ALLOWED, f"the PV gateway does not write to {pv_name!r}: it "
                               f"matches none of the patterns {self.patterns} (--pv-gateway-allow)",
                               pv_name=pv_name, patterns=self.patterns)

    async def get(self, pv_name: str, timeout: float) -> p.Answer:
        return await self._request(lambda i: p.GetPV(id=i, pv_name=pv_name, timeout=timeout), timeout + ANSWER_MARGIN)

    async def put(self, pv_name: str, value: Any, timeout: float) -> p.Answer:
        self.check_writable(pv_name)
        return await self._request(lambda i: p.PutPV(id=i, pv_name=pv_name, value=value, timeout=timeout),
                                   timeout + ANSWER_MARGIN)

    def monitors(self) -> dict[str, str]:
        return self._monitors.listing()

    async def monitor(self, key: str, pv_name: str) -> p.Answer:
        """Subscribe ``pv_name`` under ``key``; a key in use is replaced (iocmng's rule)."""
        if key not in self._monitors and len(self._monitors) >= self.max_monitors:
            raise IochostError(ErrorCode.PV_GATEWAY_LIMIT, f"the PV gateway already has {len(self._monitors)} "
                               f"monitors, its cap (--pv-gateway-max-monitors); stop one first",
                               limit=self.max_monitors)
        previous = self._monitors.claim(key, pv_name)  # before the request: its first update may come first
        try:
            answer = await self._request(lambda i: p.StartMonitor(id=i, key=key, pv_name=pv_name), MONITOR_WAIT)
        except BaseException:
            self._monitors.undo(key, pv_name, previous)
            raise
        if not answer.ok:
            self._monitors.undo(key, pv_name, previous)
        return answer

    def has_monitor(self, key: str) -> bool:
        return key in self._monitors

    def monitored(self, key: str) -> str:
        """The PV monitor ``key`` follows; PV_MONITOR_NOT_FOUND if there is none."""
        pv_name = self._monitors.get(key)
        if pv_name is None:
            raise IochostError(ErrorCode.PV_MONITOR_NOT_FOUND, f"no PV gateway monitor with key {key!r} "
                               "(GET /pvs/monitors lists them)", key=key)
        return pv_name

    async def unmonitor(self, key: str) -> None:
        """Stop monitor ``key`` (PV_MONITOR_NOT_FOUND if there is none); its followers' streams end."""
        self.monitored(key)
        self._monitors.drop(key, "the monitor was stopped")
        if self._proc is not None and self._proc.returncode is None:
            answer = await self._request(lambda i: p.StopMonitor(id=i, key=key), MONITOR_WAIT, capped=False)
            if not answer.ok:
                log.warning("stopping PV monitor %r: %s", key, answer.error)

    def follow(self, key: str, keepalive: float) -> AsyncGenerator[p.Update | Closed | None, None]:
        """Monitor ``key``'s updates: the latest known first, then each new one; ``None``
        after ``keepalive`` seconds without one; a ``Closed`` last."""
        return self._monitors.follow(key, keepalive)

    async def close(self) -> None:
        """At the daemon's shutdown: end every stream, fail what is in flight, end the child."""
        self._closed = True
        if self._restart is not None:
            self._restart.cancel()
        self._monitors.end_all("the daemon stops")
        if self._proc is not None:
            await process.end(self._proc)
        for task in list(self._tasks):
            task.cancel()
        self._fail_pending("the daemon stops")

    # -- requests ----------------------------------------------------------------------------
    async def _request(self, make: Callable[[int], Message], wait: float, capped: bool = True) -> p.Answer:
        """Send ``make(id)`` and await its answer, at most ``wait`` seconds (then the child is
        hung). ``capped``: refused at --pv-gateway-max-pending (not a monitor resumed or stopped)."""
        if self._closed:
            raise IochostError(ErrorCode.SHUTTING_DOWN, "the daemon is stopping; the PV gateway takes no request")
        if capped and len(self._pending) >= self.max_pending:
            raise IochostError(ErrorCode.PV_GATEWAY_LIMIT, f"the PV gateway has {len(self._pending)} requests in "
                               "progress, its cap (--pv-gateway-max-pending); retry later", limit=self.max_pending)
        request_id = next(self._ids)
        line = p.encode(make(request_id))
        if len(line) > p.MAX_REQUEST_BYTES:  # the child would drop it, then be killed as hung
            raise IochostError(ErrorCode.PAYLOAD_TOO_LARGE, f"the request is {len(line)} bytes as the PV gateway "
                               f"sends it, over its limit of {p.MAX_REQUEST_BYTES} bytes")
        try:
            proc = await self._running()
        except OSError as exc:
            return p.Answer(id=request_id, ok=False, error=f"the PV gateway process could not start: {exc}")
        except RuntimeError as exc:
            return p.Answer(id=request_id, ok=False, error=str(exc))
        answer: asyncio.Future[p.Answer] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (proc.pid, answer)
        assert proc.stdin is not None
        proc.stdin.write(line)
        try:
            return await asyncio.wait_for(asyncio.shield(answer), wait)
        except asyncio.TimeoutError:
            if proc.returncode is None and request_id in self._pending:
                log.error("the PV gateway process (pid %d) gave no answer within %.0f s; killing it as hung",
                          proc.pid, wait)
                process.kill(proc)
                if self._proc is proc:  # the next request starts a new one, even before this one's exit is seen
                    self._proc = None
            return p.Answer(id=request_id, ok=False, error=f"no answer from the PV gateway within {wait:.0f} s")

    def _on_reply(self, reply: p.Answer | p.Update) -> None:
        if isinstance(reply, p.Update):
            self._monitors.deliver(reply)
            return
        _, future = self._pending.pop(reply.id, (None, None))
        if future is not None and not future.done():
            future.set_result(reply)

    def _fail_pending(self, reason: str, pid: int | None = None) -> int:
        """Answer the requests sent to child ``pid`` (all: None) with ``reason``; how many."""
        failed = [request_id for request_id, (to, _) in self._pending.items() if pid is None or to == pid]
        for request_id in failed:
            _, future = self._pending.pop(request_id)
            if not future.done():
                future.set_result(p.Answer(id=request_id, ok=False, error=reason))
        return len(failed)

    # -- the child's life --------------------------------------------------------------------
    async def _running(self) -> process.Process:
        """The child, started (and its hello awaited) if none runs."""
        async with self._starting:
            if self._proc is not None and self._proc.returncode is None and self._ready is not None:
                await asyncio.shield(self._ready)
                return self._proc
            if self._closed:
                raise RuntimeError("the daemon is stopping")
            proc = await process.spawn(self.provider, self.max_pending, self._env)
            self._proc, self._started_at = proc, time.monotonic()
            self._ready = asyncio.get_running_loop().create_future()
            ready = self._ready
            for job in (process.read_replies(proc, ready, self._on_reply), process.log_stderr(proc),
                        self._watch(proc, ready)):
                self._spawn(job)
            log.info("PV gateway process started (pid %d, %s)", proc.pid, self.provider)
            try:
                await asyncio.wait_for(asyncio.shield(ready), START_WAIT)
            except asyncio.TimeoutError:
                process.kill(proc)
                raise RuntimeError(f"the PV gateway process did not start within {START_WAIT:.0f} s") from None
            if self._monitors:  # a child after one that died: it subscribes the monitors again
                self._spawn(self._resubscribe(proc))
            self._spawn(self._heartbeat(proc))
            return proc

    async def _heartbeat(self, proc: process.Process) -> None:
        """While monitors exist, a ping every ``HEARTBEAT`` seconds: a child that stopped
        answering (SIGSTOP, a deadlock) with nothing else asked of it would leave every
        monitor silent, unnoticed. ``_request`` kills it as hung; ``_watch`` restarts it."""
        while True:
            await asyncio.sleep(HEARTBEAT)
            if self._closed or self._proc is not proc or proc.returncode is not None:
                return
            if self._monitors:
                await self._request(lambda i: p.Ping(id=i), MONITOR_WAIT, capped=False)

    async def _watch(self, proc: process.Process, ready: asyncio.Future[None]) -> None:
        how = await process.reap(proc)
        if self._closed:
            return
        reason = f"the PV gateway process (pid {proc.pid}) {how}"
        if not ready.done():
            ready.set_exception(RuntimeError(f"{reason} before it was ready (its output is in the daemon log)"))
            ready.exception()  # retrieved: the waiter, if any, raises it
        self.restarts += 1
        self.last_failure, self.last_failure_at = reason, time.time()
        failed = self._fail_pending(reason, proc.pid)
        self._monitors.disconnected(reason)
        if time.monotonic() - self._started_at > BACKOFF_RESET:
            self._backoff = BACKOFF_FIRST
        if self._monitors:
            log.error("%s; %d request(s) failed; starting it again in %.0f s to resume %d monitor(s)",
                      reason, failed, self._backoff, len(self._monitors))
            self._start_later()
        else:
            log.error("%s; %d request(s) failed; it starts again with the next /pvs request", reason, failed)

    def _start_later(self) -> None:
        """A new child after the backoff, for the monitors (``_running`` resubscribes them)."""
        self._restart = asyncio.get_running_loop().call_later(self._backoff, lambda: self._spawn(self._start_again()))
        self._backoff = min(self._backoff * 2, BACKOFF_MAX)

    async def _start_again(self) -> None:
        if self._closed or not self._monitors:
            return
        try:
            await self._running()
        except (OSError, RuntimeError) as exc:
            log.error("the PV gateway process could not start again (%s); next try in %.0f s", exc, self._backoff)
            self._start_later()

    async def _resubscribe(self, proc: process.Process) -> None:
        """Every monitor subscribed again in the new child ``proc``."""
        resumed = 0
        for key, pv_name in self._monitors.listing().items():
            if self._closed or proc.returncode is not None:
                return  # its exit schedules the next try
            if self._monitors.get(key) != pv_name:
                continue
            def start(i: int, k: str = key, n: str = pv_name) -> Message:
                return p.StartMonitor(id=i, key=k, pv_name=n)

            try:
                answer = await self._request(start, MONITOR_WAIT, capped=False)
            except IochostError as exc:  # the daemon stops
                answer = p.Answer(id=0, ok=False, error=exc.message)
            if answer.ok:
                resumed += 1
            else:
                log.error("PV monitor %r (%s) not resumed: %s", key, pv_name, answer.error)
        log.info("PV gateway process %d running again; %d monitor(s) resumed", proc.pid, resumed)

    def _spawn(self, job: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
