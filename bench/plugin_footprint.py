"""What one plugin costs: worker RSS, time from POST to 201 (IOC READY), and the daemon's RSS.

    .venv/bin/python bench/plugin_footprint.py [--plugins N]

Starts a real ``iochost serve`` on loopback with free ports and a temp data dir, adds N
copies of the bundled temperature-monitor example by ``file://`` git URL one after
another, reads each worker's VmRSS from /proc, then stops the daemon (SIGTERM).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "plugins-example" / "temperature-monitor"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def make_repo(root: Path) -> str:
    repo = root / "repo"
    shutil.copytree(EXAMPLE, repo)
    env = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@x.invalid",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "b@x.invalid"}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "bench"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, env=env)
    return repo.as_uri()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plugins", type=int, default=8)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="iochost-bench-"))
    port, ca_port = free_port(), free_port()
    low = free_port()
    env = {**os.environ, "EPICS_CA_AUTO_ADDR_LIST": "NO", "EPICS_PVA_AUTO_ADDR_LIST": "NO",
           "EPICS_CA_ADDR_LIST": "127.0.0.1", "EPICS_PVA_ADDR_LIST": "127.0.0.1"}
    daemon = subprocess.Popen(
        [sys.executable, "-m", "iochost", "serve", "--port", str(port), "--data-dir", str(root / "data"),
         "--ca-port", str(ca_port), "--pva-port", str(free_port()), "--ca-beacon-port", str(free_port()),
         "--worker-ports", f"{low}-{min(low + 200, 65000)}", "--allow-local-sources", "--log-level", "warning"],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/api/v1"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.1)
        git_url = make_repo(root)
        add_times, rss = [], []
        with httpx.Client(base_url=url, timeout=120) as api:
            for i in range(args.plugins):
                t0 = time.perf_counter()
                response = api.post("/plugins", json={"name": f"bench{i}", "git_url": git_url})
                add_times.append(time.perf_counter() - t0)
                response.raise_for_status()
            time.sleep(2)  # let every worker settle into its loop
            for record in api.get("/plugins").json()["plugins"]:
                rss.append(rss_mb(record["pid"]))
        daemon_rss = rss_mb(daemon.pid)
        print(f"plugins: {args.plugins} (temperature-monitor example, 9 PVs each)")
        print(f"POST -> 201 (clone, validate, spawn, iocInit, READY): median {statistics.median(add_times):.2f} s, "
              f"min {min(add_times):.2f} s, max {max(add_times):.2f} s")
        print(f"worker RSS: median {statistics.median(rss):.0f} MB, min {min(rss):.0f} MB, max {max(rss):.0f} MB")
        print(f"daemon RSS (API + supervisor, no softioc): {daemon_rss:.0f} MB")
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
