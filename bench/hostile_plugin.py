"""What a hostile plugin costs the daemon: config bombs refused (time to the 422, daemon
RSS before and after), and a log flood (bytes written, log volume on disk, daemon CPU).

    .venv/bin/python bench/hostile_plugin.py [--flood-seconds 30] [--log-throttle-mb 0]

Starts a real ``iochost serve`` on loopback (benchdaemon), POSTs each bomb as a git
repository, then adds a plugin that writes to stdout, fd 2 and its logger as fast as
it can, and samples the daemon's CPU time from /proc while it does.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import httpx

from benchdaemon import ROOT, BenchDaemon, bench_daemon, cpu_seconds, git_repo, rss_mb

sys.path.insert(0, str(ROOT / "tests"))
from sample_plugins import (  # the test suite's own hostile samples
    BILLION_LAUGHS,
    DEEP_FLOW,
    FLOOD,
    FLOOD_CONFIG,
    OVERSIZE_CONFIG,
    TICKER,
)


def bombs(api: httpx.Client, bench: BenchDaemon, repeat: int) -> None:
    daemon_pid, root = bench.proc.pid, bench.root
    for name, config in (("laughs", BILLION_LAUGHS), ("nested", DEEP_FLOW), ("oversize", OVERSIZE_CONFIG)):
        url = git_repo(root / f"bomb-{name}", {"bomb.py": TICKER, "config.yaml": config})
        times, before = [], rss_mb(daemon_pid)
        for _ in range(repeat):
            t0 = time.perf_counter()
            response = api.post("/plugins", json={"name": name, "git_url": url})
            times.append(time.perf_counter() - t0)
            assert response.status_code == 422, response.text
        message = response.json()["errors"][0]["message"]
        print(f"{name:9s} POST -> 422 median {statistics.median(times):.2f} s (max {max(times):.2f} s); "
              f"daemon RSS {before:.0f} -> {rss_mb(daemon_pid):.0f} MB; {message[:70]}")


def flood(api: httpx.Client, bench: BenchDaemon, seconds: float) -> None:
    url = git_repo(bench.root / "flood", {"flood.py": FLOOD, "config.yaml": FLOOD_CONFIG})
    api.post("/plugins", json={"name": "flood", "git_url": url}).raise_for_status()
    cpu0, t0 = cpu_seconds(bench.proc.pid), time.monotonic()
    time.sleep(seconds)
    cpu = (cpu_seconds(bench.proc.pid) - cpu0) / (time.monotonic() - t0)
    t1 = time.perf_counter()
    api.get("/plugins/flood/logs", params={"lines": 200}).raise_for_status()
    tail_ms = 1000 * (time.perf_counter() - t1)
    on_disk = sum(p.stat().st_size for p in (bench.root / "data" / "logs").glob("flood.log*")) / 2**20
    os.environ.update(bench.ca_env())  # before libca reads its configuration
    from cothread.catools import caget

    total = float(caget("IOCHOST:FLOOD:WRITTEN_MB", timeout=10))
    print(f"flood     {total:.0f} MB written in {seconds:.0f} s ({total / seconds:.0f} MB/s); "
          f"plugin log on disk {on_disk:.1f} MB; daemon CPU {100 * cpu:.1f}% of one core; "
          f"GET logs?lines=200 {tail_ms:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flood-seconds", type=float, default=30.0)
    parser.add_argument("--repeat", type=int, default=5, help="POSTs of each bomb")
    parser.add_argument("--log-throttle-mb", default="4", help="the daemon's setting (0: no throttle)")
    args = parser.parse_args()
    with bench_daemon("--log-throttle-mb", args.log_throttle_mb) as bench, \
            httpx.Client(base_url=bench.url, timeout=120) as api:
        bombs(api, bench, args.repeat)
        flood(api, bench, args.flood_seconds)


if __name__ == "__main__":
    main()
