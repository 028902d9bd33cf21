"""iocmng 2.7.9 and iochost side by side on this machine, as one markdown table with ratios.

    .venv/bin/python bench/compare.py [--plugins 1,20,100] [--no-iocmng] [--runs 5] [--json out.json]

Both run the same plugin (``from iocmng import TaskBase``, a 1 Hz task with three PVs of its
own) from the same local git repository by ``file://`` URL, everything on loopback with free
ports and temp dirs. iocmng comes from PyPI into its own venv (cached in
/tmp/iochost-bench-iocmng). Figures:

1. POST -> 201 (iocmng: 200 with ``ok: true``): median of --runs adds. iochost adds, deletes
   and re-adds under a new name in one daemon; iocmng cannot add a second plugin after its
   first ``iocInit``, so each of its adds is the first plugin of a fresh server.
2. POST -> first CA read: from sending the POST until the plugin's READING PV, found by a
   CA search of the server's search port, has been read with libca (same adds as 1),
   polled from a process of its own (``ca_first_read.py``).
3. GET /api/v1/plugins with ``wrk -t1 -c8 -d10s`` (or a Python client): req/s and p99, at 1
   plugin for both and at every --plugins count for iochost.
4. PSS (/proc/PID/smaps_rollup): median over the worker processes and total over the daemon
   and all its descendants; VmLck of the workers.
5. Restart with N plugins registered (same data dir): from starting the server until
   /api/v1/health/live (where it exists) or /api/v1/health answers 200, and until every
   plugin is "running".
6. Idle CPU of the server's whole process tree over a 10 s window, % of one core.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpload  # noqa: E402
import iocmngserver  # noqa: E402
from benchdaemon import (ROOT, DaemonPorts, git_repo, pss_kb, proc_status_kb, process_tree,  # noqa: E402
                         start_daemon, stop_process, tree_cpu_seconds, wait_healthy)

PREFIX = "IOCHOST"  # both servers name PVs PREFIX:PLUGIN:PV
PV = "READING"
LOAD_SECONDS = 10.0
IDLE_SECONDS = 10.0
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


# --------------------------------------------------------------------------- measuring


def timed_add(url: str, body: dict[str, Any], accepted: Callable[[httpx.Response], bool], pv: str,
              ca_port: int, timeout: float = 120) -> tuple[float, float]:
    """Seconds from sending the POST to its answer, and to the first successful CA read of ``pv``.

    The POST runs in a thread of this process; the CA reads are polled by a separate
    process (``ca_first_read``), started and imported before the clock starts, so that
    neither waits for the other's GIL. The HTTP client too is made before the clock:
    building an httpx client (an SSL context with the CA bundle) takes 25-50 ms, which is
    the client's cost, not the server's.
    """
    answer: dict[str, Any] = {}
    client = httpx.Client(timeout=timeout)
    poller = subprocess.Popen([sys.executable, str(Path(__file__).with_name("ca_first_read.py")), pv,
                               str(ca_port), str(timeout)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert poller.stdin is not None and poller.stdout is not None

    def post() -> None:
        try:
            response = client.post(url, json=body)
            answer["response"] = response
        except Exception as exc:  # noqa: BLE001 - reported below
            answer["error"] = exc
        answer["at"] = time.perf_counter()

    try:
        if poller.stdout.readline().strip() != "ready":
            raise RuntimeError("the CA poller did not start")
        thread = threading.Thread(target=post, daemon=True)
        start = time.perf_counter()
        poller.stdin.write("go\n")
        poller.stdin.flush()
        thread.start()
        thread.join(timeout)
        if "error" in answer:
            raise RuntimeError(f"POST {url} failed: {answer['error']}")
        response = answer["response"]
        if not accepted(response):
            raise RuntimeError(f"POST {url} answered {response.status_code}: {response.text[:500]}")
        read_at = poller.stdout.readline().strip()
        if read_at in ("", "timeout"):
            raise RuntimeError(f"{pv} never answered a CA read")
        return answer["at"] - start, float(read_at) - start
    finally:
        client.close()
        poller.kill()
        poller.wait()


def idle_cpu_pct(pid: int, seconds: float = IDLE_SECONDS) -> float:
    """CPU of ``pid``'s whole tree over a window, % of one core (a process born inside counts fully)."""
    before = tree_cpu_seconds(pid)
    time.sleep(seconds)
    after = tree_cpu_seconds(pid)
    return 100 * sum(cpu - before.get(p, 0.0) for p, cpu in after.items()) / seconds


