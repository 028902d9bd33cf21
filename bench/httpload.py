"""HTTP GET throughput like ``wrk -t1 -c8 -d10s --latency``: wrk when installed, else a
multi-process keep-alive HTTP/1.1 client on raw sockets that reports its own CPU use, so one
can see whether the client or the server was the limit."""

from __future__ import annotations

import multiprocessing
import re
import shutil
import socket
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit


@dataclass
class LoadResult:
    tool: str
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx answers, socket errors and timeouts
    client_cpu_pct: float | None = None  # the Python client's CPU, % of one core (None with wrk)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _wrk_ms(text: str, percentile: str) -> float:
    match = re.search(rf"^\s*{percentile}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
    if match is None:
        raise RuntimeError(f"no {percentile}% line in wrk output:\n{text}")
    return float(match[1]) * _UNITS_MS[match[2]]


def run_wrk(url: str, connections: int, seconds: float) -> LoadResult:
    """``wrk -t1 -cN -dS --latency`` and its figures."""
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    if rate is None:
        raise RuntimeError(f"no Requests/sec in wrk output:\n{out}")
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses:\s+(\d+)", out))
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return LoadResult("wrk", float(rate[1]), _wrk_ms(out, "50"), _wrk_ms(out, "99"), errors)


def _one_connection(url: str, seconds: float, queue: "multiprocessing.Queue[tuple[list[float], int, float]]") -> None:
    """One keep-alive connection sending GETs back to back; latencies (s), errors, CPU seconds."""
    parts = urlsplit(url)
    request = (f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
               "Accept: application/json\r\n\r\n").encode()
    latencies: list[float] = []
    errors = 0
    sock = socket.create_connection((parts.hostname, parts.port or 80))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buffer = b""
    end = time.perf_counter() + seconds
    while (start := time.perf_counter()) < end:
        sock.sendall(request)
        while b"\r\n\r\n" not in buffer:
            buffer += sock.recv(65536)
        head, buffer = buffer.split(b"\r\n\r\n", 1)
        length = int(re.search(rb"(?im)^content-length:\s*(\d+)", head)[1])  # type: ignore[index]
        while len(buffer) < length:
            buffer += sock.recv(65536)
        buffer = buffer[length:]
        latencies.append(time.perf_counter() - start)
        if not head.startswith((b"HTTP/1.1 2", b"HTTP/1.0 2")):
            errors += 1
    sock.close()
    queue.put((latencies, errors, time.process_time()))


def run_python(url: str, connections: int, seconds: float) -> LoadResult:
    """The fallback client: one process per connection (no GIL between them)."""
    ctx = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[tuple[list[float], int, float]] = ctx.Queue()
    procs = [ctx.Process(target=_one_connection, args=(url, seconds, queue), daemon=True) for _ in range(connections)]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=seconds + 60) for _ in procs]
    for proc in procs:
        proc.join()
    latencies = sorted(sample for samples, _, _ in results for sample in samples)
    cpu = sum(seconds_used for _, _, seconds_used in results)
    return LoadResult("python raw-socket client", len(latencies) / seconds, statistics.median(latencies) * 1e3,
                      latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1e3,
                      sum(errors for _, errors, _ in results), 100 * cpu / seconds)


def ensure_wrk() -> bool:
    """Whether wrk is there, trying ``apt-get install -y wrk`` once if not (quietly, as root only)."""
    if shutil.which("wrk"):
        return True
    if shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], capture_output=True)
    return shutil.which("wrk") is not None


def measure(url: str, connections: int = 8, seconds: float = 10.0) -> LoadResult:
    """wrk's figures if wrk is installed, else the Python client's."""
    if shutil.which("wrk"):
        return run_wrk(url, connections, seconds)
    return run_python(url, connections, seconds)
