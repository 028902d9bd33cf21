"""The API's sockets and what the daemon needs to start processes, under hostile or broken
conditions (issue 29, items 9 and 11): idle and slow-header connections are closed, a
connection cap keeps files for the workers, a spawn that fails for want of files is
retried, every error answer (uvicorn's own, a request cut by SIGTERM) is the JSON body,
a stopped fork server never fails a valid plugin, and worker specs are private.
Real daemon, real sockets, real workers."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import threading
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from daemon_harness import Daemon, add, live_processes, wait_until, worker_pids
from gitrepos import plugin_repo
from sample_plugins import SLOW_JOB, SLOW_JOB_CONFIG, TICKER, TICKER_CONFIG
from iochost.errors import ErrorCode
from iochost.settings import FD_RESERVE_MIN, connection_cap_for

CLOSE_WAIT = 30.0  # generous: the daemon closes after --http-timeout 2 s; the machine is shared


def closed_by_server(sock: socket.socket, timeout: float = CLOSE_WAIT) -> bool:
    """Read until the daemon closes (end-of-file or reset): True; still open at ``timeout``: False."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def connect(daemon: Daemon, count: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", daemon.port), timeout=10) for _ in range(count)]


def close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()


def raw_response(daemon: Daemon, request: bytes) -> tuple[int, bytes]:
    """Send ``request`` as is; the status and body of the answer, read to the close."""
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=CLOSE_WAIT) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.fixture
def short_timeout_daemon(tmp_path: Path) -> Iterator[Daemon]:
    with Daemon(tmp_path / "data", "--http-timeout", "2").serving() as daemon:
        yield daemon


