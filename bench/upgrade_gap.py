"""How long a plugin's PVs are off the network when it moves to a new commit: an upgrade in
place (POST /plugins/{name}/upgrade) against what iochost offered before, a DELETE and a POST.

    PYTHONPATH=src .venv/bin/python bench/upgrade_gap.py [--runs 5] [--requirements]

One daemon, one plugin from a local git repository with two commits; each run moves it
to the other commit. A probe thread sends one CA search datagram (as libca sends it) for
one of its PVs to the daemon's endpoint every 10 ms; the *gap* is the longest time
between two answered searches during the move (the time a new client could not find the
PV). The *call* is how long the REST request(s) took. The gap of an upgrade is the worker
stop plus the new worker's start; the rest of the call (clone, validation) runs while
the old worker serves. ``--requirements`` gives the plugin a requirements.txt naming a
package vendored in its repository whose version each commit bumps, so every move also
builds the plugin's environment (pip), as a plugin with dependencies does.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import threading
import time
from itertools import pairwise
from pathlib import Path

import caproto
import httpx

from benchdaemon import GIT_ENV, bench_daemon, git_repo

PLUGIN = """\
from iochost import TaskBase


class Mover(TaskBase):
    def initialize(self):
        self.set_pv("CODE", "{version}")

    def execute(self):
        pass

    def cleanup(self):
        pass
"""
CONFIG = "parameters: {interval: 1.0}\npvs:\n  outputs:\n    CODE: {type: string}\n"
PACKAGE = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "moverlib"
version = "{version}"
"""
PV = "IOCHOST:MOVER:CODE"


class SearchProbe:
    """Searches for one PV every ``period`` seconds; keeps the times it was answered."""

    def __init__(self, port: int, name: str, period: float = 0.01) -> None:
        self.port, self.name, self.period = port, name, period
        self.answered: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "SearchProbe":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        request = b"".join(bytes(r) for r in (caproto.VersionRequest(priority=0, version=13),
                                              caproto.SearchRequest(self.name, 1, 13)))
        parser = caproto.Broadcaster(caproto.CLIENT)
        address = ("127.0.0.1", self.port)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(self.period)
            while not self._stop.is_set():
                sent = time.monotonic()
                sock.sendto(request, address)
                try:
                    data, _ = sock.recvfrom(65536)
                    if any(isinstance(m, caproto.SearchResponse) for m in parser.recv(data, address)):
                        self.answered.append(sent)
                except socket.timeout:
                    pass  # not served right now: the endpoint does not answer
                time.sleep(max(0.0, self.period - (time.monotonic() - sent)))

    def gap(self, start: float, end: float) -> float:
        """Longest unanswered stretch between ``start`` and ``end``."""
        times = [start] + [t for t in self.answered if start <= t <= end] + [end]
        return max(b - a for a, b in pairwise(times))


def commit(repo: Path, version: str, requirements: bool) -> str:
    (repo / "mover.py").write_text(PLUGIN.replace("{version}", version))
    if requirements:
        package = repo / "vendor" / "moverlib"
        (package / "src" / "moverlib").mkdir(parents=True, exist_ok=True)
        (package / "src" / "moverlib" / "__init__.py").write_text(f"VERSION = {version!r}\n")
        (package / "pyproject.toml").write_text(PACKAGE.replace("{version}", f"1.0.{version[1:]}"))
        (repo / "requirements.txt").write_text(f"./vendor/moverlib  # {version}\n")
    env = {**GIT_ENV, "PATH": "/usr/bin:/bin"}
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", str(repo), "commit", "-qm", version], check=True, env=env)
    return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, env=env,
                          capture_output=True, text=True).stdout.strip()


def wait_answered(probe: SearchProbe, after: float, timeout: float = 30.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        later = [t for t in probe.answered if t > after]
        if later:
            return later[0]
        time.sleep(0.01)
    raise RuntimeError(f"{PV} was not found again within {timeout} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--requirements", action="store_true", help="a plugin with a requirements.txt")
    args = parser.parse_args()
    results: dict[str, dict[str, list[float]]] = {"upgrade": {"call": [], "gap": []},
                                                  "delete+post": {"call": [], "gap": []}}
    with bench_daemon("--add-rate", "off") as daemon, httpx.Client(base_url=daemon.url, timeout=120) as api:
        repo = daemon.root / "mover"
        url = git_repo(repo, {"mover.py": PLUGIN.replace("{version}", "v0"), "config.yaml": CONFIG})
        commits = [commit(repo, "v1", args.requirements), commit(repo, "v2", args.requirements)]
        assert api.post("/plugins", json={"name": "mover", "git_url": url, "commit": commits[0]}).status_code == 201
        with SearchProbe(daemon.ca_port, PV) as probe:
            wait_answered(probe, 0.0)
            current = commits[0]
            for _ in range(args.runs):
                for way in results:
                    target = commits[1 - commits.index(current)]  # always the other commit
                    start = time.monotonic()
                    if way == "upgrade":
                        response = api.post("/plugins/mover/upgrade", json={"commit": target})
                        ok = response.status_code == 200
                    else:
                        deleted = api.delete("/plugins/mover")
                        response = api.post("/plugins", json={"name": "mover", "git_url": url, "commit": target})
                        ok = deleted.status_code == 200 and response.status_code == 201
                    end = time.monotonic()
                    if not ok:
                        raise RuntimeError(f"{way} failed: {response.status_code} {response.text}")
                    current = target
                    back = wait_answered(probe, end)
                    results[way]["call"].append(end - start)
                    results[way]["gap"].append(probe.gap(start, back))
    summary = {way: {k: round(statistics.median(v), 3) for k, v in figures.items()} for way, figures in results.items()}
    print(json.dumps({"runs": args.runs, "requirements": args.requirements, "median_seconds": summary}, indent=2))


if __name__ == "__main__":
    main()
