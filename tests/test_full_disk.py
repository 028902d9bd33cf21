"""A full data directory (issue 29, item 6): an operation answers success only once what it
changed is durable; otherwise 507 STORAGE_FULL, and nothing changed.

The real ``iochost serve`` runs with ``--data-dir`` on a small tmpfs that the test fills
with a file of its own. On a full disk stop, delete, start and add answer 507 naming the
path and the OS error, and leave every plugin as it was (the worker, its PVs over CA, the
registry, the data dir); a daemon restart shows the registry agrees. Once the file is
removed the daemon recovers by itself (``/health`` and ``/metrics`` clear) and the same
operations succeed, again across a restart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import wait_for
from daemon_harness import Daemon, add, delete, snapshot, wait_until, worker_pids
from gitrepos import git, plugin_repo
from sample_plugins import TICKER, TICKER_CONFIG
from small_disk import fill, small_disk  # noqa: F401 - small_disk: a fixture

# A prefix of this module's own: the session's CA channels to an earlier module's daemon PVs
# (IOCHT:IOCHOST:HEALTH) would wait on libca's reconnect governor before finding this daemon
PREFIX = "IOCHTDISK"

# Writes a line of output (into its log file, DATA_DIR/logs/NAME.log) every 50 ms.
CHATTY = """
    from iochost import TaskBase

    class Chatty(TaskBase):
        def initialize(self):
            self.n = 0

        def execute(self):
            self.n += 1
            print("line", self.n, "x" * 200, flush=True)

        def cleanup(self):
            pass
"""
CHATTY_CONFIG = "parameters: {interval: 0.05}\npvs: {outputs: {N: {type: int}}}\n"


def storage_full(response: httpx.Response, data: Path) -> dict[str, Any]:
    """The answer is 507 STORAGE_FULL naming a path in the data dir and the OS's reason."""
    assert response.status_code == 507, response.text
    body = response.json()
    assert body["code"] == "STORAGE_FULL", body
    assert str(data) in body["message"] and "No space left on device" in body["message"], body
    return body


def plugin(api: httpx.Client, name: str) -> dict[str, Any]:
    response = api.get(f"/plugins/{name}")
    assert response.status_code == 200, response.text
    return response.json()


def registered(data: Path) -> dict[str, str]:
    """Name -> desired state, as the registry file says."""
    import json

    return {name: entry["desired_state"]
            for name, entry in json.loads((data / "registry.json").read_text())["plugins"].items()}


def storage_metric(daemon: Daemon) -> float:
    text = httpx.get(daemon.url + "/metrics", timeout=30).text
    lines = [line for line in text.splitlines() if line.startswith("iochost_storage_full ")]
    assert len(lines) == 1, text[-2000:]
    return float(lines[0].split()[1])


def states(api: httpx.Client) -> dict[str, str]:
    return {p["name"]: p["state"] for p in api.get("/plugins").json()["plugins"]}


