"""The daemon's side of the fork server: one template, a small pool of members.

Thread-safe and blocking (the validation probe runs in a worker thread; the supervisor
calls it through ``asyncio.to_thread``). A keeper thread restarts the template when it
dies and keeps ``pool_size`` warm members (softioc imported: the next workers) and
``cold_pool_size`` cold ones (the next validation probes) ready, so neither waits for a
fork on the add's critical path; it refills the pool once the start that emptied it is
past its busy part (``REFILL_DELAY``), and reaps and replaces members that die idle.
Anything that goes wrong here is a ``LaunchError``, on which callers fall back to a plain
spawn: the fork server makes starts cheaper, never possible.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Callable, Sequence

from iochost.launch import protocol
from iochost.proctree import OWN_CHILDREN, kill_group, popen_session, process_info, set_child_subreaper

log = logging.getLogger("iochost.launch")

HELLO_TIMEOUT = 30.0  # a fork request queued behind the template's own imports waits for them
READY_TIMEOUT = 60.0  # a warm member imports softioc first (~0.2 s, more on a cold disk cache)
KEEPER_INTERVAL = 0.5  # how often the keeper looks at the template and the idle members
RESTART_BACKOFF = 1.0  # between attempts to start a template that keeps dying
# A member taken is replaced this long after the take, not at once: by then the add that
# took it has done its probe and its worker's imports (~0.1 s) and sleeps in iocInit, so
# the replacement's fork and imports (~0.2 s of CPU) do not slow that start down.
REFILL_DELAY = 0.2
START_TIMEOUT = 5.0  # a member's answer to its launch: it only has to read a datagram
STOPPED_CHECK = 0.25  # while waiting on the template or a member: how often to see whether it is stopped


class LaunchError(RuntimeError):
    """The fork server could not provide a process; the caller spawns one instead."""


class Child:
    """A launched process: the daemon's own child, since members re-parent to it at birth."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._pidfd = os.pidfd_open(pid)

    def _reap(self) -> int:
        """Once the pidfd says it ended: collect the status (retrying the microseconds in
        which a member that died at birth may still belong to its middle process)."""
        deadline = time.monotonic() + 1.0
        while self.returncode is None:
            try:
                _, status = os.waitpid(self.pid, 0)
                self.returncode = os.waitstatus_to_exitcode(status)
            except ChildProcessError:
                if time.monotonic() > deadline:
                    self.returncode = -signal.SIGKILL  # reaped elsewhere: report it as killed
                else:
                    time.sleep(0.001)
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1
        OWN_CHILDREN.untrack(self.pid)
        return self.returncode

    def poll(self) -> int | None:
        if self.returncode is None and select.select([self._pidfd], [], [], 0)[0]:
            self._reap()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Blocking, as ``subprocess.Popen.wait`` (so ``kill_group`` works on it)."""
        if self.returncode is None:
            if not select.select([self._pidfd], [], [], timeout)[0]:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0.0)
            self._reap()
        assert self.returncode is not None
        return self.returncode

    async def exited(self) -> int:
        """The exit code, awaited on the event loop without a thread."""
        if self.returncode is None:
            loop = asyncio.get_running_loop()
            ended = loop.create_future()
            loop.add_reader(self._pidfd, lambda: None if ended.done() else ended.set_result(None))
            try:
                await ended
            finally:
                loop.remove_reader(self._pidfd)
            self._reap()
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass


class Member:
    """A forked member waiting for its launch."""

    def __init__(self, child: Child, sock: socket.socket, open_fds: Sequence[int], warm: bool) -> None:
        self.child = child
        self.pid = child.pid
        self._sock = sock
        self._open = set(open_fds)
        self.warm = warm

    def free_fds(self, count: int) -> list[int]:
        """``count`` fd numbers (above stdio) that nothing in the member holds."""
        free: list[int] = []
        fd = 3
        while len(free) < count:
            if fd not in self._open:
                free.append(fd)
            fd += 1
        return free

    def start(self, target: str, args: list[str], env: dict[str, str],
              stdio: tuple[int | None, int | None, int | None], fds: dict[int, int] | None = None,
              title: str | None = None) -> Child:
        """Run the program ``target`` (a key of ``launch/targets.py``: ``protocol.WORKER``,
        ``protocol.PROBE``) with ``args`` in the member with ``env``, its stdin/stdout/stderr
        from ``stdio`` (None: /dev/null) and each ``fds`` value at its key's number; ``title``
        is its command line in ps (default: the target and its arguments)."""
        sources: list[int] = []

        def index(fd: int | None) -> int | None:
            if fd is None:
                return None
            if fd not in sources:
                sources.append(fd)
            return sources.index(fd)

        launch = {"target": target, "args": args, "env": env, "title": title or " ".join([target, *args]),
                  "stdio": [index(fd) for fd in stdio],
                  "fds": {str(number): index(fd) for number, fd in (fds or {}).items()}}
        try:
            protocol.send(self._sock, launch, sources)
            self._sock.settimeout(START_TIMEOUT)
            answer = protocol.receive(self._sock)
            if answer is None or answer[0].get("started") != self.pid:
                raise LaunchError(f"member {self.pid} ended before it started {target}")
        except (OSError, ValueError, LaunchError) as exc:  # socket.timeout: stopped, or stuck
            self.discard()
            raise exc if isinstance(exc, LaunchError) else \
                LaunchError(f"member {self.pid} did not take its launch: {exc or type(exc).__name__}") from exc
        finally:
            self._sock.close()
        return self.child

    def stopped(self) -> bool:
        """SIGSTOPped (or traced): it would take a launch and never run it."""
        return process_stopped(self.pid)

    def discard(self) -> None:
        """Let an unused member go: it exits at end-of-file, killed to be sure, then reaped."""
        self._sock.close()
        self.child.send_signal(signal.SIGKILL)
        self.child.wait()


def receive_unless_stopped(sock: socket.socket, timeout: float, pid: int,
                           what: str) -> tuple[dict[str, object], list[int]] | None:
    """``protocol.receive`` within ``timeout``, given up at once (``LaunchError``) when
    ``pid``, the process that must answer, is stopped: a SIGSTOPped template or member
    answers nothing, and an add must not wait the whole timeout for it."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise LaunchError(f"{what} did not answer within {timeout:g} s")
        sock.settimeout(min(remaining, STOPPED_CHECK))
        try:
            return protocol.receive(sock)
        except socket.timeout:
            if process_stopped(pid):
                raise LaunchError(f"{what} stopped before it answered") from None