def memory(daemon_pid: int, worker_pids: list[int]) -> dict[str, Any]:
    """PSS of the workers (median, max) and of the whole tree; VmLck of the workers (max)."""
    tree = process_tree(daemon_pid)
    total = 0
    for pid in tree:
        with contextlib.suppress(OSError):
            total += pss_kb(pid)
    pss = [pss_kb(pid) / 1024 for pid in worker_pids]
    locked = [proc_status_kb(pid, "VmLck") / 1024 for pid in worker_pids]
    return {"processes": len(tree), "total_pss_mb": total / 1024,
            "worker_pss_median_mb": statistics.median(pss) if pss else None,
            "worker_pss_max_mb": max(pss) if pss else None,
            "worker_vmlck_median_mb": statistics.median(locked) if locked else None,
            "worker_vmlck_max_mb": max(locked) if locked else None}


def get_200(client: httpx.Client, url: str) -> bool:
    try:
        return client.get(url, timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def wait_restarted(proc: subprocess.Popen[bytes], url: str, expected: int, running: Callable[[dict[str, Any]], bool],
                   liveness: list[str], timeout: float = 300) -> dict[str, Any]:
    """After a (re)start at t=0: seconds until a liveness path answers 200, and until
    GET /plugins lists ``expected`` plugins all running. Call right after Popen."""
    start = time.perf_counter()
    result: dict[str, Any] = {}
    with httpx.Client(base_url=url) as client:
        while "api_s" not in result:
            for path in liveness:
                if get_200(client, path):
                    result.update(api_s=time.perf_counter() - start, api_path="/api/v1" + path)
                    break
            else:
                if time.perf_counter() - start > timeout or proc.poll() is not None:
                    raise RuntimeError(f"{url} did not answer {liveness} within {timeout} s "
                                       f"(exit code {proc.poll()})")
                time.sleep(0.01)
        while True:
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                plugins = client.get("/plugins", timeout=5).json()["plugins"]
                if len(plugins) == expected and all(running(p) for p in plugins):
                    result["all_running_s"] = time.perf_counter() - start
                    return result
            if time.perf_counter() - start > timeout or proc.poll() is not None:
                raise RuntimeError(f"not all {expected} plugins running within {timeout} s (exit code {proc.poll()})")
            time.sleep(0.02)


def load(url: str) -> dict[str, Any]:
    return httpload.measure(url, connections=8, seconds=LOAD_SECONDS).as_dict()


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


# --------------------------------------------------------------------------- report


def machine() -> dict[str, Any]:
    """What the numbers were measured on, and how busy it already was."""
    meminfo = Path("/proc/meminfo").read_text().split()
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                            capture_output=True, text=True).stdout.strip()
    wrk = shutil.which("wrk")
    return {"nproc": os.cpu_count(), "ram_gb": round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 2**20, 1),
            "cpu": model, "kernel": platform.release(), "python": platform.python_version(),
            "loadavg_at_start": os.getloadavg(), "iochost_commit": commit,
            "load_tool": "wrk -t1 -c8 -d10s" if wrk else "python raw-socket client, 8 connections, 10 s"}


@dataclass
class Row:
    figure: str
    iocmng: float | None
    iochost: float | None
    unit: str
    goal: str = ""
    met: bool | None = None
    ratio: bool = True


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2
    return f"{value:.{digits}f} {unit}".strip()