@pytest.mark.slow
def test_full_disk_answers_507_changes_nothing_and_recovers(small_disk: Path, tmp_path: Path, ca: Any) -> None:
    data = small_disk
    repo = plugin_repo(tmp_path, "tick", TICKER, TICKER_CONFIG)
    chatty = plugin_repo(tmp_path, "chatty", CHATTY, CHATTY_CONFIG)
    daemon = Daemon(data, "--prefix", PREFIX)
    try:
        daemon.start()
        with daemon.client() as api:
            add(api, "victim", repo)
            add(api, "gone", chatty)
            gone_log = data / "logs" / "gone.log"
            wait_until(lambda: gone_log.exists() and gone_log.stat().st_size > 0, what="gone's output in its log")
            add(api, "idle", repo, auto_start=False)
            pid = plugin(api, "victim")["pid"]
            assert registered(data) == {"victim": "running", "gone": "running", "idle": "stopped"}

            # -- the disk is full: every change answers 507 and changes nothing ----------------------
            filler = fill(data)
            wait_until(lambda: f"cannot write {gone_log}" in daemon.log(), what="the daemon to note gone's lost output")
            before = snapshot(daemon)
            storage_full(api.post("/plugins/victim/stop"), data)
            record = plugin(api, "victim")
            assert (record["state"], record["desired_state"], record["pid"]) == ("running", "running", pid)
            assert ca.caget(f"{PREFIX}:VICTIM:VALUE", timeout=10) > 0  # its IOC still serves
            storage_full(api.delete("/plugins/gone"), data)
            assert plugin(api, "gone")["state"] == "running"
            storage_full(api.post("/plugins/idle/start"), data)
            assert plugin(api, "idle")["state"] == "stopped"
            storage_full(api.post("/plugins/victim/restart"), data)  # its new worker would need room
            assert plugin(api, "victim")["pid"] == pid
            storage_full(api.post("/plugins", json={"name": "newcomer", "git_url": repo.url}), data)
            assert api.get("/plugins/newcomer").status_code == 404
            assert snapshot(daemon) == before  # no checkout, registry change or worker left or lost
            health = api.get("/health").json()
            assert health["status"] == "degraded", health
            assert health["storage"]["path"].startswith(str(data)), health
            assert "No space left on device" in health["storage"]["error"], health
            assert storage_metric(daemon) == 1
            # the worker's output it cannot store is dropped, said once: the daemon's log is not flooded
            assert daemon.log().count(f"cannot write {gone_log}") == 1, daemon.log()[-3000:]
            assert plugin(api, "gone")["state"] == "running"
            wait_for(lambda: ca.caget(f"{PREFIX}:IOCHOST:HEALTH", datatype=ca.DBR_STRING, timeout=5) == "DEGRADED",
                     timeout=30, what="the HEALTH PV to say DEGRADED")

        # -- a restart shows what the registry says: none of the refused changes -------------------
        filler.unlink()  # the restart itself writes (the daemon's own IOC, worker specs)
        wait_until(lambda: f"{gone_log} is written again" in daemon.log(), what="gone's log to be written again")
        assert daemon.terminate() == 0, daemon.log()[-3000:]
        daemon.start()
        with daemon.client() as api:
            wait_until(lambda: states(api) == {"victim": "running", "gone": "running", "idle": "stopped"},
                       timeout=120, what="the restored plugins")
            assert registered(data) == {"victim": "running", "gone": "running", "idle": "stopped"}

            # -- full again, then freed: the daemon recovers by itself, no restart -----------------------
            filler = fill(data)
            storage_full(api.post("/plugins/victim/stop"), data)
            assert api.get("/health").json()["storage"] is not None
            filler.unlink()
            wait_until(lambda: api.get("/health").json()["storage"] is None, timeout=60,
                       what="/health to clear the storage problem")
            assert storage_metric(daemon) == 0
            wait_for(lambda: ca.caget(f"{PREFIX}:IOCHOST:HEALTH", datatype=ca.DBR_STRING, timeout=5) == "OK",
                     timeout=30, what="the HEALTH PV to say OK")
            response = api.post("/plugins/victim/stop")
            assert response.status_code == 200 and response.json()["state"] == "stopped", response.text
            assert not worker_pids(data, "victim")
            response = api.delete("/plugins/gone")
            assert response.status_code == 200, response.text
            response = api.post("/plugins/idle/start")
            assert response.status_code == 200 and response.json()["state"] == "running", response.text
            add(api, "newcomer", repo)
            assert registered(data) == {"victim": "stopped", "idle": "running", "newcomer": "running"}

        # -- and what was answered 200 survives a restart -------------------------------------------
        assert daemon.terminate() == 0, daemon.log()[-3000:]
        daemon.start()
        with daemon.client() as api:
            wait_until(lambda: states(api) == {"victim": "stopped", "idle": "running", "newcomer": "running"},
                       timeout=120, what="the restored plugins")
            assert api.get("/health").json()["status"] == "ok"
        assert daemon.terminate() == 0, daemon.log()[-3000:]
    finally:
        daemon.cleanup()


