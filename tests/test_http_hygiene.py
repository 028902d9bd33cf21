"""The API's sockets under hostile or broken conditions (issue 29, items 9 and 11): idle and
slow-header connections are closed, a body that does not arrive in time is answered in JSON,
a connection cap keeps files for the workers and room for the health probes, an event stream
its client stops reading is dropped. Real daemon, real sockets, real workers.

What the daemon needs to start processes, and SIGTERM mid-request, are in
test_spawn_and_shutdown_hygiene.py (which uses the socket helpers here)."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from daemon_harness import Daemon, add, wait_until
from gitrepos import plugin_repo
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_an_unparsable_request_is_answered_in_the_json_error_shape(short_timeout_daemon: Daemon) -> None:
    status, body = raw_response(short_timeout_daemon, b"NOT HTTP AT ALL\r\n\r\n")
    assert status == ErrorCode.INVALID_REQUEST.http_status
    error = json.loads(body)
    assert error["code"] == "INVALID_REQUEST" and "invalid HTTP request" in error["message"], error


def test_the_derived_connection_cap_leaves_room_for_the_workers() -> None:
    assert connection_cap_for(1024) == 1024 - FD_RESERVE_MIN
    assert connection_cap_for(1 << 20) == (1 << 20) - (1 << 18)  # a quarter of a large limit
    assert connection_cap_for(100) == 16  # never none at all


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


@pytest.mark.slow
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
        # closed here is not yet gone there: until the daemon has let them go, they count
        # against the cap, and the new connections below would be the idle ones it closes
        wait_until(lambda: _held_connections(daemon) == len(streams),
                   what="the daemon to let the closed connections go")
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


TCP_ESTABLISHED, TCP_CLOSE_WAIT = "01", "08"  # /proc/net/tcp's states (include/net/tcp_states.h)


def _held_connections(daemon: Daemon) -> int:
    """The API connections the daemon still holds: its sockets on its port, open (ESTABLISHED)
    or closed by the client but not yet by the daemon (CLOSE_WAIT). Counted from the kernel's
    table rather than the daemon's open files, which its fork server's pool moves too."""
    held = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].rsplit(":", 1)[1], 16)
        if local_port == daemon.port and fields[3] in (TCP_ESTABLISHED, TCP_CLOSE_WAIT):
            held += 1
    return held


def _live(daemon: Daemon) -> bool:
    try:
        return httpx.get(daemon.url + "/api/v1/health/live", timeout=10).status_code == 200
    except httpx.TransportError:  # the daemon has not yet seen the closed connections go
        return False


BULKY_JOB = """
    from iochost import JobBase, JobResult

    class Bulky(JobBase):
        def initialize(self):
            pass

        def execute(self):
            return JobResult(success=True, data={"bulk": "x" * 200_000})
"""


@pytest.mark.slow
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