def test_idle_and_slow_header_connections_are_closed_and_a_request_in_progress_is_not(
        short_timeout_daemon: Daemon) -> None:
    daemon = short_timeout_daemon
    silent = connect(daemon, 5)
    partial = connect(daemon, 5)
    for sock in partial:
        sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")  # headers never finished
    kept_alive = connect(daemon, 5)
    for sock in kept_alive:  # one whole request, then an unfinished second one
        sock.sendall(b"GET /api/v1/health/live HTTP/1.1\r\nHost: x\r\n\r\nGET /api/v1/health HTTP/1.1\r\nHost")
    streaming = connect(daemon, 1)[0]  # a response in progress (the event stream) outlives the timeout
    streaming.sendall(b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        for kind, socks in (("silent", silent), ("unfinished headers", partial), ("keep-alive", kept_alive)):
            still_open = [sock.getsockname() for sock in socks if not closed_by_server(sock)]
            assert still_open == [], f"{kind} connections still open after {CLOSE_WAIT} s: {still_open}"
        streaming.setblocking(False)
        try:
            assert streaming.recv(65536) != b"", "the event stream was closed with the idle connections"
        except BlockingIOError:
            pass  # open, nothing to read right now
        assert httpx.get(daemon.url + "/api/v1/health", timeout=10).status_code == 200
    finally:
        close_all(silent + partial + kept_alive + [streaming])


def test_an_unparsable_request_is_answered_in_the_json_error_shape(short_timeout_daemon: Daemon) -> None:
    status, body = raw_response(short_timeout_daemon, b"NOT HTTP AT ALL\r\n\r\n")
    assert status == ErrorCode.INVALID_REQUEST.http_status
    error = json.loads(body)
    assert error["code"] == "INVALID_REQUEST" and "invalid HTTP request" in error["message"], error


def test_the_derived_connection_cap_leaves_room_for_the_workers() -> None:
    assert connection_cap_for(1024) == 1024 - FD_RESERVE_MIN
    assert connection_cap_for(1 << 20) == (1 << 20) - (1 << 18)  # a quarter of a large limit
    assert connection_cap_for(100) == 16  # never none at all


NOFILE = 400  # the daemon's open-file limit in the tests below; they hold more connections than that
FLOOD = 600


def _one_worker(daemon: Daemon) -> int:
    pids = worker_pids(daemon.data_dir, "tick")
    assert len(pids) == 1, pids
    return pids[0]


def test_a_connection_flood_cannot_keep_a_crashed_worker_down(tmp_path: Path) -> None:
    """Derived cap (NOFILE - 256): the connections over it are closed at once, so the daemon
    keeps the files a respawn needs while the flood lasts."""
    daemon = Daemon(tmp_path / "data", "--http-timeout", "120", "--backoff-initial", "0.5", nofile=NOFILE)
    repo = plugin_repo(tmp_path, "tick", TICKER, TICKER_CONFIG)
    with daemon.serving(), daemon.client() as api:
        add(api, "tick", repo)
        first = _one_worker(daemon)
        flood = connect(daemon, FLOOD)
        try:
            refused = wait_until(lambda: sum(closed_by_server(sock, 0.05) for sock in flood) >= FLOOD - NOFILE,
                                 timeout=60, what="the connections over the cap to be closed")
            assert refused
            os.killpg(first, signal.SIGKILL)
            second = wait_until(lambda: [pid for pid in worker_pids(daemon.data_dir, "tick") if pid != first],
                                timeout=60, what="the crashed worker to be respawned during the flood")
        finally:
            close_all(flood)
        record = wait_until(lambda: (r := api.get("/plugins/tick").json())["state"] == "running" and r,
                            timeout=60, what="tick running again")
        assert record["pid"] == second[0]


def test_a_spawn_that_fails_for_want_of_files_is_retried_until_it_starts(tmp_path: Path) -> None:
    """No cap (above the limit): the flood takes every file; the respawn fails with EMFILE,
    is retried with backoff, and the plugin runs again by itself once the files are back."""
    daemon = Daemon(tmp_path / "data", "--http-timeout", "120", "--http-max-connections", "100000",
                    "--backoff-initial", "0.5", "--backoff-max", "2", nofile=NOFILE)
    repo = plugin_repo(tmp_path, "tick", TICKER, TICKER_CONFIG)
    with daemon.serving(), daemon.client() as api:
        add(api, "tick", repo)
        first = _one_worker(daemon)
        flood = connect(daemon, FLOOD)
        try:
            os.killpg(first, signal.SIGKILL)
            # the kill is restart #1; a respawn that fails for want of files is a crash too: #2
            wait_until(lambda: "restart #2" in daemon.log(), timeout=60,
                       what="the respawn that failed for want of files to be retried")
        finally:
            close_all(flood)
        record = wait_until(lambda: (r := api.get("/plugins/tick").json())["state"] == "running" and r,
                            timeout=90, what="tick to come back by itself")
        assert record["pid"] != first
        crashed = [t for t in record["transitions"] if t["to_state"] == "crashed"]
        assert any("Too many open files" in t["reason"] for t in crashed), record["transitions"]
        assert not [t for t in record["transitions"] if t["to_state"] == "failed"], record["transitions"]


SLOW_IMPORT = """
    import os, pathlib, time
    from iochost import TaskBase

    pathlib.Path({marker!r}).write_text("importing")
    time.sleep(20)  # past uvicorn's 5 s of graceful shutdown, which then cuts the request

    class Ticker(TaskBase):
        def execute(self):
            pass
"""


def test_sigterm_during_an_upgrades_validation_answers_the_json_error_body(tmp_path: Path) -> None:
    marker = tmp_path / "validating"
    daemon = Daemon(tmp_path / "data", "--import-timeout", "600")  # the probe is ended, not waited out
    repo = plugin_repo(tmp_path, "tick", TICKER, TICKER_CONFIG)
    answers: list[httpx.Response | BaseException] = []
    try:
        daemon.start()
        with daemon.client() as api:
            add(api, "tick", repo)
            repo.write({"tick.py": SLOW_IMPORT.format(marker=str(marker))})
            commit = repo.commit("imports for ever")

            def upgrade() -> None:
                try:
                    answers.append(api.post("/plugins/tick/upgrade", json={"commit": commit}))
                except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                    answers.append(exc)

            caller = threading.Thread(target=upgrade, name="upgrade-caller")
            caller.start()
            wait_until(marker.exists, timeout=60, what="the new revision's import to start")
            assert daemon.terminate(timeout=120) == 0, daemon.log()[-2000:]
            caller.join(60)
        assert len(answers) == 1 and isinstance(answers[0], httpx.Response), answers
        response = answers[0]
        assert response.headers["content-type"] == "application/json", response.text
        assert response.status_code == 503 and response.json()["code"] == "SHUTTING_DOWN", response.text
    finally:
        daemon.cleanup()


def launch_processes(daemon: Daemon) -> list[int]:
    """The daemon's fork server: its template and idle members (children of the daemon)."""
    assert daemon.proc is not None
    return [pid for pid, (parent, cmdline) in live_processes().items()
            if b"iochost.launch" in cmdline and parent == daemon.proc.pid]


def test_a_stopped_fork_server_never_fails_a_valid_plugin(tmp_path: Path) -> None:
    """SIGSTOP the template and every idle member: the add still works (or, if nothing can
    start a process, answers the daemon's LAUNCHER_UNAVAILABLE), never VALIDATION_FAILED."""
    daemon = Daemon(tmp_path / "data")
    repo = plugin_repo(tmp_path, "tick", TICKER, TICKER_CONFIG)
    stopped: list[int] = []
    with daemon.serving(), daemon.client() as api:
        try:
            stopped = wait_until(lambda: len(pids := launch_processes(daemon)) >= 4 and pids, timeout=60,
                                 what="the template and its pool (2 warm, 1 cold)")
            for pid in stopped:
                os.kill(pid, signal.SIGSTOP)
            response = api.post("/plugins", json={"name": "tick", "git_url": repo.url})
            if response.status_code != 201:
                assert response.status_code == 503, response.text
                assert response.json()["code"] == "LAUNCHER_UNAVAILABLE", response.text
            else:
                assert api.get("/plugins/tick").json()["state"] == "running"
            assert "is stopped" in daemon.log(), "the stopped fork server was not reported"
        finally:
            for pid in stopped:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def test_worker_specs_holding_parameters_are_private(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path / "data")
    repo = plugin_repo(tmp_path, "tick", TICKER, TICKER_CONFIG)
    with daemon.serving(), daemon.client() as api:
        add(api, "tick", repo, parameters={"interval": 0.3, "secret": "s3cr3t"})
        run_dir = daemon.data_dir / "run"
        spec = run_dir / "tick.json"
        assert "s3cr3t" in spec.read_text()
        assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in run_dir.iterdir()}
        assert modes and set(modes.values()) == {0o600}, modes
        assert stat.S_IMODE((daemon.data_dir / "registry.json").stat().st_mode) == 0o600


