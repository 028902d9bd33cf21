"""A worker process as the supervisor sees it: spawn, event stream, commands, stop.

Thin asyncio I/O around ``contract.messages``. Each worker gets three pipes: events come in
on one; commands go out on another, whose end-of-file tells the worker its supervisor
is gone, so even ``kill -9`` of the daemon leaves no IOC behind; its stdout and stderr
share the third, which the daemon writes to the plugin's rotating log file.

However a worker ends, ``wait()`` returns only once everything it started is gone
(``Containment.end``) and its output is in the log.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from iochost.budget import LineBudget, TokenBucket
from iochost.contract import messages
from iochost.contract.worker_spec import WorkerSpec
from iochost.errors import ErrorCode
from iochost.launch import protocol
from iochost.launch.launcher import Child, Launcher, LaunchError
from iochost.proctree import OWN_CHILDREN
from iochost.shortages import EXHAUSTED, OUT_OF_SPACE
from iochost.supervisor.containment import Containment
from iochost.supervisor.logfiles import RotatingFile

log = logging.getLogger("iochost.supervisor")

OUTPUT_DRAIN_WAIT = 2.0  # seconds after the exit for the output pipe to reach end-of-file
THROTTLE_BURST = 4.0  # seconds of the output rate a plugin may write at once
EVENT_RATE = 1024 * 1024  # bytes/s of events a worker may send: heartbeats and logs need a fraction
EVENT_BURST = 8.0  # seconds of it at once: a job result may be MAX_LINE (4 MiB)
PROBLEM_RATE = (10, 60.0)  # bad messages from one worker logged: 10 a minute, then counted


class _ThrottledReader(asyncio.Protocol):
    """A pipe reader with a byte budget: past it, reading pauses for as long as the budget
    needs to recover, the pipe fills and the writer waits, as a container runtime's
    blocking log driver does. So whatever a plugin writes costs the daemon what the budget
    allows, not a core. ``unthrottle`` (once the worker has exited) reads the rest at once."""

    def __init__(self, throttle: TokenBucket | None) -> None:
        self._throttle = throttle
        self._transport: asyncio.ReadTransport | None = None
        self._resume: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.ReadTransport)
        self._transport = transport

    def _account(self, size: int) -> None:
        if self._throttle is None or self._transport is None or self._resume is not None:
            return
        loop = asyncio.get_running_loop()
        wait = self._throttle.spend(loop.time(), size)
        if wait > 0:
            self._transport.pause_reading()
            self._resume = loop.call_later(wait, self._resume_reading)

    def _resume_reading(self) -> None:
        self._resume = None
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def unthrottle(self) -> None:
        self._throttle = None
        if self._resume is not None:
            self._resume.cancel()
            self._resume_reading()


class _EventProtocol(_ThrottledReader):
    """Worker events to ``on_event``; at most EVENT_RATE bytes/s, so a worker writing junk
    to its event pipe stalls its own heartbeats (and is restarted as hung), not the daemon."""

    def __init__(self, on_event: Callable[[Any], None], name: str) -> None:
        super().__init__(TokenBucket(int(EVENT_RATE * EVENT_BURST), EVENT_BURST))
        self._decoder = messages.event_decoder(self._problem)
        self._on_event = on_event
        self._name = name
        self._problems = LineBudget(*PROBLEM_RATE)  # a junk-writing worker must not flood our log

    def _problem(self, what: str) -> None:
        now = time.monotonic()
        if self._problems.allow(now):
            dropped = self._problems.summary(now)
            more = f" (and {dropped} more not logged)" if dropped else ""
            log.error("%s: from worker: %s%s", self._name, what, more)

    def data_received(self, data: bytes) -> None:
        for message in self._decoder.feed(data):
            try:
                self._on_event(message)
            except Exception as exc:
                log.debug("%s: handling %r failed", self._name, message, exc_info=True)
                self._problem(f"{type(message).__name__} message not handled ({type(exc).__name__}: {exc}); dropped")
        self._account(len(data))


class _OutputProtocol(_ThrottledReader):
    """The worker's stdout+stderr into its rotating log file, read within ``throttle``;
    ``done`` at end-of-file."""

    def __init__(self, logfile: RotatingFile, throttle: TokenBucket | None) -> None:
        super().__init__(throttle)
        self._logfile = logfile
        self._failing = False  # a write failed: logged once until one succeeds again
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        try:
            self._logfile.write(data)
        except OSError as exc:  # a full disk must not take the supervisor down (nor flood its log)
            if not self._failing:
                log.error("cannot write %s: %s; the worker's output is dropped until it can", self._logfile.path, exc)
            self._failing = True
        else:
            if self._failing:
                log.warning("%s is written again", self._logfile.path)
            self._failing = False
        self._account(len(data))

    def connection_lost(self, exc: Exception | None) -> None:
        self._logfile.close()
        if not self.done.done():
            self.done.set_result(None)


def host_shortage(exc: BaseException) -> OSError | None:
    """The OSError of the host's shortage (OUT_OF_SPACE or EXHAUSTED) that is ``exc`` or an
    exception it was raised from or during; None when the failure is not the host's."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in OUT_OF_SPACE | EXHAUSTED:
            return current
        current = current.__cause__ or current.__context__
    return None


