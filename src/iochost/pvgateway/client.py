"""The daemon's side of the PV gateway: one child process, started on first use.

``PVGateway`` owns the child (``python -m iochost.pvgateway.child``, a session of its own,
known to the orphan sweep) and what the API asked of it: the requests in flight (at most
``--pv-gateway-max-pending``; each is answered within its own timeout plus
``ANSWER_MARGIN``, and a child that lets one pass unanswered is killed as hung), and the
monitors (at most ``--pv-gateway-max-monitors``; the daemon's table is the one the API
lists). A child that dies fails what was in flight with the reason, is logged as an
error, counted (``status()``: what ``GET /pvs/provider`` shows), and started again: at
once with backoff while monitors exist, which it subscribes again, else on the next
request. ``close()`` ends its process group.
"""

from __future__ import annotations

import asyncio
import fnmatch
import itertools
import logging
import os
import signal
import sys
import time
from typing import Any, AsyncIterator, Mapping

from iochost.budget import LineBudget
from iochost.environ import python_child_environ
from iochost.errors import ErrorCode, IochostError
from iochost.proctree import OWN_CHILDREN
from iochost.pvgateway import protocol as p
from iochost.settings import Settings
from iochost.supervisor.epics import client_address_lists

log = logging.getLogger("iochost.pvgateway")

ANSWER_MARGIN = 5.0  # seconds past a request's timeout before the child is presumed hung
MONITOR_WAIT = 10.0  # seconds a monitor start or stop may take (pv_client's own limit is 5 s)
START_WAIT = 30.0  # seconds from spawn to the child's hello
HEARTBEAT = 5.0  # seconds between pings while monitors exist (each answered within MONITOR_WAIT)
BACKOFF_FIRST, BACKOFF_MAX, BACKOFF_RESET = 1.0, 30.0, 60.0  # restarts while monitors exist
FOLLOWER_QUEUE = 64  # updates a slow SSE reader may lag behind; the oldest go first
STDERR_LINES = (50, 10.0)  # the child's stderr lines logged per period, the rest counted


