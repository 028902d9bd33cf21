"""A plugin's whole process tree dies with it, on every exit path, with cgroups and without.

The plugin starts three grandchildren of its worker: one in the worker's process group,
one in a session of its own, and one orphaned on purpose (its parent exits at once, so
it re-parents) in a session of its own. Each exit path must leave none of them running:
a clean stop, a cleanup that outlives the grace period, a crash, a watchdog kill, kill -9
of the worker, SIGTERM of the daemon and kill -9 of the daemon.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from daemon_harness import Daemon, wait_until, worker_pids
from gitrepos import Repo
from iochost.proctree import process_table
from iochost.supervisor.containment import CgroupTree

SPAWNER = """
    import json, os, subprocess, sys, time
    from iochost import TaskBase

    ORPHAN = ("import subprocess; print(subprocess.Popen(['sleep', '1001'], start_new_session=True, "
              "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid)")

    class Spawner(TaskBase):
        def initialize(self):
            same_group = subprocess.Popen(["sleep", "1001"])
            own_session = subprocess.Popen(["sleep", "1001"], start_new_session=True)
            orphan = subprocess.run([sys.executable, "-c", ORPHAN], capture_output=True, text=True)
            pids = [same_group.pid, own_session.pid, int(orphan.stdout)]
            path = os.path.join(self.parameters["pids_dir"], f"{os.getpid()}.json")
            with open(path + ".tmp", "w") as f:
                json.dump(pids, f)
            os.replace(path + ".tmp", path)
            self.started = time.monotonic()

        def execute(self):
            behaviour = self.parameters["behaviour"]
            if not os.path.exists(os.path.join(self.parameters["pids_dir"], "go")):
                return  # the test has not seen the grandchildren running yet
            if behaviour == "crash" and time.monotonic() - self.started > 1:
                os._exit(3)
            if behaviour == "hang":
                time.sleep(1000)

        def cleanup(self):
            if self.parameters["behaviour"] == "slow_cleanup":
                time.sleep(1000)
"""
CONFIG = "parameters: {interval: 0.2, behaviour: none}\npvs: {outputs: {VALUE: {type: int}}}\n"


def running(pid: int) -> bool:
    """A live (non-zombie) `sleep 1001` with this pid: pid reuse cannot fool it."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X") and cmdline.split(b"\0")[:2] == [b"sleep", b"1001"]


def cgroups_writable() -> bool:
    tree = CgroupTree.create()
    if tree is None:
        return False
    tree.remove_all()
    return True


MODES = [
    pytest.param("cgroup", marks=pytest.mark.skipif(not cgroups_writable(),
                                                    reason="no writable cgroup v2 hierarchy here")),
    pytest.param("subreaper"),
]


def daemon_args(mode: str) -> list[str]:
    return ["--grace-period", "1", "--backoff-initial", "0.5", "--heartbeat-interval", "0.5"] + (
        ["--no-worker-cgroups"] if mode == "subreaper" else [])


class Scene:
    """One daemon, one spawner plugin per exit path, the grandchildren each worker started."""

    def __init__(self, daemon: Daemon, api: httpx.Client, root: Path) -> None:
        self.daemon, self.api, self.root = daemon, api, root
        repo = Repo(root / "spawner-repo").write({"spawner.py": SPAWNER, "config.yaml": CONFIG})
        repo.commit()
        self.url = repo.url

    def add(self, name: str, behaviour: str = "none", **parameters: Any) -> tuple[int, list[int]]:
        """Add a spawner; its worker pid and that worker's three grandchildren, seen running
        before its behaviour (a crash, a hang) is let loose: under load the add and the look
        at them can take longer than the crash's second or the watchdog's 1.5 s."""
        pids_dir = self.root / name
        pids_dir.mkdir()
        body = {"name": name, "git_url": self.url,
                "parameters": {"pids_dir": str(pids_dir), "behaviour": behaviour, **parameters}}
        response = self.api.post("/plugins", json=body)
        assert response.status_code == 201, response.text
        seen = self.grandchildren(name)
        (pids_dir / "go").touch()
        return seen

    def grandchildren(self, name: str) -> tuple[int, list[int]]:
        record = wait_until(lambda: (r := self.api.get(f"/plugins/{name}").json())["pid"] and r,
                            what=f"{name} to have a worker")
        pid_file = self.root / name / f"{record['pid']}.json"
        pids = wait_until(lambda: pid_file.exists() and json.loads(pid_file.read_text()),
                          what=f"{name}'s grandchildren")
        assert all(running(p) for p in pids), pids
        return record["pid"], pids


def assert_gone(pids: list[int], what: str) -> None:
    wait_until(lambda: not any(running(p) for p in pids), timeout=15, what=f"grandchildren gone after {what}")


