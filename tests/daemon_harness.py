"""Run the real ``iochost serve`` as a subprocess, talk to it over HTTP, and make sure it
and every worker it started are gone afterwards, whatever the test did."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx

from conftest import (
    DAEMON_CA_PORTS,
    PVA_BROADCAST_PORT,
    claim_ports,
    daemon_environ,
    free_port,
    free_port_block,
    release_ports,
    wait_for,
)
from iochost.discovery.holders import port_taken


def live_processes() -> dict[int, tuple[int, bytes]]:
    """Every live (not zombie) process of the machine: pid -> (parent pid, command line with
    NUL-separated arguments). Tests filter it down to the processes they started."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if fields[0] != "Z":
            found[int(entry.name)] = (int(fields[1]), cmdline)
    return found


def worker_pids(data_dir: Path, name: str | None = None) -> list[int]:
    """Live worker processes of the daemon using ``data_dir`` (their spec file lives there);
    with ``name``, only that plugin's (its spec, ``run/NAME.json``, is on the command line)."""
    marker = str(data_dir / "run" / (f"{name}.json" if name else "")).encode()
    return [pid for pid, (_, cmdline) in live_processes().items()
            if b"iochost.worker" in cmdline and marker in cmdline]


# Written on their own schedule by their own writers (the daemon's log and display files,
# the workers' autosave): not what a request leaves behind.
ASYNC_OUTPUTS = ("logs", "displays", "autosave")


# The daemon's own status IOC (plugin "iochost"): its spec file and worker come and go on their
# own schedule too (started after the restore, retried on a full disk).
STATUS_IOC_SPEC = Path("run") / "iochost.json"


def snapshot(daemon: "Daemon") -> tuple[list[str], str | None, list[int]]:
    """Every path in the data dir (but the log and display files and the status IOC's spec),
    the registry's text and the plugins' worker processes: equal before and after a request
    that must leave nothing."""
    data = daemon.data_dir
    files = sorted(str(p.relative_to(data)) for p in data.rglob("*")
                   if p.relative_to(data).parts[0] not in ASYNC_OUTPUTS and p.relative_to(data) != STATUS_IOC_SPEC)
    registry = data / "registry.json"
    marker, status_ioc = str(data / "run").encode(), str(data / STATUS_IOC_SPEC).encode()
    workers = sorted(pid for pid, (_, cmdline) in live_processes().items()
                     if b"iochost.worker" in cmdline and marker in cmdline and status_ioc not in cmdline)
    return files, registry.read_text() if registry.exists() else None, workers


def bearer(token: str) -> dict[str, str]:
    """The Authorization header of an API request made with ``token``."""
    return {"Authorization": f"Bearer {token}"}


WORKER_PORTS = 120  # a daemon's --worker-ports and --worker-pva-ports, one block