# -- request bodies that never arrive, and the cap against the health probes -------------------
POST_HEAD = (b"POST /api/v1/plugins HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")


def answer_or_close(sock: socket.socket, trickle: bytes = b"", timeout: float = CLOSE_WAIT) -> bytes | None:
    """Wait for the daemon to answer and close, sending one byte of ``trickle`` each time
    0.5 s pass without it doing so (a body sent at 2 bytes a second); what it sent, or None
    if the connection is still open at ``timeout``."""
    sock.settimeout(0.5)
    data, sent, deadline = b"", 0, time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            if sent < len(trickle):
                try:
                    sock.sendall(trickle[sent:sent + 1])
                except OSError:  # closed meanwhile: read what it sent
                    continue
                sent += 1
            continue
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
    return None


@pytest.mark.parametrize("request_start, trickle", [
    (POST_HEAD + b"Content-Length: 100\r\n\r\n{", b""),  # a body that stops
    (POST_HEAD + b"Transfer-Encoding: chunked\r\n\r\n1\r\n{\r\n", b""),  # a chunked body that stops
    (POST_HEAD + b"Content-Length: 1000\r\n\r\n", b" " * 1000),  # a body that trickles for ever
], ids=["content-length-stalls", "chunked-stalls", "trickles"])
def test_a_request_whose_body_does_not_arrive_in_time_is_answered_in_json_and_closed(
        short_timeout_daemon: Daemon, request_start: bytes, trickle: bytes) -> None:
    with socket.create_connection(("127.0.0.1", short_timeout_daemon.port), timeout=10) as sock:
        sock.sendall(request_start)
        data = answer_or_close(sock, trickle)
    assert data is not None, f"the connection was still open after {CLOSE_WAIT} s"
    head, _, body = data.partition(b"\r\n\r\n")
    assert int(head.split()[1]) == ErrorCode.INVALID_REQUEST.http_status, data
    error = json.loads(body)
    assert error["code"] == "INVALID_REQUEST" and "did not arrive in full within 2 s" in error["message"], error
    assert httpx.get(short_timeout_daemon.url + "/api/v1/plugins", timeout=10).json()["count"] == 0  # nothing added