def process_stopped(pid: int) -> bool:
    """Whether ``pid`` is stopped: it is alive to ``poll()`` and answers nothing."""
    info = process_info(pid)
    return info is not None and info.stopped


class Launcher:
    """Starts processes from the template; ``close()`` ends the template and idle members."""

    def __init__(self, env: dict[str, str], *, pool_size: int = 2, cold_pool_size: int = 1,
                 realtime: bool = False, python: str = sys.executable,
                 on_warm_member: Callable[[int], None] | None = None) -> None:
        """``on_warm_member(pid)`` runs in the keeper for each warm member before it joins
        the pool (the daemon moves it into the cgroup it will run in)."""
        self.pool_size = pool_size
        self.cold_pool_size = cold_pool_size
        self.on_warm_member = on_warm_member  # may be set after start (the daemon's containment comes later)
        self._env = env
        self._realtime = realtime
        self._python = python
        self._lock = threading.Lock()  # the template and its control socket
        self._template: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._pool: list[Member] = []
        self._pool_changed = threading.Condition()
        self._taken_at = -REFILL_DELAY  # monotonic time of the last acquire
        self._closing = threading.Event()
        self._keeper: threading.Thread | None = None
        self.template_starts = 0
        self.problem: str | None = None  # why it last failed to provide a process, until it next did (/health)

    # -- the template ----------------------------------------------------------------------
    @property
    def template_pid(self) -> int | None:
        template = self._template
        return template.pid if template is not None and template.poll() is None else None

    def _ensure_template(self) -> socket.socket:
        """The live template's control socket, starting a template if there is none. Lock held."""
        if self._template is not None and self._template.poll() is None and self._control is not None:
            if not process_stopped(self._template.pid):
                return self._control
            self._failed(f"launch template (pid {self._template.pid}) is stopped; starting a new one")
            self._stop_template()
        if self._template is not None:
            self._failed(f"launch template (pid {self._template.pid}) exited with "
                         f"{self._template.returncode}; starting a new one")
            self._stop_template()
        if self._closing.is_set():
            raise LaunchError("the launcher is closed")
        ours, theirs = protocol.socketpair()
        argv = [self._python, "-m", "iochost.launch.template", str(theirs.fileno())]
        if self._realtime:
            argv.append("--realtime")
        try:
            self._template = popen_session(argv, pass_fds=(theirs.fileno(),), env=self._env,
                                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        except OSError as exc:
            ours.close()
            raise LaunchError(f"cannot start the launch template: {exc}") from exc
        finally:
            theirs.close()
        self._control = ours
        self.template_starts += 1
        return ours

    def _failed(self, problem: str) -> None:
        """Logged and kept for /health until a process is provided again."""
        self.problem = problem
        log.warning("fork server: %s", problem)

    def _stop_template(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._template is not None:
            kill_group(self._template)
            self._template = None

    # -- members ---------------------------------------------------------------------------
    def idle_members(self) -> dict[str, int]:
        """Ready members waiting in the pool, per kind (``warm``: the next workers; ``cold``:
        the next validation probes): what the metrics show of the fork server."""
        with self._pool_changed:
            warm = sum(1 for m in self._pool if m.warm)
            return {"warm": warm, "cold": len(self._pool) - warm}

    def _fork(self, warm: bool) -> Member:
        """Ask the template for a member and wait until it is ready."""
        ours, theirs = protocol.socketpair()
        try:
            with OWN_CHILDREN.spawning():  # it re-parents to us: the orphan sweep must wait
                with self._lock:
                    control = self._ensure_template()
                    template_pid = self.template_pid or 0
                    try:
                        protocol.send(control, {"warm": warm}, [theirs.fileno()])
                    except OSError as exc:
                        raise LaunchError(f"the launch template is gone: {exc}") from exc
                theirs.close()
                hello = receive_unless_stopped(ours, HELLO_TIMEOUT, template_pid,
                                               f"the launch template (pid {template_pid})")
                if hello is None:
                    raise LaunchError("the launch template ended before the member started")
                child = Child(int(str(hello[0]["pid"])))
                OWN_CHILDREN.track(child.pid)
        except (OSError, ValueError, KeyError) as exc:
            ours.close()
            theirs.close()
            raise LaunchError(f"no member from the launch template: {exc}") from exc
        except BaseException:
            ours.close()
            theirs.close()
            raise
        try:
            ready = receive_unless_stopped(ours, READY_TIMEOUT, child.pid, f"member {child.pid}")
            if ready is None or not ready[0].get("ready"):
                raise LaunchError(f"member {child.pid} ended before it was ready (see the daemon's stderr)")
            ours.settimeout(None)
            self.problem = None
            open_fds = ready[0].get("open_fds", ())
            return Member(child, ours, open_fds if isinstance(open_fds, list) else (), warm)
        except BaseException as exc:
            ours.close()
            child.send_signal(signal.SIGKILL)
            child.wait()
            if isinstance(exc, OSError):
                raise LaunchError(f"member {child.pid} did not get ready: {exc}") from exc
            raise

    def acquire(self, warm: bool = True) -> Member:
        """A member of that kind from the pool when there is one, else a fresh fork."""
        if self._closing.is_set():
            raise LaunchError("the launcher is closed")
        with self._pool_changed:
            self._taken_at = time.monotonic()
            while (member := next((m for m in self._pool if m.warm == warm), None)) is not None:
                self._pool.remove(member)
                self._pool_changed.notify_all()  # the keeper forks a replacement, REFILL_DELAY on
                if member.child.poll() is None and not member.stopped():
                    return member
                if member.child.returncode is None:
                    self._failed(f"idle member {member.pid} is stopped; discarded")
                    member.discard()
        try:
            return self._fork(warm)
        except LaunchError as exc:
            self.problem = str(exc)
            raise

    def _wanted(self) -> bool | None:
        """The kind of member the pool is short of (warm first), None when it is full. Lock held."""
        warm = sum(1 for m in self._pool if m.warm)
        if warm < self.pool_size:
            return True
        if len(self._pool) - warm < self.cold_pool_size:
            return False
        return None

    # -- the keeper ------------------------------------------------------------------------
    def start(self) -> None:
        """Start the template now (its imports overlap the daemon's start) and the keeper.
        Members re-parent to the nearest child subreaper: that must be this process."""
        if not set_child_subreaper():
            raise LaunchError("this system cannot make the daemon a child subreaper")
        with self._lock:
            self._ensure_template()
        self._keeper = threading.Thread(target=self._keep, name="launch-keeper", daemon=True)
        self._keeper.start()

    def _keep(self) -> None:
        while not self._closing.is_set():
            try:
                with self._lock:
                    self._ensure_template()
                with self._pool_changed:
                    for member in [m for m in self._pool if m.child.poll() is not None]:
                        log.warning("idle %s member %d exited with %s", "warm" if member.warm else "cold",
                                    member.pid, member.child.returncode)
                        self._pool.remove(member)
                    wanted = self._wanted()
                    if wanted is None:
                        self._pool_changed.wait(KEEPER_INTERVAL)
                        continue
                    busy = self._taken_at + REFILL_DELAY - time.monotonic()
                    if busy > 0:  # a start is in its busy part: while adds keep coming, they fork their own
                        self._pool_changed.wait(busy)
                        continue
                member = self._fork(warm=wanted)
                if wanted and self.on_warm_member is not None:
                    self.on_warm_member(member.pid)
                with self._pool_changed:
                    if self._closing.is_set():
                        member.discard()
                        return
                    self._pool.append(member)
                    self._pool_changed.notify_all()
            except LaunchError as exc:
                if not self._closing.is_set():
                    self.problem = str(exc)
                    log.warning("fork server: %s; retrying in %.0f s", exc, RESTART_BACKOFF)
                    self._closing.wait(RESTART_BACKOFF)
            except Exception:  # the keeper must keep going
                log.exception("fork server keeper")
                self._closing.wait(RESTART_BACKOFF)

    def close(self) -> None:
        """End the keeper, the idle members and the template (launched children are not ours to end)."""
        self._closing.set()
        with self._pool_changed:
            self._pool_changed.notify_all()
        if self._keeper is not None:
            self._keeper.join(timeout=READY_TIMEOUT)
        with self._pool_changed:
            pool, self._pool = self._pool, []
        for member in pool:
            member.discard()
        with self._lock:
            self._stop_template()


def start_fork_server(env: dict[str, str], *, pool_size: int, realtime: bool) -> Launcher | None:
    """A started launcher, or None (logged) where the fork server cannot work: then every
    worker and probe is spawned. ``iochost serve`` calls it first thing, so the template's
    imports run while the daemon imports its web stack."""
    launcher = Launcher(env, pool_size=pool_size, realtime=realtime)
    try:
        launcher.start()
    except LaunchError as exc:
        log.warning("fork server unavailable (%s); workers and probes are spawned", exc)
        launcher.close()
        return None
    return launcher