class Closed:
    """The end of a monitor's stream: the monitor was stopped, or the daemon stops."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _exit_reason(code: int) -> str:
    return f"was killed by signal {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"


class PVGateway:
    def __init__(self, settings: Settings, environ: Mapping[str, str] | None = None) -> None:
        self.provider = "pva" if settings.pv_gateway_pva else "ca"
        self.patterns = settings.pv_gateway_write_patterns
        self.max_pending = settings.pv_gateway_max_pending
        self.max_monitors = settings.pv_gateway_max_monitors
        env = python_child_environ()
        env.update(client_address_lists(settings, os.environ if environ is None else environ))
        self._env = env
        self._ids = itertools.count(1)
        self._proc: asyncio.subprocess.Process | None = None
        self._ready: asyncio.Future[None] | None = None  # the current child's hello
        self._starting = asyncio.Lock()
        self._pending: dict[int, tuple[int, asyncio.Future[p.Answer]]] = {}  # id -> (child's pid, answer)
        self._monitors: dict[str, str] = {}  # key -> pv_name, as the API asked
        self._latest: dict[str, p.Update] = {}
        self._followers: dict[str, set[asyncio.Queue[p.Update | Closed]]] = {}
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
        return dict(self._monitors)

    async def monitor(self, key: str, pv_name: str) -> p.Answer:
        """Subscribe ``pv_name`` under ``key``; a key in use is replaced (iocmng's rule)."""
        previous = self._monitors.get(key)
        if previous is None and len(self._monitors) >= self.max_monitors:
            raise IochostError(ErrorCode.PV_GATEWAY_LIMIT, f"the PV gateway already has {len(self._monitors)} "
                               f"monitors, its cap (--pv-gateway-max-monitors); stop one first",
                               limit=self.max_monitors)
        if previous not in (None, pv_name):
            self._end_followers(key, f"monitor {key!r} now follows {pv_name!r}")
            self._latest.pop(key, None)
        self._monitors[key] = pv_name  # before the request: its first update may come before its answer
        try:
            answer = await self._request(lambda i: p.StartMonitor(id=i, key=key, pv_name=pv_name), MONITOR_WAIT)
        except BaseException:
            self._undo_monitor(key, pv_name, previous)
            raise
        if not answer.ok:
            self._undo_monitor(key, pv_name, previous)
        return answer

    def _undo_monitor(self, key: str, pv_name: str, previous: str | None) -> None:
        """A monitor start that failed: the key is as before (the child keeps what it had under it)."""
        if self._monitors.get(key) != pv_name:
            return  # changed again meanwhile
        if previous is None:
            del self._monitors[key]
            self._latest.pop(key, None)
        else:
            self._monitors[key] = previous

    def monitored(self, key: str) -> str:
        """The PV monitor ``key`` follows; PV_MONITOR_NOT_FOUND if there is none."""
        if key not in self._monitors:
            raise IochostError(ErrorCode.PV_MONITOR_NOT_FOUND, f"no PV gateway monitor with key {key!r} "
                               "(GET /pvs/monitors lists them)", key=key)
        return self._monitors[key]

    async def unmonitor(self, key: str) -> None:
        """Stop monitor ``key`` (PV_MONITOR_NOT_FOUND if there is none); its followers' streams end."""
        self.monitored(key)
        del self._monitors[key]
        self._latest.pop(key, None)
        self._end_followers(key, "the monitor was stopped")
        if self._proc is not None and self._proc.returncode is None:
            answer = await self._request(lambda i: p.StopMonitor(id=i, key=key), MONITOR_WAIT, capped=False)
            if not answer.ok:
                log.warning("stopping PV monitor %r: %s", key, answer.error)

    async def follow(self, key: str, keepalive: float) -> AsyncIterator[p.Update | Closed | None]:
        """Monitor ``key``'s updates: the latest known first, then each new one; ``None``
        after ``keepalive`` seconds without one; a ``Closed`` last."""
        if key not in self._monitors:  # stopped since the caller looked
            yield Closed("the monitor was stopped")
            return
        queue: asyncio.Queue[p.Update | Closed] = asyncio.Queue(FOLLOWER_QUEUE)
        self._followers.setdefault(key, set()).add(queue)
        try:
            if key in self._latest:
                yield self._latest[key]
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), keepalive)
                except asyncio.TimeoutError:
                    yield None
                    continue
                yield item
                if isinstance(item, Closed):
                    return
        finally:
            followers = self._followers.get(key)
            if followers is not None:
                followers.discard(queue)
                if not followers:
                    del self._followers[key]

    async def close(self) -> None:
        """At the daemon's shutdown: end every stream, fail what is in flight, end the child."""
        self._closed = True
        if self._restart is not None:
            self._restart.cancel()
        for key in list(self._followers):
            self._end_followers(key, "the daemon stops")
        proc = self._proc
        if proc is not None and proc.returncode is None:
            self._kill(proc)
            await proc.wait()
            OWN_CHILDREN.untrack(proc.pid)
        for task in list(self._tasks):
            task.cancel()
        self._fail_pending("the daemon stops")

    # -- the child -------------------------------------------------------------------------------
    async def _request(self, make: Any, wait: float, capped: bool = True) -> p.Answer:
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
                self._kill(proc)
                if self._proc is proc:  # the next request starts a new one, even before this one's exit is seen
                    self._proc = None
            return p.Answer(id=request_id, ok=False, error=f"no answer from the PV gateway within {wait:.0f} s")

    async def _running(self) -> asyncio.subprocess.Process:
        """The child, started (and its hello awaited) if none runs."""
        async with self._starting:
            if self._proc is not None and self._proc.returncode is None and self._ready is not None:
                await asyncio.shield(self._ready)
                return self._proc
            if self._closed:
                raise RuntimeError("the daemon is stopping")
            argv = [sys.executable, "-m", "iochost.pvgateway.child", "--threads", str(self.max_pending)]
            if self.provider == "ca":
                argv.append("--ca")
            with OWN_CHILDREN.spawning():
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE, env=self._env, start_new_session=True)
                OWN_CHILDREN.track(proc.pid)
            self._proc, self._started_at = proc, time.monotonic()
            self._ready = asyncio.get_running_loop().create_future()
            ready = self._ready
            for job in (self._read_replies(proc, ready), self._read_stderr(proc), self._watch(proc, ready)):
                self._spawn(job)
            log.info("PV gateway process started (pid %d, %s)", proc.pid, self.provider)
            try:
                await asyncio.wait_for(asyncio.shield(ready), START_WAIT)
            except asyncio.TimeoutError:
                self._kill(proc)
                raise RuntimeError(f"the PV gateway process did not start within {START_WAIT:.0f} s") from None
            if self._monitors:  # a child after one that died: it subscribes the monitors again
                self._spawn(self._resubscribe(proc))
            self._spawn(self._heartbeat(proc))
            return proc

    async def _heartbeat(self, proc: asyncio.subprocess.Process) -> None:
        """While monitors exist, a ping every ``HEARTBEAT`` seconds: a child that stopped
        answering (SIGSTOP, a deadlock) with nothing else asked of it would leave every
        monitor silent, unnoticed. ``_request`` kills it as hung; ``_watch`` restarts it."""
        while True:
            await asyncio.sleep(HEARTBEAT)
            if self._closed or self._proc is not proc or proc.returncode is not None:
                return
            if self._monitors:
                await self._request(lambda i: p.Ping(id=i), MONITOR_WAIT, capped=False)

    async def _read_replies(self, proc: asyncio.subprocess.Process, ready: asyncio.Future[None]) -> None:
        assert proc.stdout is not None
        decoder = p.reply_decoder(lambda problem: log.error("from the PV gateway process: %s", problem))
        while data := await proc.stdout.read(65536):
            for reply in decoder.feed(data):
                if isinstance(reply, p.Answer):
                    _, future = self._pending.pop(reply.id, (None, None))
                    if future is not None and not future.done():
                        future.set_result(reply)
                elif isinstance(reply, p.Update):
                    self._deliver(reply)
                elif isinstance(reply, p.Hello) and not ready.done():
                    ready.set_result(None)

    async def _read_stderr(self, proc: asyncio.subprocess.Process) -> None:
        """The child's own log and whatever its libraries print, into the daemon's log."""
        assert proc.stderr is not None
        budget, partial = LineBudget(*STDERR_LINES), b""
        while data := await proc.stderr.read(65536):
            *lines, partial = (partial + data).split(b"\n")
            if len(partial) > 65536:  # no newline in sight: logged in pieces
                lines.append(partial)
                partial = b""
            for line in lines:
                now = time.monotonic()
                if budget.allow(now):
                    log.info("pv gateway: %s", line.decode(errors="replace").rstrip())
                elif (dropped := budget.summary(now)) is not None:
                    log.info("pv gateway: %d more lines not logged", dropped)

    async def _watch(self, proc: asyncio.subprocess.Process, ready: asyncio.Future[None]) -> None:
        code = await proc.wait()
        OWN_CHILDREN.untrack(proc.pid)
        self._kill(proc)  # anything it left in its group
        if self._closed:
            return
        reason = f"the PV gateway process (pid {proc.pid}) {_exit_reason(code)}"
        if not ready.done():
            ready.set_exception(RuntimeError(f"{reason} before it was ready (its output is in the daemon log)"))
            ready.exception()  # retrieved: the waiter, if any, raises it
        self.restarts += 1
        self.last_failure, self.last_failure_at = reason, time.time()
        failed = self._fail_pending(reason, proc.pid)
        for key in self._monitors:
            self._deliver(p.Update(key=key, connected=False, error=reason))
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

    async def _resubscribe(self, proc: asyncio.subprocess.Process) -> None:
        """Every monitor subscribed again in the new child ``proc``."""
        resumed = 0
        for key, pv_name in list(self._monitors.items()):
            if self._closed or proc.returncode is not None:
                return  # its exit schedules the next try
            if self._monitors.get(key) != pv_name:
                continue
            try:
                answer = await self._request(lambda i, k=key, n=pv_name: p.StartMonitor(id=i, key=k, pv_name=n),
                                             MONITOR_WAIT, capped=False)
            except IochostError as exc:  # the daemon stops
                answer = p.Answer(id=0, ok=False, error=exc.message)
            if answer.ok:
                resumed += 1
            else:
                log.error("PV monitor %r (%s) not resumed: %s", key, pv_name, answer.error)
        log.info("PV gateway process %d running again; %d monitor(s) resumed", proc.pid, resumed)

    def _spawn(self, job: Any) -> None:
        task = asyncio.ensure_future(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _fail_pending(self, reason: str, pid: int | None = None) -> int:
        """Answer the requests sent to child ``pid`` (all: None) with ``reason``; how many."""
        failed = [request_id for request_id, (to, _) in self._pending.items() if pid is None or to == pid]
        for request_id in failed:
            _, future = self._pending.pop(request_id)
            if not future.done():
                future.set_result(p.Answer(id=request_id, ok=False, error=reason))
        return len(failed)

    def _deliver(self, update: p.Update) -> None:
        if update.key not in self._monitors:
            return
        if update.connected:
            self._latest[update.key] = update
        for queue in self._followers.get(update.key, ()):
            _offer(queue, update)

    def _end_followers(self, key: str, reason: str) -> None:
        """Their streams end; no later update reaches them (a key given to another PV would
        otherwise push its values into a slow reader's queue, past the ``Closed``)."""
        for queue in self._followers.pop(key, ()):
            _offer(queue, Closed(reason))

    @staticmethod
    def _kill(proc: asyncio.subprocess.Process) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _offer(queue: asyncio.Queue[Any], item: Any) -> None:
    """Into a follower's queue; when it is full the oldest update makes room."""
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(item)
