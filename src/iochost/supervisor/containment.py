"""Confining each worker's process tree, and ending all of it when the worker ends.

Where cgroup v2 is mounted and writable, every worker runs in a cgroup of its own under
``<daemon's cgroup>/iochost-<daemon pid>/``: ``worker-<pid>`` for a worker forked from a
warm member (the member was moved there while it waited in the pool: moving a process
costs ~10-15 ms, the kernel waits for an RCU grace period, and that would otherwise be
on every start's critical path), ``<plugin>`` for a spawned one (it joins first thing).
When the worker exits, by any path,
``cgroup.kill`` ends every process that was ever started in it, wherever it re-parented
and whatever session it made. Where it is not (most containers mount cgroups read-only),
the subreaper mechanism of ``iochost.proctree`` does the same job: the worker kills its
descendants on its way out, and the daemon kills the orphans of a worker that could not.
Both run in either mode; the cgroup only makes the end certain and instant.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

from iochost.proctree import OWN_CHILDREN, set_child_subreaper

log = logging.getLogger("iochost.supervisor")

EMPTY_WAIT = 2.0  # seconds for a killed cgroup to report no process left


def _own_cgroup_dir() -> Path | None:
    """The directory of this process's cgroup v2, or None without a cgroup v2 mount."""
    try:
        own = next(line[3:].strip() for line in Path("/proc/self/cgroup").read_text().splitlines()
                   if line.startswith("0::"))
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except (OSError, StopIteration):
        return None
    for line in mounts:
        fields, _, tail = line.partition(" - ")
        parts = fields.split()
        if len(parts) < 5 or not tail.startswith("cgroup2 "):
            continue
        root, mount_point = parts[3], parts[4]
        if own == root or own.startswith(root.rstrip("/") + "/"):
            return Path(mount_point) / own[len(root):].lstrip("/")
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class CgroupTree:
    """``iochost-<pid>/`` under the daemon's cgroup, one child cgroup per worker."""

    def __init__(self, base: Path) -> None:
        self.base = base

    @classmethod
    def create(cls) -> "CgroupTree | None":
        """The tree, or None when cgroup v2 is absent, read-only, or lacks ``cgroup.kill``."""
        parent = _own_cgroup_dir()
        if parent is None or not (parent / "cgroup.procs").exists():
            return None
        for stale in parent.glob("iochost-*"):  # left by a daemon that was killed
            pid = stale.name.removeprefix("iochost-")
            if pid.isdigit() and not _pid_alive(int(pid)):
                cls(stale).remove_all()
        base = parent / f"iochost-{os.getpid()}"
        try:
            base.mkdir(exist_ok=True)
        except OSError as exc:
            log.info("cgroup v2 at %s is not writable (%s); containing workers without cgroups", parent, exc)
            return None
        if not (base / "cgroup.kill").exists():
            log.info("cgroup v2 has no cgroup.kill (Linux < 5.14); containing workers without cgroups")
            base.rmdir()
            return None
        return cls(base)

    def prepare(self, name: str) -> Path:
        """An empty cgroup for the next worker of ``name`` (a leftover one is ended first)."""
        path = self.base / name
        if path.exists():
            self.end(path)
        path.mkdir()
        return path

    def place(self, pid: int) -> Path:
        """Move the (idle, pooled) process ``pid`` into a new cgroup ``worker-<pid>``."""
        path = self.base / f"worker-{pid}"
        path.mkdir(exist_ok=True)
        (path / "cgroup.procs").write_text(str(pid))
        return path

    def placed(self, pid: int) -> Path | None:
        """``worker-<pid>`` if ``pid`` is in it."""
        path = self.base / f"worker-{pid}"
        try:
            return path if str(pid) in (path / "cgroup.procs").read_text().split() else None
        except OSError:
            return None

    def prune_placed(self, keep: set[Path]) -> None:
        """Remove the ``worker-<pid>`` cgroups of pooled members that died idle."""
        for path in self.base.glob("worker-*"):
            pid = path.name.removeprefix("worker-")
            if path not in keep and pid.isdigit() and not _pid_alive(int(pid)):
                self.end(path)

    def end(self, path: Path) -> None:
        """Kill every process in a worker's cgroup, then remove the cgroup."""
        self._end(path)

    def _end(self, path: Path) -> None:
        try:
            children = [p for p in path.iterdir() if p.is_dir()]
        except OSError:  # not there (any more)
            return
        for child in children:
            self._end(child)  # a plugin may have made cgroups of its own below
        try:
            (path / "cgroup.kill").write_text("1")
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("cannot kill cgroup %s: %s", path, exc)
        deadline = time.monotonic() + EMPTY_WAIT
        while time.monotonic() < deadline:
            try:
                if "populated 0" in (path / "cgroup.events").read_text():
                    break
            except OSError:  # ENOENT, ENODEV: removed meanwhile
                return
            time.sleep(0.01)
        try:
            path.rmdir()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot remove cgroup %s: %s", path, exc)

    def remove_all(self) -> None:
        if self.base.is_dir():
            self._end(self.base)


class Containment:
    """How the supervisor confines workers: a cgroup each where it can, always subreaping."""

    def __init__(self, use_cgroups: bool) -> None:
        self.subreaper = set_child_subreaper()
        self.cgroups = CgroupTree.create() if use_cgroups else None
        self._in_use: dict[str, Path] = {}  # plugin name -> its worker's cgroup
        log.info("worker containment: %s", self.mode)

    @property
    def mode(self) -> str:
        if self.cgroups is not None:
            return f"cgroup v2 ({self.cgroups.base}) and subreaper"
        return "subreaper and process groups" if self.subreaper else "process groups only"

    def place_member(self, pid: int) -> None:
        """Give a warm member, while it waits in the pool, the cgroup it will run in as a
        worker (called from the launcher's keeper thread); without cgroups, nothing."""
        if self.cgroups is None:
            return
        try:
            self.cgroups.place(pid)
        except OSError as exc:
            log.debug("warm member %d: no cgroup yet (%s); it joins one when it starts", pid, exc)

    def adopt(self, name: str, pid: int) -> bool:
        """The worker of ``name`` is the placed member ``pid``: its cgroup is that one."""
        path = self.cgroups.placed(pid) if self.cgroups is not None else None
        if path is not None:
            self._in_use[name] = path
        return path is not None

    def prepare(self, name: str) -> str | None:
        """The cgroup the next worker of ``name`` joins first thing, or None."""
        if self.cgroups is None:
            return None
        try:
            path = self.cgroups.prepare(name)
        except OSError as exc:
            log.warning("%s: no cgroup (%s); contained by subreaper only", name, exc)
            return None
        self._in_use[name] = path
        return str(path)

    def end(self, name: str, pgid: int) -> None:
        """After a worker exited: end its group, its cgroup, and any orphan it left us."""
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        path = self._in_use.get(name)
        if self.cgroups is not None and path is not None:
            self.cgroups.end(path)  # still in use meanwhile: a sweep in another thread leaves it alone
        self._in_use.pop(name, None)
        self.sweep()

    def sweep(self) -> int:
        """Orphans of dead workers re-parented to the daemon: killed and reaped; the
        cgroups of pooled members that died idle: removed."""
        if self.cgroups is not None:
            self.cgroups.prune_placed(set(self._in_use.values()))
        killed = OWN_CHILDREN.reap_orphans() if self.subreaper else 0
        if killed:
            log.warning("killed %d process(es) left behind by a plugin", killed)
        return killed

    def close(self) -> None:
        if self.cgroups is not None:
            self.cgroups.remove_all()
        self.sweep()
