"""Plugin lifecycle end to end on a daemon with short start and stop timeouts: an initialize that never returns fails
the add and leaves nothing, one hanging after a restart is degraded and retried, and delete or a failed start
removes the rotated logs.

The real `iochost serve`, plugins added from real git repositories by file:// URL.
"""

from __future__ import annotations

import concurrent.futures
import json
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from conftest import free_port
from daemon_harness import Daemon, add, delete, wait_until
from gitrepos import plugin_repo
from test_lifecycle_e2e import code_of, leftovers, log_files, purge

# initialize() waits for as long as the file named by `marker` exists; `chatter` lines of
# 100 bytes go to stdout first.
HANGING_INIT = """
    import os
    import sys
    import time
    from iochost import TaskBase

    class Hanging(TaskBase):
        def initialize(self):
            for i in range(int(self.parameters.get("chatter", 0))):
                sys.stdout.write(f"chatter {i:06d} " + "x" * 84 + "\\n")
            sys.stdout.flush()
            while os.path.exists(self.parameters["marker"]):
                time.sleep(0.1)

        def execute(self):
            pass

        def cleanup(self):
            pass
"""

CHATTY = """
    import sys
    from iochost import TaskBase

    class Chatty(TaskBase):
        def initialize(self):
            for i in range(3000):  # 300 KB: the log rotates at 64 KiB
                sys.stdout.write(f"chatter {i:06d} " + "x" * 84 + "\\n")
            sys.stdout.flush()

        def execute(self):
            pass

        def cleanup(self):
            pass
"""

CHATTER_LINES = 3000  # 300 KB of stdout


def hanging_config(marker: Path, **parameters: Any) -> str:
    """A short grace period, so stopping a worker stuck in initialize() takes 1 s, not 10."""
    params = {"interval": 0.5, "grace_period": 1, "marker": str(marker), **parameters}
    return f"parameters: {json.dumps(params)}\n"


@pytest.fixture(scope="module")
def strict_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """start_timeout 5 s (spawn -> plugin started) and plugin logs rotating at 64 KiB. Its
    tests use no CA client, so it gets a CA search port of its own: it must not take the
    search datagrams of the other daemon on the shared port."""
    root = tmp_path_factory.mktemp("lifecycle-strict")
    with Daemon(root / "data", "--start-timeout", "5", "--backoff-initial", "1", "--heartbeat-interval", "0.5",
                "--log-rotate-bytes", "65536", "--add-rate", "off", "--ca-port", str(free_port())).serving() as d:
        yield d


@pytest.fixture(scope="module")
def strict_api(strict_daemon: Daemon) -> Iterator[httpx.Client]:
    with strict_daemon.client() as client:
        yield client


# -- initialize() that never returns ---------------------------------------------------------------

@pytest.mark.slow
def test_initialize_that_never_returns_fails_the_add_and_leaves_nothing(strict_api, strict_daemon, repos):
    """While initialize() runs the plugin is "starting", never "running"; after start_timeout
    the add answers 502 WORKER_START_FAILED naming initialize, and nothing of it is left."""
    name, marker = "hanginit", repos / "hold"
    marker.touch()
    repo = plugin_repo(repos, name, HANGING_INIT, hanging_config(marker), module="hanging")
    seen: list[Any] = []
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            t0 = time.monotonic()
            pending = pool.submit(strict_api.post, "/plugins", json={"name": name, "git_url": repo.url})
            while not pending.done():
                r = strict_api.get(f"/plugins/{name}")
                seen.append(r.json()["state"] if r.status_code == 200 else r.status_code)
                time.sleep(0.2)
            response = pending.result()
            elapsed = time.monotonic() - t0
        answer = f"answer {response.status_code} {response.text[:300]}"
        assert "starting" in seen and "running" not in seen, f"states during the add: {seen}; {answer}"
        assert response.status_code == 502 and code_of(response) == "WORKER_START_FAILED", answer
        assert "initialize" in response.json()["message"], answer
        assert 5 <= elapsed < 30, f"the add answered after {elapsed:.1f} s"
        assert strict_api.get(f"/plugins/{name}").status_code == 404
        assert leftovers(strict_daemon.data_dir, name) == []
    finally:
        marker.unlink(missing_ok=True)
        purge(strict_api, name)


