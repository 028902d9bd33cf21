"""Processes iochost must not leave behind: its own helpers (git, pip, the validation
probe, workers) and everything plugin code starts.

Three mechanisms, each for a case the others miss:

- **Sessions.** Every helper and worker runs in its own session, so ``kill_group`` ends it
  and whatever it started in its group.
- **Subreapers.** A worker is a child subreaper (``PR_SET_CHILD_SUBREAPER``): a plugin's
  grandchild whose parent exits, even one that started its own session, re-parents to the
  worker instead of init, so ``kill_descendants`` at the worker's exit finds all of them.
  The daemon is a subreaper too: when a worker dies without that chance (SIGKILL, the OOM
  killer, a segfault) its descendants re-parent to the daemon, and ``reap_orphans`` ends
  them: any child of the daemon that the daemon did not start itself.
- **cgroups** (``supervisor.cgroups``), where cgroup v2 is writable: one per worker, whose
  ``cgroup.kill`` ends every process in it at once.

A process running as root that deliberately escapes (ptrace, a new PID namespace, asking
init to start it) is beyond all three; a container is the boundary for that.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import os
import select
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol

PR_SET_CHILD_SUBREAPER = 36


class Process(Protocol):
    """What ``wait_exit`` and ``kill_group`` use of a process: a ``subprocess.Popen``, or a
    ``launch.launcher.Child`` forked by the launcher, which waits the same way."""

    @property
    def pid(self) -> int: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    pgid: int
    sid: int
    state: str

    @property
    def zombie(self) -> bool:
        return self.state in ("Z", "X")

    @property
    def stopped(self) -> bool:
        """SIGSTOPped or traced: alive, and answering nothing."""
        return self.state in ("T", "t")


def process_info(pid: int) -> ProcInfo | None:
    """``pid``'s entry of /proc (one read of its ``stat``); None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return ProcInfo(pid, int(fields[1]), int(fields[2]), int(fields[3]), fields[0].decode())
    except (OSError, IndexError):
        return None


def process_table() -> dict[int, ProcInfo]:
    """Every process visible in /proc, by pid."""
    table: dict[int, ProcInfo] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (info := process_info(int(entry.name))) is not None:
            table[info.pid] = info
    return table


def descendants(pid: int, table: dict[int, ProcInfo] | None = None) -> list[ProcInfo]:
    """Every process below ``pid`` in the parent tree, parents before children."""
    table = process_table() if table is None else table
    children: dict[int, list[ProcInfo]] = {}
    for info in table.values():
        children.setdefault(info.ppid, []).append(info)
    found, pending = [], list(children.get(pid, []))
    while pending:
        info = pending.pop()
        found.append(info)
        pending.extend(children.get(info.pid, []))
    return found


