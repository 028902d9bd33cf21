"""Scale and speed, as behaviour (the figures themselves are bench/compare.py's):

- a worker locks no memory, even though the daemon runs as root (EPICS would mlockall);
- workers are forked from the template, probes from a cold member of its pool, and a
  killed template, or a killed idle warm member, is replaced without losing a plugin; an
  idle warm member has loaded the QSRV library already;
- a restarted daemon answers the API before its plugins are running again, restores them
  several at a time, and says when it is ready (``/health/live``, ``/health/ready``);
- concurrent adds of different plugins overlap; the same name still gets 409.

All with the real ``iochost serve``, git repositories by file:// URL, HTTP and CA.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from daemon_harness import Daemon, add, delete, metric_by_label, wait_until, worker_pids
from gitrepos import plugin_repo
from sample_plugins import TICKER, TICKER_CONFIG
from test_process_tree import cgroups_writable

pytestmark = pytest.mark.slow

CAP_IPC_LOCK, CAP_SYS_NICE = 14, 23

SLOW_START = """
    import time
    from iochost import TaskBase

    class SlowStart(TaskBase):
        def initialize(self):
            time.sleep(1.5)

        def execute(self):
            pass

        def cleanup(self):
            pass
"""
SLOW_START_CONFIG = "parameters: {interval: 1.0}\npvs: {outputs: {VALUE: {type: int}}}\n"


def status_field(pid: int, field: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if parent(int(entry.name)) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError):
                continue
    return found


def cgroup_dir(pid: int) -> Path | None:
    """The cgroup v2 directory of ``pid`` (None without a cgroup2 mount)."""
    own = next(line[3:] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines() if line.startswith("0::"))
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, _, tail = line.partition(" - ")
        if tail.startswith("cgroup2 "):
            root, mount = fields.split()[3:5]
            return Path(mount) / own.removeprefix(root).lstrip("/")
    return None


def templates(daemon: Daemon) -> list[int]:
    assert daemon.proc is not None
    return [pid for pid in children(daemon.proc.pid) if "-m iochost.launch.template" in cmdline(pid)]


def members(daemon: Daemon, kind: str) -> list[int]:
    """The idle pool: ``warm`` members (the next workers) or ``cold`` ones (the next probes)."""
    assert daemon.proc is not None
    return [pid for pid in children(daemon.proc.pid) if f"iochost.launch {kind} member" in cmdline(pid)]


def warm_members(daemon: Daemon) -> list[int]:
    return members(daemon, "warm")


def idle_members(daemon: Daemon) -> dict[str, float]:
    """The fork server's ready members per kind, as ``/metrics`` shows them: a member's
    process exists before it is ready, and only a ready one is taken from the pool."""
    return metric_by_label(daemon, "iochost_fork_server_idle_members", "kind")


def interval(record: dict[str, Any], start: str, end: str) -> tuple[datetime, datetime]:
    """When the plugin entered ``start`` and then ``end`` (from its transitions)."""
    moves = record["transitions"]
    began = next(datetime.fromisoformat(m["at"]) for m in moves if m["to_state"] == start)
    ended = next(datetime.fromisoformat(m["at"]) for m in moves
                 if m["to_state"] == end and datetime.fromisoformat(m["at"]) >= began)
    return began, ended


def overlapping(spans: list[tuple[datetime, datetime]]) -> int:
    """The largest number of spans that were open at one instant."""
    edges = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    most = open_now = 0
    for _, step in edges:
        open_now += step
        most = max(most, open_now)
    return most


def test_a_worker_locks_no_memory_and_cannot_take_real_time_back(api, daemon, repos, ca):
    record = add(api, "nolock", plugin_repo(repos, "nolock", TICKER, TICKER_CONFIG, module="ticker"))
    try:
        pid = record["pid"]
        value = record["pv_prefix"] + ":VALUE"
        wait_until(lambda: ca.caget(value, timeout=2) > 0, what="the worker serving over CA")
        assert status_field(pid, "VmLck") == "0 kB"  # EPICS's mlockall never happened
        for field in ("CapEff", "CapPrm", "CapBnd"):
            caps = int(status_field(pid, field), 16)
            assert not caps & (1 << CAP_SYS_NICE | 1 << CAP_IPC_LOCK), f"{field} still has them: {caps:x}"
        if os.geteuid() == 0:  # the case this guards: the daemon itself may lock and be real-time
            assert status_field(daemon.proc.pid, "CapEff") != status_field(pid, "CapEff")
    finally:
        delete(api, "nolock")


def test_a_spawned_worker_locks_no_memory_either(tmp_path, repos, ca):
    """Without the fork server (as for a plugin with its own requirements.txt)."""
    with Daemon(tmp_path / "data", "--no-fork-server").serving() as d, d.client() as api:
        record = add(api, "spawned", plugin_repo(repos, "spawned", TICKER, TICKER_CONFIG, module="ticker"))
        assert "(forked)" not in cmdline(record["pid"]) and "-m iochost.worker" in cmdline(record["pid"])
        assert status_field(record["pid"], "VmLck") == "0 kB"
        assert not templates(d)


def test_workers_are_forked_from_the_template_which_is_replaced_when_killed(api, daemon, repos, ca):
    first = add(api, "forked-a", plugin_repo(repos, "forked-a", TICKER, TICKER_CONFIG, module="ticker"))
    try:
        pid = first["pid"]
        assert "iochost.worker" in cmdline(pid) and "(forked)" in cmdline(pid)
        assert parent(pid) == daemon.proc.pid  # re-parented at birth: the daemon waits for it
        placed = cgroup_dir(pid) if cgroups_writable() else None
        if placed is not None:  # it waited in the pool in the cgroup it now runs in
            assert placed.name == f"worker-{pid}" and placed.parent.name == f"iochost-{daemon.proc.pid}", placed
        [template] = templates(daemon)
        template_environ = Path(f"/proc/{template}/environ").read_bytes()
        assert b"IOCHOST_ADMIN_TOKEN" not in template_environ and b"IOCHOST_READ_TOKEN" not in template_environ

        os.kill(template, signal.SIGKILL)
        replacement = wait_until(lambda: [p for p in templates(daemon) if p != template], timeout=20,
                                 what="a new template")[0]
        assert api.get("/plugins/forked-a").json()["pid"] == pid  # the plugin lost nothing
        assert api.get("/plugins/forked-a").json()["state"] == "running"
        count = ca.caget(first["pv_prefix"] + ":VALUE", timeout=3)
        wait_until(lambda: ca.caget(first["pv_prefix"] + ":VALUE", timeout=3) > count, what="it still runs")

        wait_until(lambda: idle_members(daemon)["cold"] == 1, timeout=20, what="a cold member ready for the next probe")
        [cold] = members(daemon, "cold")
        second = add(api, "forked-b", plugin_repo(repos, "forked-b", TICKER, TICKER_CONFIG, module="ticker"))
        assert "(forked)" in cmdline(second["pid"])
        assert cold not in members(daemon, "cold")  # it ran the add's validation probe ...
        wait_until(lambda: [p for p in members(daemon, "cold") if p != cold], timeout=20, what="a new cold member")
        assert templates(daemon) == [replacement]
        delete(api, "forked-b")

        wait_until(lambda: idle_members(daemon)["warm"] >= 1, timeout=20, what="a warm member ready in the pool")
        idle = warm_members(daemon)
        # its wait paid for the library every worker loads (QSRV, served over PVA: test_daemon)
        assert "libpvxsIoc" in Path(f"/proc/{idle[0]}/maps").read_text()
        os.kill(idle[0], signal.SIGKILL)
        wait_until(lambda: idle[0] not in warm_members(daemon) and idle_members(daemon)["warm"] == 2, timeout=20,
                   what="the pool refilled")
        if placed is not None:
            dead = placed.parent / f"worker-{idle[0]}"
            wait_until(lambda: not dead.exists(), timeout=20, what="the dead member's cgroup removed")
        assert api.get("/health").json()["status"] == "ok"
    finally:
        for name in ("forked-a", "forked-b"):
            if api.get(f"/plugins/{name}").status_code == 200:
                delete(api, name)


def test_concurrent_adds_overlap_and_the_same_name_still_conflicts(api, repos):
    names = [f"together-{i}" for i in range(4)]
    repos_by_name = {n: plugin_repo(repos, n, SLOW_START, SLOW_START_CONFIG, module="slow") for n in names}
    try:
        with concurrent.futures.ThreadPoolExecutor(len(names) + 1) as pool:
            posts = [pool.submit(api.post, "/plugins", json={"name": n, "git_url": repos_by_name[n].url})
                     for n in names]
            twin = pool.submit(api.post, "/plugins", json={"name": names[0], "git_url": repos_by_name[names[0]].url})
            answers = [p.result() for p in posts] + [twin.result()]
        codes = sorted(a.status_code for a in answers)
        assert codes == [201, 201, 201, 201, 409], [a.text for a in answers if a.status_code not in (201, 409)]
        records = [api.get(f"/plugins/{n}").json() for n in names]
        spans = [interval(r, "fetching", "running") for r in records]
        assert overlapping(spans) >= 2, spans  # each start takes 1.5 s in initialize() alone
    finally:
        for name in names:
            if api.get(f"/plugins/{name}").status_code == 200:
                delete(api, name)


def test_restart_answers_at_once_and_restores_in_parallel(tmp_path, repos):
    count = 20
    daemon = Daemon(tmp_path / "data")
    try:
        daemon.start()
        with daemon.client() as api, concurrent.futures.ThreadPoolExecutor(4) as pool:
            repo = plugin_repo(repos, "many", TICKER, TICKER_CONFIG, module="ticker")
            list(pool.map(lambda i: add(api, f"many-{i:02d}", repo), range(count)))
        assert daemon.terminate() == 0

        daemon.start()  # returns at the first 200 from /api/v1/health
        with httpx.Client(base_url=daemon.url + "/api/v1", timeout=10) as api:
            first = api.get("/plugins").json()
            assert first["count"] == count  # every plugin is visible, with its state, at once
            assert sum(p["state"] == "running" for p in first["plugins"]) < count
            assert api.get("/health/live").status_code == 200
            early = api.get("/health/ready")
            assert early.status_code == 503 and early.json()["ready"] is False
            wait_until(lambda: api.get("/health/ready").status_code == 200, timeout=120, what="ready")
            records = api.get("/plugins").json()["plugins"]
            assert all(p["state"] == "running" for p in records), [(p["name"], p["state"]) for p in records]
            assert api.get("/health").json()["ready"] is True
            spans = [interval(r, "starting", "running") for r in records]
            assert overlapping(spans) >= 2, "restore ran one plugin at a time"
            # The polled list (answered ahead of FastAPI) is byte for byte what FastAPI's
            # route serves, here through the kind filter (all 20 are tasks). Two requests
            # can straddle a heartbeat, so: the same bodies at some moment.
            wait_until(lambda: api.get("/plugins").content == api.get("/plugins", params={"kind": "task"}).content,
                       timeout=10, what="the fast list and the route's list to agree")
        assert daemon.terminate() == 0
        assert worker_pids(daemon.data_dir) == []
    finally:
        daemon.cleanup()


@pytest.fixture(autouse=True)
def _no_leftover_workers(daemon):
    yield
    wait_until(lambda: len(worker_pids(daemon.data_dir)) <= 1, timeout=20,  # the daemon's own IOC
               what="this test's workers to be gone")