class Daemon:
    def __init__(self, data_dir: Path, *args: str, env: dict[str, str] | None = None,
                 local_sources: bool = True, nofile: int | None = None, python: str = sys.executable) -> None:
        """``nofile``: the daemon's open-file limit (soft RLIMIT_NOFILE), else this process's;
        ``python``: the interpreter whose iochost runs (another venv's: an installed wheel)."""
        self.data_dir = data_dir
        self.python = python
        self.nofile = nofile
        self.port = free_port()
        self.args = list(args)
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-daemon.log"
        self.ca_port: int | None = None  # chosen at each start()
        low, high = self.worker_ports = free_port_block(WORKER_PORTS)
        self._ports_claimed = True  # until cleanup(); start() claims them again after it
        middle = (low + high) // 2
        self.base_args = [
            "--port", str(self.port), "--data-dir", str(data_dir), "--prefix", "IOCHT",
            "--epics-host", "127.0.0.1", "--pva-port", str(PVA_BROADCAST_PORT),
            "--ca-beacon-port", os.environ["EPICS_CA_REPEATER_PORT"],
            "--worker-ports", f"{low}-{middle}", "--worker-pva-ports", f"{middle + 1}-{high}",
            "--allow-local-sources", "--log-format", "json",
            "--grace-period", "5",
        ]
        if not local_sources:  # the production default: no local_path, no file:// URLs
            self.base_args.remove("--allow-local-sources")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def choose_ca_port(self) -> int:
        """The ``--ca-port`` the test gave, else the first of DAEMON_CA_PORTS no daemon holds:
        every client of the suite searches them all, and a port never has two servers."""
        if "--ca-port" in self.args:
            return int(self.args[self.args.index("--ca-port") + 1])
        for port in DAEMON_CA_PORTS:
            if not port_taken("127.0.0.1", port):
                return port
        raise AssertionError(f"CA search ports {DAEMON_CA_PORTS} are all taken: one more daemon at "
                             "once needs a --ca-port of its own (or conftest one more port)")

    def start(self, timeout: float = 60.0) -> "Daemon":
        if not self._ports_claimed:
            assert claim_ports(self.worker_ports[0], WORKER_PORTS), f"worker ports {self.worker_ports} taken meanwhile"
            self._ports_claimed = True
        self.ca_port = self.choose_ca_port()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [self.python, "-m", "iochost", "serve", *self.base_args, "--ca-port", str(self.ca_port),
                 *self.args],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env=daemon_environ(**self.env), preexec_fn=self._limits if self.nofile is not None else None,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"iochost serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/api/v1/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"iochost serve did not answer within {timeout} s:\n{self.log()}")

    def _limits(self) -> None:
        """In the child before exec: the open-file limit the test asked for."""
        assert self.nofile is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    @contextlib.contextmanager
    def serving(self) -> Iterator["Daemon"]:
        """Start; at the end stop it as an operator would (SIGTERM: exit 0, no worker
        left), and whatever happened, kill anything still running."""
        try:
            yield self.start()
            assert self.terminate() == 0, self.log()[-2000:]
            assert worker_pids(self.data_dir) == [], "workers outlived the daemon's SIGTERM"
        finally:
            self.cleanup()

    def client(self, timeout: float = 90.0, token: str | None = None) -> httpx.Client:
        """An API client, sending ``token`` as its bearer token when given."""
        return httpx.Client(base_url=self.url + "/api/v1", timeout=timeout,
                            headers=bearer(token) if token is not None else None)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def terminate(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def cleanup(self) -> None:
        """Kill the daemon's process group and every worker it left, by pid."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)
        for pid in worker_pids(self.data_dir):
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        wait_until(lambda: not worker_pids(self.data_dir), timeout=10, what="killed workers to go")
        if self._ports_claimed:  # nothing serves on them any more: other test processes may take them
            release_ports(self.worker_ports[0], WORKER_PORTS)
            self._ports_claimed = False


def wait_until(predicate: Any, timeout: float = 30.0, interval: float = 0.1, what: str = "") -> Any:
    """``wait_for`` for HTTP-only checks: plain sleeps, a longer default timeout."""
    return wait_for(predicate, timeout, interval, what, sleep=time.sleep)


def add(api: httpx.Client, name: str, repo: Any, **fields: Any) -> dict[str, Any]:
    """POST a git repository as plugin ``name``; the add must succeed."""
    response = api.post("/plugins", json={"name": name, "git_url": repo.url, **fields})
    assert response.status_code == 201, response.text
    return response.json()


def delete(api: httpx.Client, name: str) -> None:
    response = api.delete(f"/plugins/{name}")
    assert response.status_code == 200, response.text


class EventStream:
    """Every event of ``GET /api/v1/events`` (or another SSE ``path``) from entering the block
    until leaving it: ``events`` the data of each, ``named`` each with its ``event:`` name."""

    def __init__(self, daemon: Daemon, path: str = "/api/v1/events", headers: dict[str, str] | None = None) -> None:
        self.url = daemon.url + path
        self.headers = headers
        self.events: list[dict[str, Any]] = []
        self.named: list[tuple[str, dict[str, Any]]] = []
        self._ready = threading.Event()
        self._arrived = threading.Condition()  # notified at each event
        self._stop = threading.Event()
        self._response: httpx.Response | None = None
        self.content_type: str | None = None  # of the answer, once it came
        self._thread = threading.Thread(target=self._listen, name="sse-listener", daemon=True)

    def __enter__(self) -> "EventStream":
        """Returns once the opening comment arrived. The server subscribes in the event-loop
        turn right after writing it (no real await in between), before it reads anything
        this client sends next: a request made from here on has its events on the stream."""
        self._thread.start()
        assert self._ready.wait(10), "GET /events sent nothing within 10 s"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._response is not None:  # shut the socket down: that ends the listener's blocked read
            stream = self._response.extensions.get("network_stream")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self._thread.join(5)
        assert not self._thread.is_alive(), "the /events listener did not stop"

    def _listen(self) -> None:
        try:
            with httpx.stream("GET", self.url, headers=self.headers, timeout=httpx.Timeout(10, read=60)) as response:
                self._response = response
                self.content_type = response.headers.get("content-type")
                name = "message"  # SSE's name of an event that gives none
                for line in response.iter_lines():
                    self._ready.set()
                    if line.startswith("event: "):
                        name = line[7:]
                    if line.startswith("data: "):
                        with self._arrived:
                            self.events.append(json.loads(line[6:]))
                            self.named.append((name, self.events[-1]))
                            self._arrived.notify_all()
                        name = "message"
                    if self._stop.is_set():
                        return
        except Exception:  # closing the stream from __exit__ ends it this way
            if not self._stop.is_set():
                raise

    def transitions(self, name: str) -> list[dict[str, Any]]:
        return [e["data"] for e in list(self.events) if e["plugin"] == name and e["type"] == "transition"]

    def states(self, name: str, until: str = "deleted", timeout: float = 5.0) -> list[str]:
        """The states published for ``name``, once ``until`` is among them or ``timeout`` passed."""
        with self._arrived:
            self._arrived.wait_for(lambda: until in [t["to_state"] for t in self.transitions(name)], timeout)
        return [t["to_state"] for t in self.transitions(name)]


def metric_by_label(daemon: Daemon, family: str, label: str) -> dict[str, float]:
    """One gauge family of the daemon's ``/metrics`` (no token) as {its ``label``: value}."""
    from prometheus_client.parser import text_string_to_metric_families

    response = httpx.get(daemon.url + "/metrics", timeout=10)
    assert response.status_code == 200, response.text
    for found in text_string_to_metric_families(response.text):
        if found.name == family:
            return {sample.labels[label]: sample.value for sample in found.samples}
    raise AssertionError(f"no {family} in /metrics")