@pytest.fixture(params=MODES)
def scene(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Scene]:
    with Daemon(tmp_path / "data", *daemon_args(request.param)).serving() as daemon, daemon.client() as api:
        yield Scene(daemon, api, tmp_path)


@pytest.mark.slow
def test_no_grandchild_survives_any_exit_path_of_its_worker(scene: Scene) -> None:
    api = scene.api
    _, stopped = scene.add("stopped")
    _, deleted = scene.add("deleted", behaviour="slow_cleanup")
    crash_worker, crashed = scene.add("crasher", behaviour="crash")
    _, hung = scene.add("hung", behaviour="hang", watchdog=1.5)
    killed_worker, killed = scene.add("killed")

    assert api.post("/plugins/stopped/stop").status_code == 200
    assert_gone(stopped, "a clean stop")

    assert api.delete("/plugins/deleted").status_code == 200  # cleanup() sleeps: SIGKILL after the grace
    assert_gone(deleted, "a cleanup past the grace period")

    wait_until(lambda: api.get("/plugins/crasher").json()["restarts"] >= 1, what="the crash")
    assert_gone(crashed, "a crash")

    wait_until(lambda: api.get("/plugins/hung").json()["restarts"] >= 1, what="the watchdog kill")
    assert "watchdog" in api.get("/plugins/hung").json()["last_error"]
    assert_gone(hung, "a watchdog kill")

    os.kill(killed_worker, signal.SIGKILL)
    wait_until(lambda: api.get("/plugins/killed").json()["restarts"] >= 1, what="kill -9 noticed")
    assert_gone(killed, "kill -9 of the worker")
    _, second = scene.grandchildren("killed")  # the restarted worker has its own

    for name in ("crasher", "hung", "killed"):
        assert api.delete(f"/plugins/{name}").status_code == 200
    assert_gone(second, "delete after a restart")
    assert crash_worker not in worker_pids(scene.daemon.data_dir)


@pytest.mark.slow
def test_no_grandchild_survives_the_daemon(scene: Scene) -> None:
    """SIGTERM of the daemon, then (restarted on the same data) kill -9 of the daemon."""
    _, first = scene.add("survivor")
    assert scene.daemon.terminate() == 0
    assert_gone(first, "SIGTERM of the daemon")

    scene.daemon.start()
    _, second = scene.grandchildren("survivor")  # restored from the registry, new grandchildren
    scene.daemon.kill9()
    wait_until(lambda: not worker_pids(scene.daemon.data_dir), what="workers to notice the daemon is gone")
    assert_gone(second, "kill -9 of the daemon")
    scene.daemon.start()  # so the fixture's SIGTERM has a daemon to stop


@pytest.mark.slow
def test_a_stale_cgroup_of_a_killed_daemon_is_removed_at_the_next_start(tmp_path: Path) -> None:
    if not cgroups_writable():
        pytest.skip("no writable cgroup v2 hierarchy here")
    daemon = Daemon(tmp_path / "data", *daemon_args("cgroup"))
    try:
        daemon.start()
        assert daemon.proc is not None
        dead_pid = daemon.proc.pid
        tree = CgroupTree.create()
        assert tree is not None
        stale = tree.base.parent / f"iochost-{dead_pid}"
        tree.remove_all()
        assert stale.is_dir()
        daemon.kill9()
        daemon.start()
        wait_until(lambda: not stale.exists(), what="the stale cgroup to be pruned")
    finally:
        daemon.cleanup()


def test_kill_descendants_ends_a_whole_subreaped_tree(tmp_path: Path) -> None:
    """The worker's last act, in a process of its own: every descendant ends, including
    ones in a new session whose parent already exited."""
    script = textwrap.dedent("""
        import json, subprocess, sys
        from iochost.proctree import kill_descendants, set_child_subreaper
        assert set_child_subreaper()
        a = subprocess.Popen(["sleep", "1001"])
        b = subprocess.Popen(["sh", "-c", "sleep 1001 & sleep 1001 & wait"], start_new_session=True)
        c = subprocess.run([sys.executable, "-c", "import subprocess; print(subprocess.Popen("
                            "['sleep', '1001'], start_new_session=True, "
                            "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid)"],
                           capture_output=True, text=True)
        print(json.dumps([a.pid, b.pid, int(c.stdout)]), flush=True)
        sys.stdin.readline()
        print(kill_descendants(), flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        direct = json.loads(proc.stdout.readline())

        def sleeps() -> list[int]:
            return [info.pid for info in process_table().values()
                    if info.ppid in (proc.pid, direct[1]) and running(info.pid)]

        tree = wait_until(lambda: len(found := sleeps()) == 4 and found, what="four sleeps")
        assert direct[2] in tree  # the orphan re-parented to the subreaper
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert int(proc.stdout.readline()) >= 5  # 4 sleeps and the sh
        assert not any(running(pid) for pid in tree)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