def _n(count: int) -> str:
    return f"{count} plugin" if count == 1 else f"{count} plugins"


def _get(results: dict[str, Any] | None, count: int, *keys: str) -> float | None:
    node: Any = (results or {}).get("at", {}).get(str(count))
    for key in keys:
        if node is None:
            return None
        node = node.get(key)
    return node


def rows(iochost: dict[str, Any], iocmng: dict[str, Any] | None, counts: list[int]) -> list[Row]:
    """The table, with the goals this benchmark exists to check."""
    def median(results: dict[str, Any] | None, key: str) -> float | None:
        return statistics.median(a[key] for a in results["adds"]) if results and results["adds"] else None

    def check(value: float | None, ok: Callable[[float], bool]) -> bool | None:
        return None if value is None else ok(value)

    out: list[Row] = []
    post_m, post_h = median(iocmng, "post_s"), median(iochost, "post_s")
    out.append(Row(f"POST → 201 (iocmng: 200 ok), median of {len(iochost['adds'])} adds", post_m, post_h, "s",
                   "≤ 0.65× iocmng",
                   None if post_m is None or post_h is None else post_h <= 0.65 * post_m))
    ca_h = median(iochost, "first_ca_read_s")
    out.append(Row("POST → first CA read, median", median(iocmng, "first_ca_read_s"), ca_h, "s", "≤ 0.7 s",
                   check(ca_h, lambda v: v <= 0.7)))
    rate_m, rate_h = _get(iocmng, 1, "load", "requests_per_s"), _get(iochost, 1, "load", "requests_per_s")
    if 1 in counts:
        out.append(Row("GET /plugins, 1 plugin", rate_m, rate_h, "req/s", "≥ 2× iocmng and ≥ 3000 req/s",
                       None if rate_h is None else rate_h >= 3000 and (rate_m is None or rate_h >= 2 * rate_m)))
        out.append(Row("GET /plugins p99, 1 plugin", _get(iocmng, 1, "load", "p99_ms"),
                       _get(iochost, 1, "load", "p99_ms"), "ms"))
    for count in (c for c in counts if c > 1):
        out.append(Row(f"GET /plugins, {_n(count)}", None, _get(iochost, count, "load", "requests_per_s"),
                       "req/s"))
        p99 = _get(iochost, count, "load", "p99_ms")
        goal = "≤ 20 ms" if count == 100 else ""
        out.append(Row(f"GET /plugins p99, {_n(count)}", None, p99, "ms", goal,
                       check(p99, lambda v: v <= 20) if goal else None))
    for count in counts:
        pss = _get(iochost, count, "memory", "worker_pss_median_mb")
        goal = "≤ 30 MB" if count == 20 else ""
        out.append(Row(f"PSS median per worker, {_n(count)}", None, pss, "MB", goal,
                       check(pss, lambda v: v <= 30) if goal else None))
    for count in counts:
        total = _get(iochost, count, "memory", "total_pss_mb")
        goal = "≤ 3.5 GB" if count == 100 else ""
        out.append(Row(f"total PSS (server + descendants), {_n(count)}",
                       _get(iocmng, count, "memory", "total_pss_mb"), total, "MB", goal,
                       check(total, lambda v: v <= 3.5 * 1024) if goal else None))
    for count in counts:
        out.append(Row(f"VmLck per worker (max), {_n(count)}", None,
                       _get(iochost, count, "memory", "worker_vmlck_max_mb"), "MB", ratio=False))
    for count in counts:
        api = _get(iochost, count, "restart", "api_s")
        out.append(Row(f"restart → API ({_get(iochost, count, 'restart', 'api_path') or '-'}), {_n(count)}",
                       _get(iocmng, count, "restart", "api_s"), api, "s", "≤ 1 s", check(api, lambda v: v <= 1)))
        running = _get(iochost, count, "restart", "all_running_s")
        limit = {20: 8.0, 100: 20.0}.get(count)
        out.append(Row(f"restart → all running, {_n(count)}", _get(iocmng, count, "restart", "all_running_s"),
                       running, "s", f"≤ {limit:g} s" if limit else "",
                       check(running, lambda v: v <= limit) if limit else None))  # type: ignore[operator]
    for count in counts:
        cpu = _get(iochost, count, "idle_cpu_pct")
        goal = "≤ 25 %" if count == 100 else ""
        out.append(Row(f"idle CPU of the tree, {_n(count)}", _get(iocmng, count, "idle_cpu_pct"), cpu,
                       "% core", goal, check(cpu, lambda v: v <= 25) if goal else None))
    return out