@pytest.mark.slow
def test_a_daemon_restarted_on_a_full_disk_serves_its_own_ioc_once_space_returns(
        small_disk: Path, tmp_path: Path, ca: Any) -> None:
    """The daemon's own IOC ({PREFIX}:IOCHOST:*) is generated from the settings at every
    start; with settings that changed and no room to write them, it is retried with
    backoff, not given up: freeing space is all it takes, no second restart. The plugins
    start meanwhile."""
    data = small_disk
    repo = plugin_repo(tmp_path, "tick", TICKER, TICKER_CONFIG)
    daemon = Daemon(data, "--prefix", PREFIX)
    try:
        daemon.start()
        with daemon.client() as api:
            add(api, "victim", repo)
        assert daemon.terminate() == 0, daemon.log()[-3000:]
        filler = fill(data)
        daemon.args += ["--epics-table-rows", "7"]  # its config.yaml must be written anew
        daemon.start()
        with daemon.client() as api:
            wait_until(lambda: plugin(api, "victim")["state"] == "running", timeout=60, what="victim running")
            wait_until(lambda: "iochost-system" in daemon.log() or "own IOC" in daemon.log(), timeout=60,
                       what="the daemon IOC's write refused")
            filler.unlink()
            assert wait_for(lambda: ca.caget(f"{PREFIX}:IOCHOST:ROWS", timeout=5), timeout=90,
                            what="the daemon's IOC serving its new settings") == 7
            assert "the daemon's own IOC cannot be written" in daemon.log()
        assert daemon.terminate() == 0, daemon.log()[-3000:]
    finally:
        daemon.cleanup()


# -- the pure parts, on top ------------------------------------------------------------------------

def test_a_registry_write_the_full_disk_refuses_changes_nothing(small_disk: Path) -> None:
    """On a real full file system: STORAGE_FULL naming the file and the OS error; memory and
    file as before; an unchanged entry is not written at all; once space is back it writes."""
    from iochost.errors import ErrorCode, IochostError
    from iochost.store import Registry
    from test_store_registry import entry

    path = small_disk / "registry.json"
    registry = Registry(path)
    assert registry.put(entry("one"))
    before = path.read_bytes()
    filler = fill(small_disk)
    for change in (lambda: registry.put(entry("two")), lambda: registry.put(entry("one", desired_state="stopped")),
                   lambda: registry.remove("one"), registry.flush):
        with pytest.raises(IochostError) as refused:
            change()
        assert refused.value.code is ErrorCode.STORAGE_FULL
        assert refused.value.details["path"] == str(path) and "No space left on device" in refused.value.message
        assert path.read_bytes() == before
        assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "registry.json"]
        assert [(e.name, e.desired_state) for e in registry.entries()] == [("one", "running")]
    assert registry.put(entry("one", updated_at="2030-01-01T00:00:00Z")) is False  # nothing to write
    assert registry.remove("absent") is False
    filler.unlink()
    assert registry.remove("one") is True and registry.entries() == []


def test_the_supervisor_asks_the_lifecycle_before_saving() -> None:
    """``refusal`` is exactly what ``handle`` raises for each request in each state, so no
    request the lifecycle refuses is saved first; ``with_desired`` is ``_set_desired``'s entry."""
    from iochost.errors import IochostError
    from iochost.supervisor import lifecycle_types as t
    from iochost.supervisor.states import State
    from test_lifecycle import EPOCH, feed, reach

    requests = (t.StartRequested(), t.StopRequested(), t.RestartRequested(), t.DeleteRequested(),
                t.UpgradeRequested())
    for state in set(State) - {State.DELETED}:
        for request in requests:
            lc = reach(state)
            refused = lc.refusal(request)
            try:
                feed(lc, request)
            except IochostError as exc:
                assert refused is not None and refused.message == exc.message, (state, request)
            else:
                assert refused is None, (state, request)
    lc = reach(State.RUNNING)
    stopped = lc.with_desired("stopped", EPOCH)
    assert lc.with_desired("running", EPOCH) is lc.entry and stopped.desired_state == "stopped"
    feed(lc, t.StopRequested())
    assert lc.entry.model_dump(exclude={"updated_at"}) == stopped.model_dump(exclude={"updated_at"})
    upgrading = reach(State.RUNNING)
    feed(upgrading, t.UpgradeRequested())
    assert upgrading.refusal(t.StopRequested()) is not None and upgrading.refusal(t.DeleteRequested()) is None


