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

ROOT = Path(__file__).resolve().parent.parent
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


@contextlib.contextmanager
def bench_daemon(*extra: str) -> Iterator[BenchDaemon]:
    """A running daemon; SIGTERM and cleanup at the end."""
    root = Path(tempfile.mkdtemp(prefix="iochost-bench-"))
    port, low, ca_port = free_port(), free_port(), free_port()
    env = {**os.environ, "EPICS_CA_AUTO_ADDR_LIST": "NO", "EPICS_PVA_AUTO_ADDR_LIST": "NO",
           "EPICS_CA_ADDR_LIST": "127.0.0.1", "EPICS_PVA_ADDR_LIST": "127.0.0.1"}
    daemon = subprocess.Popen(
        [sys.executable, "-m", "iochost", "serve", "--port", str(port), "--data-dir", str(root / "data"),
         "--ca-port", str(ca_port), "--pva-port", str(free_port()), "--ca-beacon-port", str(free_port()),
         "--worker-ports", f"{low}-{min(low + 200, 65000)}", "--allow-local-sources", "--log-level", "warning",
         *extra],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent)
    try:
        url = f"http://127.0.0.1:{port}/api/v1"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                if time.monotonic() > deadline or daemon.poll() is not None:
                    raise
            time.sleep(0.1)
        yield BenchDaemon(daemon, url, root, ca_port)
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
        shutil.rmtree(root, ignore_errors=True)