def test_at_the_connection_cap_idle_connections_make_room_for_the_health_probes(tmp_path: Path) -> None:
    """Silent and slow-header connections fill the cap (and would stay for the long timeout):
    a probe's new connection closes the oldest idle one and is answered; connections serving
    a request (event streams) are never closed for it, and when every one is, a new one is."""
    cap = 12
    daemon = Daemon(tmp_path / "data", "--http-timeout", "300", "--http-max-connections", str(cap))
    with daemon.serving():
        streams = connect(daemon, 2)
        for sock in streams:
            sock.sendall(b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
        for sock in streams:  # the stream's first comment: its request is in progress
            sock.settimeout(10)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        idle = connect(daemon, cap - 2)
        for sock in idle[::2]:
            sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        try:
            for probe in ("/api/v1/health/live", "/api/v1/health/ready"):
                assert httpx.get(daemon.url + probe, timeout=10).status_code == 200, probe
                idle += connect(daemon, 1)  # the cap full again: the probe's connection has closed
            assert [sock for sock in idle[:2] if closed_by_server(sock)] == idle[:2]  # the oldest made room
            for sock in streams:  # still streaming
                sock.setblocking(False)
                try:
                    assert sock.recv(65536) != b"", "an event stream was closed to make room"
                except BlockingIOError:
                    pass
        finally:
            close_all(idle)
        busy = connect(daemon, cap - 2)
        try:
            for sock in busy:
                sock.sendall(b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
            for sock in busy:
                sock.settimeout(CLOSE_WAIT)
                assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            with pytest.raises(httpx.TransportError):  # every connection serves a request: none to close
                httpx.get(daemon.url + "/api/v1/health/live", timeout=10)
        finally:
            close_all(busy + streams)
        wait_until(lambda: _live(daemon), what="the probe answered once the streams ended")


def _live(daemon: Daemon) -> bool:
    try:
        return httpx.get(daemon.url + "/api/v1/health/live", timeout=10).status_code == 200
    except httpx.TransportError:  # the daemon has not yet seen the closed connections go
        return False


class Stopper:
    """SIGSTOPs every fork-server process of ``daemon`` that appears after it started (new
    templates, members forked by the pool's keeper or for a start), as it appears, so one is
    caught at any moment of its start; the pids are kept to kill at the end."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.known = set(launch_processes(daemon))
        self.stopped: list[int] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stopper")

    def __enter__(self) -> "Stopper":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._done.wait(0.005):
            for pid in set(launch_processes(self.daemon)) - self.known:
                self.known.add(pid)
                try:
                    os.kill(pid, signal.SIGSTOP)
                except ProcessLookupError:
                    continue
                self.stopped.append(pid)

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        for pid in self.stopped:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_a_fork_server_stopped_while_it_starts_a_process_is_given_up_at_once(tmp_path: Path) -> None:
    """Every template and member the daemon starts is stopped as soon as it exists, before it
    has said hello or while it imports softioc: the daemon sees each is stopped and spawns
    the worker instead, rather than waiting out the template's 30 s or the member's 60 s."""
    daemon = Daemon(tmp_path / "data")
    repo = plugin_repo(tmp_path, "tick", TICKER, TICKER_CONFIG)
    with daemon.serving(), daemon.client() as api:
        add(api, "tick", repo)
        wait_until(lambda: len(launch_processes(daemon)) >= 4, timeout=60, what="the template and its pool")
        with Stopper(daemon) as stopper:
            for pid in launch_processes(daemon):  # what is there now: everything after it is new
                os.kill(pid, signal.SIGKILL)
            restarted = api.post("/plugins/tick/restart")
            added = api.post("/plugins", json={"name": "tock", "git_url": repo.url})
            assert (restarted.status_code, restarted.json()["state"]) == (200, "running"), restarted.text
            assert (added.status_code, added.json()["state"]) == (201, "running"), added.text
            assert stopper.stopped, "no fork-server process was started during the restart and the add"
            wait_until(lambda: "stopped before it answered" in daemon.log(), timeout=30,
                       what="a stopped template or member given up without its timeout")
        assert "did not get ready: timed out" not in daemon.log()


BULKY_JOB = """
    from iochost import JobBase, JobResult

    class Bulky(JobBase):
        def initialize(self):
            pass

        def execute(self):
            return JobResult(success=True, data={"bulk": "x" * 200_000})
"""


def test_an_event_stream_its_client_stops_reading_is_dropped(tmp_path: Path) -> None:
    """A client opens /events and never reads: once the daemon's send buffer is full (job
    runs whose results make events of 200 kB), the connection is dropped after
    --http-timeout rather than held, with its task, for as long as the client lives."""
    daemon = Daemon(tmp_path / "data", "--http-timeout", "2")
    with daemon.serving(), daemon.client() as api:
        add(api, "bulky", plugin_repo(tmp_path, "bulky", BULKY_JOB, "parameters: {}\n"))
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the daemon's buffer fills
        sock.connect(("127.0.0.1", daemon.port))
        try:
            sock.sendall(b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\n\r\n")

            def dropped() -> bool:
                assert api.post("/jobs/bulky/run").json()["state"] == "succeeded"  # an event on the stream
                try:
                    sock.send(b"\r\n")  # fails once the daemon has reset the connection
                except OSError:
                    return True
                return False

            wait_until(dropped, timeout=120, interval=0.5, what="the unread event stream to be dropped")
        finally:
            sock.close()
        assert api.get("/health/live").status_code == 200


def test_sigterm_during_a_job_run_answers_the_json_error_body_and_logs_no_error(tmp_path: Path) -> None:
    """A caller waiting for a run when the daemon stops gets SHUTTING_DOWN in the API's shape;
    the cut request is not an "Exception in ASGI application" traceback in the daemon's log."""
    daemon = Daemon(tmp_path / "data")
    answers: list[httpx.Response | BaseException] = []
    try:
        daemon.start()
        with daemon.client() as api:
            add(api, "slow", plugin_repo(tmp_path, "slow", SLOW_JOB, SLOW_JOB_CONFIG))

            def run() -> None:
                try:
                    answers.append(api.post("/jobs/slow/run", json={"parameters": {"steps": 100_000}}))
                except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                    answers.append(exc)

            caller = threading.Thread(target=run, name="run-caller")
            caller.start()
            wait_until(lambda: [r for r in api.get("/jobs/slow/runs").json()["runs"] if r["state"] == "running"],
                       timeout=60, what="the run to start")
            assert daemon.terminate(timeout=120) == 0, daemon.log()[-2000:]
            caller.join(60)
        assert len(answers) == 1 and isinstance(answers[0], httpx.Response), answers
        response = answers[0]
        assert response.status_code == 503 and response.json()["code"] == "SHUTTING_DOWN", response.text
        errors = [json.loads(line) for line in daemon.log().splitlines() if '"level": "error"' in line]
        assert not [e for e in errors if "Exception in ASGI application" in e["message"]], errors
    finally:
        daemon.cleanup()


def test_sigterm_during_an_adds_clone_ends_git_and_the_daemon_at_once(tmp_path: Path) -> None:
    """A git server that accepts and never answers holds the clone until --git-timeout
    (here 600 s). SIGTERM answers the caller SHUTTING_DOWN and kills the clone's git: the
    daemon exits without waiting out the time limit (Kubernetes sends SIGKILL after its
    grace period, and a rollout waits on it)."""
    silent = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    accepting = threading.Thread(target=lambda: held.append(silent.accept()[0]), daemon=True)
    accepting.start()
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/never.git"
    daemon = Daemon(tmp_path / "data", "--git-timeout", "600")
    answers: list[httpx.Response | BaseException] = []
    try:
        daemon.start()
        with daemon.client() as api:
            def post() -> None:
                try:
                    answers.append(api.post("/plugins", json={"name": "stuck", "git_url": url}))
                except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                    answers.append(exc)

            caller = threading.Thread(target=post, name="add-caller")
            caller.start()
            accepting.join(60)
            assert held, "git never connected"
            gits = [pid for pid, (_, cmdline) in live_processes().items()
                    if cmdline.startswith(b"git\0") and url.encode() in cmdline]
            assert gits, "no git clone running"
            assert daemon.terminate(timeout=120) == 0, daemon.log()[-2000:]  # not the 600 s of --git-timeout
            caller.join(60)
        assert len(answers) == 1 and isinstance(answers[0], httpx.Response), answers
        assert answers[0].status_code == 503 and answers[0].json()["code"] == "SHUTTING_DOWN", answers[0].text
        assert not [pid for pid in gits if pid in live_processes()], "git outlived the daemon"
        assert "ended 1 git, pip or validation process(es)" in daemon.log()
    finally:
        daemon.cleanup()
        for conn in held:
            conn.close()
        silent.close()
