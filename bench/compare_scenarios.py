"""The two runs bench/compare.py times: iochost grown to each plugin count in one daemon, and
iocmng at its one plugin (every add on a fresh server); both serve the same plugin
(``PLUGIN_FILES``) from the same local git repository.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import iocmngserver
from benchdaemon import DaemonPorts, start_daemon, stop_process, wait_healthy
from compare_measures import idle_cpu_pct, load, memory, timed_add, wait_restarted

PREFIX = "IOCHOST"  # both servers name PVs PREFIX:PLUGIN:PV
PV = "READING"
SETTLE_SECONDS = 3.0  # after the last add, before idle CPU and memory are read

PLUGIN_FILES = {
    "bench_monitor.py": '''\
        """The benchmark's plugin: a 1 Hz task with three PVs, written against iocmng's API."""

        from iocmng import TaskBase


        class BenchMonitor(TaskBase):
            def initialize(self):
                self.value = 0.0

            def execute(self):
                self.value += 1.0
                self.set_pv("READING", self.value)
                self.set_pv("ALARM", self.value > self.parameters.get("threshold", 75.0))

            def cleanup(self):
                pass
        ''',
    "config.yaml": '''\
        parameters:
          mode: continuous
          interval: 1.0
          threshold: 75.0
        pvs:
          inputs:
            SETPOINT: {type: float, value: 50.0, unit: "degC", prec: 2, low: 0, high: 100}
          outputs:
            READING: {type: float, value: 0.0, unit: "degC", prec: 3}
            ALARM: {type: bool, value: 0, znam: "OK", onam: "ALARM"}
        ''',
}

# --------------------------------------------------------------------------- iochost


@dataclass
class Iochost:
    """One daemon over its life in the benchmark, restarts included (same ports and data dir)."""

    root: Path
    ports: DaemonPorts = field(default_factory=DaemonPorts.pick)
    proc: subprocess.Popen[bytes] | None = None
    extra: tuple[str, ...] = ("--add-rate", "off")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports.api}/api/v1"

    def start(self) -> None:
        self.proc = start_daemon(self.root, self.ports, *self.extra)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def plugins(self) -> list[dict[str, Any]]:
        response = httpx.get(self.url + "/plugins", timeout=30)
        response.raise_for_status()
        return response.json()["plugins"]


def iochost_liveness(url: str) -> list[str]:
    """/health/live first where this iochost has it (it answers before restoring), /health always."""
    paths = set(httpx.get(url.removesuffix("/api/v1") + "/openapi.json", timeout=10).json()["paths"])
    return [p for p in ("/health/live", "/health") if "/api/v1" + p in paths]


def add_many(url: str, git_url: str, names: list[str], parallel: int = 4) -> None:
    """Adds that must all answer 201; a few at a time, as the daemon allows."""
    def add(name: str) -> None:
        response = httpx.post(url + "/plugins", json={"name": name, "git_url": git_url}, timeout=300)
        if response.status_code != 201:
            raise RuntimeError(f"add {name}: {response.status_code} {response.text[:300]}")

    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        list(pool.map(add, names))


def bench_iochost(scratch: Path, git_url: str, counts: list[int], runs: int) -> dict[str, Any]:
    """Figures 1-6 for iochost, growing one daemon to each count in turn."""
    daemon = Iochost(scratch / "iochost")
    daemon.root.mkdir()
    results: dict[str, Any] = {"adds": [], "at": {}}
    daemon.start()
    try:
        assert daemon.proc is not None
        wait_healthy(daemon.proc, daemon.url)
        liveness = iochost_liveness(daemon.url)
        for i in range(runs):
            name = f"add{i}"
            post_s, ca_s = timed_add(daemon.url + "/plugins", {"name": name, "git_url": git_url},
                                     lambda r: r.status_code == 201, f"{PREFIX}:{name.upper()}:{PV}", daemon.ports.ca)
            results["adds"].append({"post_s": post_s, "first_ca_read_s": ca_s})
            httpx.delete(f"{daemon.url}/plugins/{name}", timeout=120).raise_for_status()
            print(f"  iochost add {i + 1}/{runs}: POST {post_s:.2f} s, first CA read {ca_s:.2f} s", file=sys.stderr)
        have = 0
        for count in sorted(counts):
            add_many(daemon.url, git_url, [f"p{i}" for i in range(have, count)])
            have = count
            time.sleep(SETTLE_SECONDS)
            at: dict[str, Any] = {"load": load(daemon.url + "/plugins")}
            assert daemon.proc is not None
            workers = [p["pid"] for p in daemon.plugins() if p.get("pid")]
            at["memory"] = memory(daemon.proc.pid, workers)
            at["idle_cpu_pct"] = idle_cpu_pct(daemon.proc.pid)
            daemon.stop()
            daemon.start()
            assert daemon.proc is not None
            at["restart"] = wait_restarted(daemon.proc, daemon.url, count, lambda p: p["state"] == "running",
                                           liveness)
            results["at"][str(count)] = at
            print(f"  iochost at {count}: {json.dumps(at)}", file=sys.stderr)
    finally:
        daemon.stop()
    return results


# --------------------------------------------------------------------------- iocmng


def iocmng_ok(response: httpx.Response) -> bool:
    """iocmng answers 200 to every add; ``ok`` says whether it worked."""
    return response.status_code == 200 and response.json().get("ok") is True


@contextlib.contextmanager
def iocmng_server(server: Path, root: Path, ports: iocmngserver.IocmngPorts) -> Iterator[subprocess.Popen[bytes]]:
    proc = iocmngserver.start_server(server, root, ports, PREFIX)
    try:
        yield proc
    finally:
        stop_process(proc, timeout=30)


def bench_iocmng(scratch: Path, git_url: str, runs: int) -> dict[str, Any]:
    """Figures 1-6 for iocmng at its one plugin; every add on a fresh server (see iocmngserver)."""
    server = iocmngserver.ensure_venv()
    results: dict[str, Any] = {"adds": [], "start_to_api_s": [], "at": {}}
    url = ""
    for i in range(runs):
        root = scratch / f"iocmng-add{i}"
        root.mkdir()
        ports = iocmngserver.IocmngPorts.pick()
        url = f"http://127.0.0.1:{ports.api}/api/v1"
        with iocmng_server(server, root, ports) as proc:
            start = time.perf_counter()
            wait_healthy(proc, url)
            results["start_to_api_s"].append(time.perf_counter() - start)
            post_s, ca_s = timed_add(url + "/plugins", {"name": "add0", "git_url": git_url}, iocmng_ok,
                                     f"{PREFIX}:ADD0:{PV}", ports.ca)
        results["adds"].append({"post_s": post_s, "first_ca_read_s": ca_s})
        print(f"  iocmng add {i + 1}/{runs}: POST {post_s:.2f} s, first CA read {ca_s:.2f} s", file=sys.stderr)
    root = scratch / "iocmng"
    root.mkdir()
    ports = iocmngserver.IocmngPorts.pick()
    url = f"http://127.0.0.1:{ports.api}/api/v1"
    at: dict[str, Any] = {}
    with iocmng_server(server, root, ports) as proc:
        wait_healthy(proc, url)
        # auto_start_on_boot: the one way iocmng brings a REST-added plugin back after a restart
        response = httpx.post(url + "/plugins", json={"name": "p0", "git_url": git_url, "auto_start_on_boot": True},
                              timeout=120)
        if not iocmng_ok(response):
            raise RuntimeError(f"iocmng add: {response.text[:500]}")
        time.sleep(SETTLE_SECONDS)
        at["load"] = load(url + "/plugins")
        at["memory"] = memory(proc.pid, [])  # no workers: the plugin runs in the server
        at["idle_cpu_pct"] = idle_cpu_pct(proc.pid)
    with iocmng_server(server, root, ports) as proc:
        at["restart"] = wait_restarted(proc, url, 1, lambda p: p.get("status") == "running", ["/health"])
    results["at"]["1"] = at
    print(f"  iocmng at 1: {json.dumps(at)}", file=sys.stderr)
    return results