def set_child_subreaper() -> bool:
    """Make orphaned descendants of this process re-parent to it; False where Linux cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_group_of(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def kill_tree(root: int, *, include_root: bool, timeout: float = 5.0) -> int:
    """SIGKILL ``root``'s descendants (and ``root``) until none is left, reaping those that
    are this process's children; the number killed. Repeats, because a process may fork
    while its siblings die, and killed parents hand their children to the subreaper."""
    me, killed = os.getpid(), 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        table = process_table()
        below = descendants(root, table)
        targets = [info for info in below if not info.zombie]
        if include_root and root in table and not table[root].zombie:
            targets.insert(0, table[root])
        for info in below:
            if info.zombie and info.ppid == me:
                _reap(info.pid)
        if not targets:
            break
        for info in targets:
            _kill(info.pid)
        killed += len(targets)
        for info in targets:
            if info.ppid == me:
                _reap(info.pid)
        time.sleep(0.005)
    return killed


def kill_descendants() -> int:
    """End everything this process started, however far down (a worker's last act)."""
    return kill_tree(os.getpid(), include_root=False)


# -- the daemon's own children ------------------------------------------------------------------
class _OwnChildren:
    """The children this process started in a session of their own (helpers, workers).

    Every other child of a subreaper daemon is an orphan of a dead worker. Children in the
    daemon's own session (GitPython's git, short ``subprocess.run`` calls) are never
    orphans: a plugin's process can leave its session but never join the daemon's.
    While a spawn is in flight its pid is not known yet, so no sweep runs then; and a sweep
    whose scan of /proc overlapped the start of a spawn kills nothing it found (that scan
    may have seen the new child before ``track``).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pids: set[int] = set()
        self._in_flight = 0
        self._spawns = 0  # spawns begun so far

    @contextlib.contextmanager
    def spawning(self) -> Iterator[None]:
        with self._lock:
            self._in_flight += 1
            self._spawns += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1

    def track(self, pid: int) -> None:
        with self._lock:
            self._pids.add(pid)

    def untrack(self, pid: int) -> None:
        with self._lock:
            self._pids.discard(pid)

    def reap_orphans(self, passes: int = 20) -> int:
        """Kill and reap every child that is not ours (with its descendants); how many.
        Repeats while it finds some: a process forked during a kill re-parents to us."""
        me, session, killed = os.getpid(), os.getsid(0), 0
        for _ in range(passes):
            with self._lock:
                if self._in_flight:
                    break
                ours, spawns = set(self._pids), self._spawns
            orphans = [info for info in process_table().values()
                       if info.ppid == me and info.pid not in ours and info.sid != session]
            with self._lock:
                if self._in_flight or self._spawns != spawns:
                    break  # a child born during the scan may be among them: next sweep
            for info in orphans:
                if info.zombie:
                    _reap(info.pid)
                else:
                    killed += kill_tree(info.pid, include_root=True)
            if not orphans:
                break
        return killed


OWN_CHILDREN = _OwnChildren()


class _Errands:
    """The child sessions a request waits on (git, pip, the validation probe). Each has a
    time limit of minutes; at the daemon's shutdown they are killed at once (``end_all``),
    so a SIGTERM during an add never waits out a clone's ``--git-timeout``: the thread
    waiting on one sees it end, and its request fails (its caller has been answered
    SHUTTING_DOWN by then). One started after ``end_all`` is killed as it starts.

    An errand started inside ``owned_by(owner)`` (an add's or an upgrade's preparation, the
    owner its plugin's slot) belongs to that owner: a delete ends them with ``end_owned_by``,
    so it never waits out a hanging import or a slow clone, and the owner's errands started
    after that, until its ``owned_by`` ends, are killed as they start."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: dict[int, object | None] = {}  # process group -> its owner
        self._active: dict[object, int] = {}  # owners inside owned_by -> how many times
        self._ended_owners: set[object] = set()
        self._ended = False

    @contextlib.contextmanager
    def owned_by(self, owner: object) -> Iterator[None]:
        """Errands started in this context (its threads too: asyncio.to_thread copies it) are ``owner``'s."""
        with self._lock:
            self._active[owner] = self._active.get(owner, 0) + 1
        token = _ERRAND_OWNER.set(owner)
        try:
            yield
        finally:
            _ERRAND_OWNER.reset(token)
            with self._lock:
                self._active[owner] -= 1
                if not self._active[owner]:
                    del self._active[owner]
                    self._ended_owners.discard(owner)

    def started(self, pid: int) -> None:
        owner = _ERRAND_OWNER.get()
        with self._lock:
            self._groups[pid] = owner
            ended = self._ended or (owner is not None and owner in self._ended_owners)
        if ended:
            _kill_group_of(pid)

    def finished(self, pid: int) -> None:
        with self._lock:
            self._groups.pop(pid, None)

    def end_all(self) -> int:
        """Kill every errand's process group, and any started from now on; how many."""
        with self._lock:
            self._ended = True
            groups = list(self._groups)
        for pid in groups:
            _kill_group_of(pid)
        return len(groups)

    def end_owned_by(self, owner: object) -> int:
        """Kill ``owner``'s errands, and those it starts until its ``owned_by`` ends; how many."""
        with self._lock:
            if owner in self._active:
                self._ended_owners.add(owner)
            groups = [pid for pid, holder in self._groups.items() if holder is owner]
        for pid in groups:
            _kill_group_of(pid)
        return len(groups)


_ERRAND_OWNER: contextvars.ContextVar[object | None] = contextvars.ContextVar("iochost_errand_owner", default=None)
ERRANDS = _Errands()


def popen_session(argv: list[str], *, errand: bool = False, **kwargs: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen`` in a new session, known to the orphan sweep; end it with kill_group.
    ``errand``: a request waits on it (git, pip, a probe): ended at once at shutdown (ERRANDS)."""
    with OWN_CHILDREN.spawning():
        proc = subprocess.Popen(argv, start_new_session=True, **kwargs)
        OWN_CHILDREN.track(proc.pid)
    if errand:
        ERRANDS.started(proc.pid)
    return proc


def wait_exit(proc: Process, timeout: float | None) -> int:
    """``proc.wait(timeout)``, woken by the exit itself (a pidfd). Popen's own timed wait
    polls with sleeps that grow to 50 ms, so a 20 ms ``git clone`` used to cost 35-60 ms."""
    if (code := proc.poll()) is not None:
        return code
    try:
        pidfd = os.pidfd_open(proc.pid)
    except OSError:  # no pidfd on this kernel, or already reaped: Popen's way
        return proc.wait(timeout)
    try:
        if not select.select([pidfd], [], [], timeout)[0]:
            raise subprocess.TimeoutExpired(str(proc.pid), timeout or 0.0)
    finally:
        os.close(pidfd)
    return proc.wait()


def kill_group(proc: Process) -> None:
    """SIGKILL ``proc`` and every process it started, then wait until none of them runs."""
    _kill_group_of(proc.pid)
    proc.wait()
    OWN_CHILDREN.untrack(proc.pid)
    ERRANDS.finished(proc.pid)
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:  # the group is empty: no need to look through /proc
        return
    except PermissionError:
        pass
    deadline = time.monotonic() + 5.0
    while group_running(proc.pid) and time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.01)


def group_running(pgid: int) -> bool:
    """Whether a non-zombie process is in group `pgid` (orphaned zombies wait for init)."""
    if not Path("/proc").is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    return any(info.pgid == pgid and not info.zombie for info in process_table().values())
