"""What the benchmarks share: a real ``iochost serve`` on loopback with free ports and a
temp data dir, git repositories to add by ``file://`` URL, and /proc readings."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx

from iochost.discovery.ports import free_port_block

ROOT = Path(__file__).resolve().parent.parent
WORKER_PORTS = 201  # one CA port per worker: room for the 100-plugin figure and its restarts
GIT_ENV = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@x.invalid",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "b@x.invalid"}


def _die_with_parent() -> None:
    """In the daemon before exec: SIGTERM it if the benchmark dies, however it dies."""
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status_kb(pid: int, field: str) -> int:
    """One ``kB`` line of /proc/PID/status (VmRSS, VmLck, ...)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def pss_kb(pid: int) -> int:
    """Proportional set size: shared pages (libraries, fork-shared heap) split among their users."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise RuntimeError(f"no Pss for {pid}")


def process_tree(root_pid: int) -> list[int]:
    """``root_pid`` and every live descendant, from one pass over /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def tree_cpu_seconds(root_pid: int) -> dict[int, float]:
    """CPU seconds so far of every process in the tree, by pid (a vanished one is skipped)."""
    seconds = {}
    for pid in process_tree(root_pid):
        with contextlib.suppress(OSError):
            seconds[pid] = cpu_seconds(pid)
    return seconds


def git_repo(path: Path, files: dict[str, str] | None = None, copy_from: Path | None = None) -> str:
    """A committed repository at ``path``; its ``file://`` URL."""
    if copy_from is not None:
        shutil.copytree(copy_from, path)
    path.mkdir(parents=True, exist_ok=True)
    for name, text in (files or {}).items():
        (path / name).write_text(textwrap.dedent(text))
    env = {**os.environ, **GIT_ENV}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "bench"]):
        subprocess.run(["git", "-C", str(path), *args], check=True, env=env)
    return path.as_uri()


@dataclass(frozen=True)
class DaemonPorts:
    """Every port one daemon binds; kept across a restart so its registry's ports still fit."""

    api: int
    ca: int
    pva: int
    beacon: int
    worker_low: int

    @classmethod
    def pick(cls) -> "DaemonPorts":
        # worker ports below the ephemeral range: the bench's own connections cannot take them
        return cls(free_port(), free_port(), free_port(), free_port(), free_port_block(WORKER_PORTS)[0])


@dataclass
class BenchDaemon:
    proc: subprocess.Popen[bytes]
    url: str  # the API base, .../api/v1
    root: Path  # scratch dir; the daemon's data dir is root/data
    ca_port: int  # where CA clients search

    def ca_env(self) -> dict[str, str]:
        """Environment of a CA client that finds this daemon's PVs."""
        return {**os.environ, "EPICS_CA_ADDR_LIST": "127.0.0.1", "EPICS_CA_AUTO_ADDR_LIST": "NO",
                "EPICS_CA_SERVER_PORT": str(self.ca_port)}


def start_daemon(root: Path, ports: DaemonPorts, *extra: str) -> subprocess.Popen[bytes]:
    """``iochost serve`` on loopback with data dir root/data; returns at once (not yet answering).

    Call from the main thread: PR_SET_PDEATHSIG fires when the *thread* that forked exits.
    """
    # Without PYTHONDONTWRITEBYTECODE (set in some sandboxes and CI images): an editable
    # checkout then gets its bytecode cached on the first start, as an installed package has
    # it from pip, instead of compiling ~10,000 lines on every start (~0.1-0.15 s).
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
           "EPICS_CA_AUTO_ADDR_LIST": "NO", "EPICS_PVA_AUTO_ADDR_LIST": "NO",
           "EPICS_CA_ADDR_LIST": "127.0.0.1", "EPICS_PVA_ADDR_LIST": "127.0.0.1"}
    log = open(root / "daemon.log", "ab")  # the child holds it; closed below
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "iochost", "serve", "--port", str(ports.api), "--data-dir", str(root / "data"),
             "--ca-port", str(ports.ca), "--pva-port", str(ports.pva), "--ca-beacon-port", str(ports.beacon),
             "--worker-ports", f"{ports.worker_low}-{ports.worker_low + WORKER_PORTS - 1}",
             "--allow-local-sources", "--log-level", "warning", *extra],
            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=log,
            preexec_fn=_die_with_parent)
    finally:
        log.close()


def wait_healthy(proc: subprocess.Popen[bytes], url: str, timeout: float = 60) -> None:
    """Until GET url/health answers 200; raises if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"daemon at {url} did not answer /health (exit code {proc.poll()})")
        time.sleep(0.05)


def _start_time(pid: int) -> str | None:
    """A process's start time (clock ticks since boot): tells a pid from its reuse."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """SIGTERM, then SIGKILL the process group; and wait until every process that was in its
    tree has gone (SIGKILL past 10 s), so nothing still holds a port the next start binds."""
    tree = [(pid, _start_time(pid)) for pid in process_tree(proc.pid)[1:]] if proc.poll() is None else []
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while tree:
        tree = [(pid, started) for pid, started in tree if started is not None and _start_time(pid) == started]
        if tree and time.monotonic() > deadline:
            for pid, _ in tree:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


@contextlib.contextmanager
def bench_daemon(*extra: str) -> Iterator[BenchDaemon]:
    """A running daemon; SIGTERM and cleanup at the end."""
    root = Path(tempfile.mkdtemp(prefix="iochost-bench-"))
    ports = DaemonPorts.pick()
    daemon = start_daemon(root, ports, *extra)
    try:
        url = f"http://127.0.0.1:{ports.api}/api/v1"
        wait_healthy(daemon, url)
        yield BenchDaemon(daemon, url, root, ports.ca)
    finally:
        stop_process(daemon)
        shutil.rmtree(root, ignore_errors=True)