def markdown(table: list[Row]) -> str:
    lines = [f"| figure | iocmng {iocmngserver.IOCMNG_VERSION} | iochost | ratio | goal | met |",
             "|---|---|---|---|---|---|"]
    for row in table:
        ratio = (f"{row.iochost / row.iocmng:.2f}×" if row.ratio and row.iocmng and row.iochost is not None
                 else "")
        met = {True: "yes", False: "**NO**", None: ""}[row.met]
        lines.append(f"| {row.figure} | {_fmt(row.iocmng, row.unit)} | {_fmt(row.iochost, row.unit)} | {ratio} "
                     f"| {row.goal} | {met} |")
    return "\n".join(lines)


def print_log_tails(scratch: Path, lines: int = 15) -> None:
    """The servers' logs end where a failure is explained; shown before the scratch dir goes."""
    for log in sorted(scratch.glob("*/*.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        if tail:
            print(f"--- {log.relative_to(scratch)} (last {len(tail)} lines)", *tail, sep="\n", file=sys.stderr)


def _terminate(signum: int, _frame: object) -> None:
    """SIGTERM/SIGHUP end the run like Ctrl-C, so every ``finally`` stops what it started."""
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plugins", default="1,20,100", help="comma-separated plugin counts for iochost")
    parser.add_argument("--runs", type=int, default=5, help="adds timed for figures 1 and 2")
    parser.add_argument("--no-iocmng", action="store_true", help="iochost figures only")
    parser.add_argument("--json", type=Path, help="write every measurement here")
    parser.add_argument("--keep", action="store_true", help="keep the scratch dir (logs) for a look")
    args = parser.parse_args()
    counts = sorted({int(c) for c in args.plugins.split(",") if c.strip()})
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored (`cmd &`)
    # This process's own CA client (caproto) never searches beyond loopback.
    os.environ.update(EPICS_CA_AUTO_ADDR_LIST="NO", EPICS_CA_ADDR_LIST="127.0.0.1",
                      EPICS_PVA_AUTO_ADDR_LIST="NO", EPICS_PVA_ADDR_LIST="127.0.0.1")
    httpload.ensure_wrk()
    info = machine()
    began = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="iochost-compare-"))
    try:
        git_url = git_repo(scratch / "repo", PLUGIN_FILES)
        iocmng = None
        if not args.no_iocmng:
            print("iocmng ...", file=sys.stderr)
            iocmng = bench_iocmng(scratch, git_url, args.runs)
        print("iochost ...", file=sys.stderr)
        iochost = bench_iochost(scratch, git_url, counts, args.runs)
    except BaseException:
        print_log_tails(scratch)
        raise
    finally:
        if args.keep:
            print(f"scratch kept: {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    info["duration_s"] = round(time.perf_counter() - began, 1)
    table = rows(iochost, iocmng, counts)
    print(f"\nmachine: {info['nproc']} CPUs ({info['cpu']}), {info['ram_gb']} GB RAM, kernel {info['kernel']}, "
          f"Python {info['python']}, load average at start {info['loadavg_at_start'][0]:.2f}; "
          f"iochost {info['iochost_commit']}; GET load: {info['load_tool']}; run took {info['duration_s']:.0f} s\n")
    print(markdown(table))
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "iocmng": iocmng, "iochost": iochost,
                                         "table": [row.__dict__ for row in table]}, indent=2))


if __name__ == "__main__":
    main()