def host_fault(exc: BaseException) -> ErrorCode | None:
    """The code of the host's shortage behind ``exc``: STORAGE_FULL for a full disk,
    LAUNCHER_UNAVAILABLE for EXHAUSTED; None when it is not the host's. A spawn that
    failed so is retried with backoff like a crash."""
    shortage = host_shortage(exc)
    if shortage is None:
        return None
    return ErrorCode.STORAGE_FULL if shortage.errno in OUT_OF_SPACE else ErrorCode.LAUNCHER_UNAVAILABLE


def spec_path(run_dir: Path, name: str) -> Path:
    """Where a plugin's worker spec is written (the worker's command line names it); the
    teardown of the plugin removes it."""
    return run_dir / f"{name}.json"


def write_private(path: Path, text: str) -> None:
    """Write ``path`` readable by the daemon's user only (0600) from its creation on: a
    worker spec holds the plugin's parameters, which may hold credentials."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(fd, 0o600)  # a spec an older daemon wrote keeps its mode through O_TRUNC
        f.write(text)


async def _launch(launcher: Launcher, containment: Containment, spec: WorkerSpec, spec_file: Path,
                  env: dict[str, str], event_write: int, command_read: int, output_write: int) -> Child | None:
    """The worker as a fork of the launcher's warm member; None when the fork server cannot
    provide one (the caller spawns instead). A member that waited in its cgroup already
    (``Containment.place_member``) needs not join one."""
    try:
        member = await asyncio.to_thread(launcher.acquire, True)
        event_fd, command_fd = member.free_fds(2)  # the pipe ends' numbers inside the member
        try:
            cgroup = None if containment.adopt(spec.name, member.pid) else \
                await asyncio.to_thread(containment.prepare, spec.name)
            spec = spec.model_copy(update={"event_fd": event_fd, "command_fd": command_fd, "cgroup": cgroup})
            await asyncio.to_thread(write_private, spec_file, spec.model_dump_json())
        except BaseException:
            member.discard()
            raise
        return await asyncio.to_thread(  # waits for the member's answer: never on the event loop
            member.start, protocol.WORKER, [str(spec_file)], env, (None, output_write, output_write),
            {event_fd: event_write, command_fd: command_read}, title=f"iochost.worker {spec_file} (forked)")
    except LaunchError as exc:
        log.warning("%s: fork server: %s; spawning the worker instead", spec.name, exc)
        return None


class WorkerProcess:
    """One spawned worker. ``wait()`` returns its exit code; ``stop()`` ends it for sure."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process | Child, commands: asyncio.WriteTransport,
                 events: _EventProtocol, output: tuple[asyncio.ReadTransport, _OutputProtocol],
                 spec: WorkerSpec, containment: Containment) -> None:
        self.name = name
        self.proc = proc
        self.pid = proc.pid
        self._commands = commands
        self._events = events
        self._output = output
        self.spec = spec
        self._containment = containment
        self._ended = asyncio.ensure_future(self._end())

    @classmethod
    async def spawn(
        cls,
        spec: WorkerSpec,
        *,
        run_dir: Path,
        logfile: RotatingFile,
        env: dict[str, str],
        on_event: Callable[[Any], None],
        containment: Containment,
        python: str | None = None,
        launcher: Launcher | None = None,
        output_rate: float = 0.0,
    ) -> "WorkerProcess":
        """Start the worker: forked from ``launcher``'s template when it runs our interpreter,
        else ``python -m iochost.worker`` (``python``: a plugin's own environment).

        ``logfile`` is the worker's from now on: it is closed when the output ends.
        ``output_rate``: bytes per second its stdout/stderr may write (bursts of 4 s); 0: any."""
        loop = asyncio.get_running_loop()
        event_read, event_write = os.pipe()
        command_read, command_write = os.pipe()
        output_read, output_write = os.pipe()
        try:
            spec_file = spec_path(run_dir, spec.name)
            proc: asyncio.subprocess.Process | Child | None = None
            if launcher is not None and python is None:
                proc = await _launch(launcher, containment, spec, spec_file, env, event_write, command_read,
                                     output_write)
            if proc is None:
                cgroup = await asyncio.to_thread(containment.prepare, spec.name)
                spec = spec.model_copy(update={"event_fd": event_write, "command_fd": command_read, "cgroup": cgroup})
                await asyncio.to_thread(write_private, spec_file, spec.model_dump_json())
                with OWN_CHILDREN.spawning():
                    proc = await asyncio.create_subprocess_exec(
                        python or sys.executable, "-m", "iochost.worker", str(spec_file),
                        pass_fds=(event_write, command_read), stdin=subprocess.DEVNULL,
                        stdout=output_write, stderr=output_write, env=env,
                        start_new_session=True,  # its own process group: stop() kills plugin children too
                    )
                    OWN_CHILDREN.track(proc.pid)
        except BaseException:
            for fd in (event_read, event_write, command_read, command_write, output_read, output_write):
                os.close(fd)
            logfile.close()
            raise
        for fd in (event_write, command_read, output_write):
            os.close(fd)
        throttle = TokenBucket(int(output_rate * THROTTLE_BURST), THROTTLE_BURST) if output_rate > 0 else None
        output = await loop.connect_read_pipe(
            lambda: _OutputProtocol(logfile, throttle), os.fdopen(output_read, "rb", buffering=0)
        )
        _, events = await loop.connect_read_pipe(
            lambda: _EventProtocol(on_event, spec.name), os.fdopen(event_read, "rb", buffering=0)
        )
        commands, _ = await loop.connect_write_pipe(
            asyncio.Protocol, os.fdopen(command_write, "wb", buffering=0)
        )
        return cls(spec.name, proc, commands, events, output, spec, containment)

    def send(self, command: Any) -> None:
        if not self._commands.is_closing():
            self._commands.write(messages.encode(command))

    async def _end(self) -> int:
        """Runs once per worker: its exit, then the end of all it left, then its output."""
        code = await (self.proc.exited() if isinstance(self.proc, Child) else self.proc.wait())
        OWN_CHILDREN.untrack(self.pid)
        self._commands.close()
        self._events.unthrottle()  # what it said before exiting (a Fatal) is read now
        try:
            await asyncio.to_thread(self._containment.end, self.name, self.pid)
        except Exception:
            log.exception("%s: ending what the worker left behind failed", self.name)
        transport, output = self._output
        output.unthrottle()
        try:
            await asyncio.wait_for(asyncio.shield(output.done), OUTPUT_DRAIN_WAIT)
        except asyncio.TimeoutError:  # something outside our reach still holds the pipe
            log.warning("%s: output pipe still open %.0f s after exit; closing it", self.name, OUTPUT_DRAIN_WAIT)
            transport.close()
        return code

    async def wait(self) -> int:
        """The exit code, once the worker and everything it started are gone."""
        return await asyncio.shield(self._ended)

    def dump_stacks(self) -> None:
        """SIGUSR1: the worker's faulthandler writes every thread's Python stack to its log,
        so a kill for a hang says where the plugin was stuck."""
        if self.proc.returncode is None:
            try:
                self.proc.send_signal(signal.SIGUSR1)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        """SIGKILL the worker's whole process group (hung plugin, watchdog, grace exceeded)."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def terminate(self) -> None:
        """SIGTERM the worker: it calls cleanup() and exits within its grace period."""
        if self.proc.returncode is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