def leave_free(folder: Path, free: int) -> Path:
    """Fill the file system, then give back ``free`` bytes (tmpfs frees whole pages)."""
    filler = fill(folder)
    with open(filler, "r+b") as handle:
        handle.truncate(max(0, filler.stat().st_size - free))
    return filler


@pytest.mark.slow
def test_an_add_and_an_upgrade_pinned_to_a_commit_answer_507_at_every_amount_of_room_left(
        small_disk: Path, tmp_path: Path) -> None:
    """A pinned commit is cloned, then checked out: with room for the clone but not for the
    work tree, git's checkout fails too (its stderr often empty, its own file unwritable).
    With 0, 4 KiB, 8 KiB ... left, until the operation fits: every answer is 507
    STORAGE_FULL that changed nothing, or success; never FETCH_FAILED (the source is fine)."""
    data = small_disk
    repo = plugin_repo(tmp_path, "tick", TICKER, TICKER_CONFIG)
    v1 = git(repo.path, "rev-parse", "HEAD")
    repo.write({"tick.py": TICKER + "    # v2\n"})
    v2 = repo.commit("v2")
    daemon = Daemon(data, "--prefix", PREFIX, "--add-rate", "off")  # one add per 4 KiB of room
    try:
        daemon.start()
        with daemon.client() as api:
            add(api, "pinned", repo, commit=v1)  # a registry file: the daemon's recheck rewrites it, same text
            delete(api, "pinned")
            for operation in ("add", "upgrade"):
                answers = []
                for free in range(0, 4 << 20, 4096):
                    filler = leave_free(data, free)
                    before = snapshot(daemon)
                    response = (api.post("/plugins", json={"name": "pinned", "git_url": repo.url, "commit": v1})
                                if operation == "add" else api.post("/plugins/pinned/upgrade", json={"commit": v2}))
                    answers.append(response.status_code)
                    if response.status_code in (200, 201):
                        filler.unlink()
                        break
                    assert response.status_code == 507, (operation, free, response.text)
                    body = response.json()  # the OS's reason, or git's words for the file it could not write
                    assert body["code"] == "STORAGE_FULL" and f"cannot write {data / 'tmp'}: " in body["message"], body
                    assert snapshot(daemon) == before, (operation, free)
                    filler.unlink()
                assert answers[0] == 507 and answers[-1] in (200, 201), (operation, answers)
            assert plugin(api, "pinned")["source"]["commit"] == v2
            assert registered(data) == {"pinned": "running"}
            assert list((data / "tmp").iterdir()) == []
        assert daemon.terminate() == 0, daemon.log()[-3000:]
        daemon.start()
        with daemon.client() as api:
            wait_until(lambda: states(api) == {"pinned": "running"}, timeout=120, what="pinned restored")
            assert plugin(api, "pinned")["source"]["commit"] == v2
            assert git(data / "plugins" / "pinned", "rev-parse", "HEAD") == v2
        assert daemon.terminate() == 0, daemon.log()[-3000:]
    finally:
        daemon.cleanup()


def test_git_words_for_a_file_it_could_not_write_are_a_storage_problem_not_the_sources() -> None:
    """git often leaves the OS's reason out; a line the server sent ("remote:") is not ours."""
    from iochost.store.gitcmd import local_write_failure

    line = "error: failed to write new configuration file /data/tmp/p-1/checkout/.git/config.lock"
    failure = local_write_failure(f"Cloning into '/data/tmp/p-1/checkout'...\n{line}\n")
    assert failure is not None and str(failure) == f"git: {line}"
    assert local_write_failure("fatal: unable to write new index file\n") is not None
    assert local_write_failure("remote: error: unable to write sha1 filename\nfatal: early EOF\n") is None
    assert local_write_failure("fatal: repository 'file:///nowhere' does not exist\n") is None