@pytest.mark.slow
def test_initialize_hanging_after_restart_is_degraded_and_retried(strict_api, strict_daemon, repos):
    """A plugin that stops returning from initialize() on restart is never "running": /health
    is degraded, it is retried with backoff (restarts grows, last_error names initialize),
    and once initialize() returns again it is running and /health ok."""
    name, marker = "hangrestart", repos / "hold"
    repo = plugin_repo(repos, name, HANGING_INIT, hanging_config(marker), module="hanging")
    try:
        record = add(strict_api, name, repo)
        assert record["state"] == "running"
        assert strict_api.get("/health").json()["status"] == "ok"
        marker.touch()
        restarted = strict_api.post(f"/plugins/{name}/restart")
        if restarted.status_code == 200:
            assert restarted.json()["state"] != "running", "restart answered running while initialize() hangs"
        else:
            assert restarted.status_code == 502 and code_of(restarted) == "WORKER_START_FAILED", restarted.text
        first = strict_api.get(f"/plugins/{name}").json()["restarts"]
        deadline = time.monotonic() + 30
        while True:  # until a retry happened (and at that sample too): never running, /health degraded
            plugin = strict_api.get(f"/plugins/{name}").json()
            health = strict_api.get("/health").json()
            assert plugin["state"] != "running", plugin["transitions"][-3:]
            assert health["status"] == "degraded", health
            if plugin["restarts"] > first:
                break
            assert time.monotonic() < deadline, f"no retry in 30 s: restarts {first} -> {plugin['restarts']}"
            time.sleep(0.3)
        assert "initialize" in (plugin["last_error"] or ""), plugin["last_error"]
        marker.unlink()
        wait_until(lambda: strict_api.get(f"/plugins/{name}").json()["state"] == "running", timeout=20,
                   what="running once initialize() returns")
        wait_until(lambda: strict_api.get("/health").json()["status"] == "ok", timeout=5, what="/health ok")
    finally:
        marker.unlink(missing_ok=True)
        purge(strict_api, name)


# -- teardown leaves nothing -----------------------------------------------------------------------

def test_delete_removes_rotated_logs(strict_api, strict_daemon, repos):
    """A plugin whose output rotated its log leaves no logs/NAME.log* file once deleted."""
    name = "chatty"
    try:
        add(strict_api, name, plugin_repo(repos, name, CHATTY, "parameters: {interval: 1}\n", module="chatty"))
        wait_until(lambda: f"{name}.log.1" in log_files(strict_daemon.data_dir, name), timeout=10,
                   what="the log to rotate")
        delete(strict_api, name)
        assert log_files(strict_daemon.data_dir, name) == []
        assert leftovers(strict_daemon.data_dir, name) == []
    finally:
        purge(strict_api, name)


@pytest.mark.slow
def test_failed_start_removes_rotated_logs(strict_api, strict_daemon, repos):
    """An add that fails after its worker printed enough to rotate its log leaves no
    logs/NAME.log* file."""
    name, marker = "chattyfail", repos / "hold"
    marker.touch()
    repo = plugin_repo(repos, name, HANGING_INIT, hanging_config(marker, chatter=CHATTER_LINES), module="hanging")
    rotated = False
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(strict_api.post, "/plugins", json={"name": name, "git_url": repo.url})
            while not pending.done():
                rotated = rotated or f"{name}.log.1" in log_files(strict_daemon.data_dir, name)
                time.sleep(0.1)
            response = pending.result()
        assert response.status_code == 502 and code_of(response) == "WORKER_START_FAILED", \
            f"{response.status_code} {response.text[:300]}"
        assert rotated, "the worker's log never rotated during the add"
        assert log_files(strict_daemon.data_dir, name) == []
        assert leftovers(strict_daemon.data_dir, name) == []
    finally:
        marker.unlink(missing_ok=True)
        purge(strict_api, name)

