"""``iochost healthcheck`` (the image's HEALTHCHECK) asks the port the daemon really uses.

The bug it replaces: the probe read ``IOCHOST_PORT`` and failed a daemon given ``--port``.
Here the probe's own environment names a wrong port on purpose; it must read the daemon's
command line and environment instead, as ``serve`` resolved them (a flag over a variable).
The finding of "the one daemon here" is tested on a /proc tree made for it, since other
daemons run on this machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemon_harness import Daemon, worker_pids
from iochost.healthcheck import daemon_url, find_daemons, serve_arguments


def healthcheck(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "IOCHOST_PORT": "1"}  # what the old probe read: wrong on purpose
    return subprocess.run([sys.executable, "-m", "iochost", "healthcheck", *args], capture_output=True, text=True,
                          env=env, timeout=60)


def test_a_daemon_given_port_by_flag_is_found_alive_there_and_not_once_stopped(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path / "data")
    try:
        daemon.start()
        assert daemon.proc is not None
        answer = healthcheck("--pid", str(daemon.proc.pid))
        assert answer.returncode == 0, answer.stderr
        assert answer.stdout.strip() == f"alive: http://127.0.0.1:{daemon.port}/api/v1/health/live"
        pid = daemon.proc.pid
        assert daemon.terminate() == 0
        gone = healthcheck("--pid", str(pid))
        assert gone.returncode == 1 and gone.stderr.startswith("iochost healthcheck: "), gone.stderr
    finally:
        daemon.cleanup()
        assert worker_pids(daemon.data_dir) == []


def fake_process(proc: Path, pid: int, argv: list[str], environ: dict[str, str]) -> None:
    (proc / str(pid)).mkdir(parents=True)
    (proc / str(pid) / "cmdline").write_bytes(b"".join(word.encode() + b"\0" for word in argv))
    (proc / str(pid) / "environ").write_bytes(b"".join(f"{k}={v}".encode() + b"\0" for k, v in environ.items()))


@pytest.mark.parametrize(("argv", "environ", "url"), [
    (["/usr/local/bin/python", "/usr/local/bin/iochost", "serve"], {"IOCHOST_PORT": "9123"},
     "http://127.0.0.1:9123/api/v1/health/live"),
    (["python3", "-m", "iochost", "serve", "--port", "9555"], {"IOCHOST_PORT": "9123"},  # the flag wins
     "http://127.0.0.1:9555/api/v1/health/live"),
    (["iochost", "serve", "--host", "127.0.0.5", "--port=9600"], {}, "http://127.0.0.5:9600/api/v1/health/live"),
    (["iochost", "serve"], {}, "http://127.0.0.1:8080/api/v1/health/live"),
])
def test_the_address_is_resolved_as_serve_resolved_it(tmp_path: Path, argv: list[str], environ: dict[str, str],
                                                      url: str) -> None:
    fake_process(tmp_path, 4242, argv, {**environ, "IOCHOST_DATA_DIR": str(tmp_path / "data")})
    assert daemon_url(4242, proc=tmp_path) == url


def test_the_one_daemon_is_found_and_not_its_tini(tmp_path: Path) -> None:
    fake_process(tmp_path, 1, ["/usr/bin/tini", "--", "iochost", "serve"], {})
    fake_process(tmp_path, 7, ["/usr/local/bin/python", "/usr/local/bin/iochost", "serve", "--port", "8080"], {})
    fake_process(tmp_path, 9, ["/usr/local/bin/python", "-m", "iochost.worker", "spec.json"], {})
    fake_process(tmp_path, 11, ["python", "-m", "iochost", "run", "plugin"], {})
    (tmp_path / "self").mkdir()
    assert find_daemons(tmp_path) == [7]


@pytest.mark.parametrize(("argv", "arguments"), [
    (["python", "-X", "dev", "-m", "iochost", "serve", "--port", "1"], ["--port", "1"]),
    (["python", "-c", "import iochost", "iochost", "serve"], None),
    (["python", "-m", "pytest", "iochost", "serve"], None),
    ([], None),
])
def test_what_counts_as_iochost_serve(argv: list[str], arguments: list[str] | None) -> None:
    assert serve_arguments(argv) == arguments
