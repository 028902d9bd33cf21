"""First CA search of a PV: through iochost's endpoint vs directly against a lone soft IOC.

    PYTHONPATH=src .venv/bin/python bench/ca_search_latency.py [--udp N] [--libca N]

Two soft IOCs on loopback: one alone on its own port (a client searches that port), one
behind a :class:`iochost.discovery.CAEndpoint` whose table also holds 10 000 other names
(a client searches the endpoint's port). Measured from separate client processes:

- UDP search round trip: one VERSION+SEARCH datagram (as libca sends it) on a fresh
  socket until the SEARCH reply arrives; N per target.
- libca first get: a fresh client process (cothread.catools) per sample, timing
  ``caget`` of a never-seen PV inside the process: search, TCP connect, create channel,
  read. Interpreter start-up is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import caproto

from iochost.discovery import CAEndpoint, port_is_free

ROOT = Path(__file__).resolve().parent.parent
SOFT_IOC = ROOT / "tests" / "fixtures" / "soft_ioc.py"
FILLER_NAMES = 10_000


def pick_port() -> int:
    """A loopback port free for TCP and UDP right now."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port_is_free("127.0.0.1", port):
            return port


def probe_udp(port: int, name: str, count: int) -> list[float]:
    """Search round trips in ms, each from a new socket (a new client)."""
    samples = []
    for i in range(count):
        hello = caproto.VersionRequest(0, 13)
        hello.header.data_type, hello.header.parameter1 = 1, i
        request = bytes(hello) + bytes(caproto.SearchRequest(name, i + 1, 13))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(2.0)
            start = time.perf_counter()
            sock.sendto(request, ("127.0.0.1", port))
            sock.recvfrom(4096)
            samples.append((time.perf_counter() - start) * 1e3)
    return samples


def probe_libca(name: str) -> float:
    """One first get, in ms, in this (fresh) process."""
    from cothread import catools

    start = time.perf_counter()
    catools.caget(name, timeout=5.0)
    return (time.perf_counter() - start) * 1e3


def client_env(port: int) -> dict[str, str]:
    return {**os.environ, "EPICS_CA_ADDR_LIST": "127.0.0.1", "EPICS_CA_AUTO_ADDR_LIST": "NO",
            "EPICS_CA_SERVER_PORT": str(port)}


async def run_probe(*args: str, env: dict[str, str]) -> object:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--probe", *args, env=env, stdout=subprocess.PIPE)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"probe {args} failed")
    return json.loads(out)


async def start_ioc(prefix: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(SOFT_IOC), prefix, env={**os.environ, **env},
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    assert proc.stdout is not None
    while b"READY" not in await asyncio.wait_for(proc.stdout.readline(), 30):
        pass
    return proc


def summary(label: str, target: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"{label:<24}{target:<12}{statistics.median(ordered):>10.3f}{p90:>10.3f}{len(ordered):>6}"


async def main(udp_count: int, libca_count: int) -> None:
    endpoint = CAEndpoint("127.0.0.1", pick_port(), beacon_addrs=[])
    await endpoint.start()
    lone_port, worker_port = pick_port(), pick_port()
    common = {"EPICS_CAS_INTF_ADDR_LIST": "127.0.0.1", "EPICS_CAS_BEACON_ADDR_LIST": "",
              "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO", "EPICS_PVAS_SERVER_PORT": "0"}
    iocs = await asyncio.gather(
        start_ioc("BENCH:LONE", {**common, "EPICS_CAS_SERVER_PORT": str(lone_port)}),
        start_ioc("BENCH:WORKER", {**common, **endpoint.worker_env(worker_port)}))
    try:
        endpoint.register("filler", pick_port(), [f"FILLER:{i}:VALUE" for i in range(FILLER_NAMES)])
        endpoint.register("worker", worker_port, [f"BENCH:WORKER:{n}" for n in ("COUNTER", "R0", "R1", "R2")])
        targets = {"iochost": (endpoint.port, "BENCH:WORKER:R1"), "lone IOC": (lone_port, "BENCH:LONE:R1")}
        rows = []
        for target, (port, name) in targets.items():
            samples = await run_probe("udp", str(port), name, str(udp_count), env=os.environ.copy())
            rows.append(summary("UDP search round trip", target, samples))  # type: ignore[arg-type]
        for target, (port, name) in targets.items():
            samples = [await run_probe("libca", name, env=client_env(port)) for _ in range(libca_count)]
            rows.append(summary("libca first caget", target, samples))  # type: ignore[arg-type]
        print(f"{'first CA search, loopback':<36}{'median ms':>10}{'p90 ms':>10}{'n':>6}")
        print("\n".join(rows))
    finally:
        for proc in iocs:
            proc.kill()
            await proc.wait()
        await endpoint.close()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--probe":
        if sys.argv[2] == "udp":
            print(json.dumps(probe_udp(int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))))
        else:
            print(json.dumps(probe_libca(sys.argv[3])))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--udp", type=int, default=500, help="UDP search samples per target")
    parser.add_argument("--libca", type=int, default=20, help="fresh libca processes per target")
    options = parser.parse_args()
    asyncio.run(main(options.udp, options.libca))
