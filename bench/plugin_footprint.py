"""What one plugin costs: worker RSS, time from POST to 201 (IOC READY), and the daemon's RSS.

    .venv/bin/python bench/plugin_footprint.py [--plugins N]

Starts a real ``iochost serve`` on loopback with free ports and a temp data dir, adds N
copies of the bundled temperature-monitor example by ``file://`` git URL one after
another, reads each worker's VmRSS from /proc, then stops the daemon (SIGTERM).
"""

from __future__ import annotations

import argparse
import statistics
import time

import httpx

from benchdaemon import ROOT, bench_daemon, git_repo, rss_mb

EXAMPLE = ROOT / "plugins-example" / "temperature-monitor"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plugins", type=int, default=8)
    args = parser.parse_args()
    with bench_daemon() as bench:
        git_url = git_repo(bench.root / "repo", copy_from=EXAMPLE)
        add_times, rss = [], []
        with httpx.Client(base_url=bench.url, timeout=120) as api:
            for i in range(args.plugins):
                t0 = time.perf_counter()
                response = api.post("/plugins", json={"name": f"bench{i}", "git_url": git_url})
                add_times.append(time.perf_counter() - t0)
                response.raise_for_status()
            time.sleep(2)  # let every worker settle into its loop
            for record in api.get("/plugins").json()["plugins"]:
                rss.append(rss_mb(record["pid"]))
        daemon_rss = rss_mb(bench.proc.pid)
        print(f"plugins: {args.plugins} (temperature-monitor example, 9 PVs each)")
        print(f"POST -> 201 (clone, validate, spawn, iocInit, READY): median {statistics.median(add_times):.2f} s, "
              f"min {min(add_times):.2f} s, max {max(add_times):.2f} s")
        print(f"worker RSS: median {statistics.median(rss):.0f} MB, min {min(rss):.0f} MB, max {max(rss):.0f} MB")
        print(f"daemon RSS (API + supervisor, no softioc): {daemon_rss:.0f} MB")


if __name__ == "__main__":
    main()
