"""The daemon end to end: real `iochost serve`, real git repositories added by file:// URL,
real worker processes, real CA (libca) and PVA (pvxs) clients on loopback."""

from __future__ import annotations

import concurrent.futures
import json
import re
from datetime import datetime

import numpy
import pytest
from cothread.cadef import Disconnected

from conftest import EXAMPLES, ca_search, wait_for
from daemon_harness import Daemon, EventStream, add, delete, snapshot, wait_until, worker_pids
from gitrepos import Repo, plugin_repo
from sample_plugins import SLOW_JOB, SLOW_JOB_CONFIG, TICKER, TICKER_CONFIG, gated_ticker

CRASHER = """
    import os
    from iochost import TaskBase

    class Crasher(TaskBase):
        def initialize(self):
            self.n = 0

        def execute(self):
            self.n += 1
            if self.n == 3:
                os._exit(1)

        def cleanup(self):
            pass
"""

STUCK = """
    from iochost import TaskBase

    class Stuck(TaskBase):
        def initialize(self):
            self.n = 0

        def execute(self):
            self.n += 1
            while self.n > 2:
                pass

        def cleanup(self):
            pass
"""


@pytest.mark.slow
def test_three_plugins_added_at_runtime_all_pvs_on_ca_and_pva(api, daemon, repos, ca, pva):
    records = []
    for name in ("alpha", "beta", "gamma"):
        repo = plugin_repo(repos, name, TICKER, TICKER_CONFIG, module="ticker")
        records.append(add(api, name, repo))
    for record in records:
        assert record["state"] == "running" and record["kind"] == "task" and record["class_name"] == "Ticker"
        assert re.fullmatch(r"[0-9a-f]{40}", record["source"]["commit"])
        assert record["pid"] in worker_pids(daemon.data_dir)
        assert f"IOCHT:{record['name'].upper()}:VALUE" in record["pvs"]
    pids = {r["pid"] for r in records}
    assert len(pids) == 3  # one soft IOC process per plugin
    for record in records:
        prefix = record["pv_prefix"]
        wait_for(lambda: ca.caget(prefix + ":VALUE", timeout=3) > 1, timeout=20, what=f"{prefix} over CA")
        gain = ca.caget(prefix + ":GAIN", format=ca.FORMAT_CTRL, timeout=3)
        assert (gain, gain.units) == (2.5, "V")
        assert pva.get(prefix + ":VALUE", timeout=5).value >= 1
        for pv in record["pvs"]:
            ca.caget(pv, timeout=3)  # every PV, defaults included, resolves
    listed = api.get("/plugins").json()
    assert {"alpha", "beta", "gamma"} <= {p["name"] for p in listed["plugins"]}
    assert listed["count"] == len(listed["plugins"])
    for name in ("alpha", "beta", "gamma"):
        delete(api, name)


@pytest.mark.slow
def test_delete_takes_pvs_off_the_network_and_name_can_be_reused(api, daemon, repos, ca):
    repo = plugin_repo(repos, "ephemeral", TICKER, TICKER_CONFIG, module="ticker")
    record = add(api, "ephemeral", repo)
    pv = record["pv_prefix"] + ":VALUE"
    wait_for(lambda: ca.caget(pv, timeout=3) >= 1, timeout=20, what="PV up")
    checkout = daemon.data_dir / "plugins" / "ephemeral"
    assert checkout.is_dir()
    assert ca_search(record["pvs"]) == set(record["pvs"])
    delete(api, "ephemeral")
    assert record["pid"] not in worker_pids(daemon.data_dir)
    assert not checkout.exists()
    assert ca_search(record["pvs"]) == set()  # no answer for any of its PVs any more
    with pytest.raises((ca.ca_nothing, Disconnected)):
        ca.caget(pv, timeout=2)
    assert api.get("/plugins/ephemeral").json()["code"] == "PLUGIN_NOT_FOUND"
    again = add(api, "ephemeral", repo)
    assert again["pid"] != record["pid"]
    wait_for(lambda: ca.caget(pv, timeout=3) >= 1, timeout=20, what="PV back after re-add")
    delete(api, "ephemeral")


@pytest.mark.slow
def test_crashing_worker_is_restarted_with_backoff(api, repos):
    repo = plugin_repo(repos, "crasher", CRASHER, "parameters: {interval: 0.1}\n")
    add(api, "crasher", repo)
    record = wait_until(lambda: (r := api.get("/plugins/crasher").json())["restarts"] >= 3 and r,
                        timeout=40, what="three restarts")
    assert "exited with code 1" in record["last_error"]
    crashes = [t["at"] for t in record["transitions"] if t["to_state"] == "crashed"]
    starts = [t for t in record["transitions"] if t["to_state"] == "starting" and "restart" in t["reason"]]
    assert len(crashes) >= 2 and len(starts) >= 2
    # Backoff doubles: the pause before restart #2 is longer than the one before #1.
    from datetime import datetime

    def gap(i: int) -> float:
        crash = datetime.fromisoformat(crashes[i])
        start = datetime.fromisoformat(starts[i]["at"])
        return (start - crash).total_seconds()

    assert gap(0) >= 0.9 and gap(1) >= 1.8 and gap(1) > gap(0)
    delete(api, "crasher")


@pytest.mark.slow
def test_stuck_plugin_is_killed_by_watchdog_and_restarted(api, repos, ca):
    repo = plugin_repo(repos, "stuck", STUCK, "parameters: {interval: 0.1, watchdog: 2}\n")
    first = add(api, "stuck", repo)
    record = wait_until(lambda: (r := api.get("/plugins/stuck").json())["restarts"] >= 1 and r,
                        timeout=30, what="watchdog restart")
    assert "watchdog" in record["last_error"] and "execute()" in record["last_error"]
    # before the kill, the worker wrote where it was stuck: the busy loop in execute()
    log = "\n".join(api.get("/plugins/stuck/logs").json()["lines"])
    assert "Thread 0x" in log and re.search(r'stuck\.py", line 1[01] in execute', log), log[-6000:]
    wait_until(lambda: api.get("/plugins/stuck").json()["state"] == "running", timeout=20, what="running again")
    assert api.get("/plugins/stuck").json()["pid"] != first["pid"]
    delete(api, "stuck")


def test_concurrent_adds_of_one_name_one_wins(api, repos):
    repo = plugin_repo(repos, "twin", TICKER, TICKER_CONFIG, module="ticker")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(api.post, "/plugins", json={"name": "twin", "git_url": repo.url}) for _ in range(2)]
        responses = [f.result() for f in futures]
    assert sorted(r.status_code for r in responses) == [201, 409]
    conflict = next(r for r in responses if r.status_code == 409).json()
    assert conflict["code"] == "PLUGIN_EXISTS" and "twin" in conflict["message"]
    delete(api, "twin")


def test_job_run_lock_and_cancel(api, repos, ca):
    repo = plugin_repo(repos, "slowjob", SLOW_JOB, SLOW_JOB_CONFIG, module="slow")
    record = add(api, "slowjob", repo)
    assert record["kind"] == "job"
    done = api.post("/jobs/slowjob/run", json={"parameters": {"steps": 2}})
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["state"] == "succeeded"
    stamped = body["result"].pop("timestamp")  # iocmng's JobResult field: when the result was made
    assert body["result"] == {"success": True, "data": {"steps": 2}, "message": "2 steps"}
    assert datetime.fromisoformat(stamped).tzinfo is None, stamped  # iocmng's format: local time, no zone
    assert ca.caget(record["pv_prefix"] + ":STATUS", datatype=ca.DBR_STRING, timeout=3) == "SUCCESS"

    started = api.post("/jobs/slowjob/run?wait=false", json={"parameters": {"steps": 200}})
    assert started.status_code == 202
    run_id = started.json()["run_id"]
    locked = api.post("/jobs/slowjob/run", json={})
    assert locked.status_code == 409
    assert locked.json()["code"] == "EXECUTION_LOCKED" and locked.json()["active_run_id"] == run_id
    mismatch = api.post(f"/jobs/slowjob/runs/{body['run_id']}/cancel")
    assert mismatch.status_code == 409 and mismatch.json()["code"] == "RUN_ID_MISMATCH"
    assert api.get(f"/jobs/slowjob/runs/{run_id}").json()["state"] == "running"
    cancelled = api.post(f"/jobs/slowjob/runs/{run_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    runs = api.get("/jobs/slowjob/runs").json()
    assert [r["state"] for r in runs["runs"][:2]] == ["cancelled", "succeeded"]
    assert all(r["finished_at"] for r in runs["runs"])
    assert api.get("/jobs/slowjob/runs/nope").json()["code"] == "RUN_NOT_FOUND"
    # iocmng clients POST with no body at all.
    assert api.post("/jobs/slowjob/run").json()["result"]["message"] == "3 steps"
    delete(api, "slowjob")


def test_failed_validation_returns_every_error_and_leaves_nothing(api, daemon, repos):
    repo = Repo(repos / "broken")
    repo.write({
        "plugin.py": "from iochost import TaskBase\n\n"
                     "class Broken(TaskBase):\n    def initialize(self):\n        pass\n",
        "helpers.py": "def oops(:\n    pass\n",
        "config.yaml": "parameters: {interval: 1}\npvs:\n  outputs:\n    X: {type: float, unti: V}\n",
    })
    repo.commit()
    before = snapshot(daemon)
    response = api.post("/plugins", json={"name": "broken", "git_url": repo.url})
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "VALIDATION_FAILED"
    stages = {(e["stage"], e["file"]) for e in body["errors"]}
    assert ("config", "config.yaml") in stages and ("syntax", "helpers.py") in stages
    syntax = next(e for e in body["errors"] if e["stage"] == "syntax")
    assert syntax["line"] == 1
    config = next(e for e in body["errors"] if e["stage"] == "config")
    assert "unti" in config["message"] and config["line"] == 4
    assert snapshot(daemon) == before
    assert api.get("/plugins/broken").status_code == 404


def test_fetch_errors_name_the_problem(api, repos):
    repo = plugin_repo(repos, "fetchme", TICKER, TICKER_CONFIG, module="ticker")
    cases = [
        ({"git_url": repo.url, "branch": "no-such-branch"}, "no-such-branch"),
        ({"git_url": repo.url, "commit": "0123456789abcdef0123456789abcdef01234567"}, "0123456789abcdef"),
        ({"git_url": (repos / "missing").as_uri()}, "missing"),
    ]
    for fields, gist in cases:
        response = api.post("/plugins", json={"name": "fetchme", **fields})
        assert response.status_code in (400, 502), response.text
        body = response.json()
        assert body["code"] == "FETCH_FAILED" and gist in body["message"]
    assert api.get("/plugins/fetchme").status_code == 404


def test_branch_tag_commit_and_path(api, repos):
    repo = Repo(repos / "mono")
    repo.copy_dir(EXAMPLES / "diagnostics", "jobs/diag")
    first = repo.commit("v1")
    repo.tag("v1.0")
    repo.write({"jobs/diag/NOTES.md": "second commit\n"})
    second = repo.commit("v2")
    by_tag = add(api, "diag-tag", repo, branch="v1.0", path="jobs/diag")
    assert by_tag["source"]["commit"] == first and by_tag["source"]["path"] == "jobs/diag"
    pinned = add(api, "diag-pin", repo, commit=first[:10], path="jobs/diag", auto_start=False)
    assert pinned["source"]["commit"] == first and pinned["state"] == "stopped" and pinned["pid"] is None
    head = add(api, "diag-head", repo, path="jobs/diag")
    assert head["source"]["commit"] == second
    for name in ("diag-tag", "diag-pin", "diag-head"):
        delete(api, name)


def test_stop_start_restart(api, repos, ca):
    repo = plugin_repo(repos, "cycler", TICKER, TICKER_CONFIG, module="ticker")
    record = add(api, "cycler", repo)
    pv = record["pv_prefix"] + ":VALUE"
    wait_for(lambda: ca.caget(pv, timeout=3) >= 1, timeout=20, what="up")
    stopped = api.post("/plugins/cycler/stop").json()
    assert stopped["state"] == "stopped" and stopped["desired_state"] == "stopped" and stopped["pid"] is None
    assert ca_search([pv]) == set()
    started = api.post("/plugins/cycler/start").json()
    assert started["state"] == "running" and started["pid"]
    again = api.post("/plugins/cycler/start")
    assert again.status_code == 409 and again.json()["code"] == "INVALID_STATE"
    restarted = api.post("/plugins/cycler/restart").json()
    assert restarted["state"] == "running" and restarted["pid"] != started["pid"]
    wait_for(lambda: ca.caget(pv, timeout=3) >= 1, timeout=20, what="up after restart")
    delete(api, "cycler")


def test_iocmng_aliases(api, repos):
    job_repo = plugin_repo(repos, "aliasjob", SLOW_JOB, SLOW_JOB_CONFIG, module="slow")
    wrong = api.post("/tasks", json={"name": "aliasjob", "git_url": job_repo.url})
    assert wrong.status_code == 422 and wrong.json()["code"] == "WRONG_KIND"
    assert api.post("/jobs", json={"name": "aliasjob", "git_url": job_repo.url}).status_code == 201
    task_repo = plugin_repo(repos, "aliastask", TICKER, TICKER_CONFIG, module="ticker")
    assert api.post("/tasks", json={"name": "aliastask", "git_url": task_repo.url}).status_code == 201
    assert [p["name"] for p in api.get("/jobs").json()["plugins"]] == ["aliasjob"]
    assert "aliastask" in [p["name"] for p in api.get("/tasks").json()["plugins"]]
    assert api.delete("/tasks/aliasjob").json()["code"] == "WRONG_KIND"
    assert api.delete("/jobs/aliasjob").status_code == 200
    assert api.delete("/tasks/aliastask").status_code == 200


def test_request_errors_have_codes(api):
    bad = api.post("/plugins", json={"name": "bad name!", "git_url": "x"})
    assert bad.status_code == 422 and bad.json()["code"] == "INVALID_REQUEST"
    assert any(e["field"] == "name" for e in bad.json()["errors"])
    unknown = api.post("/plugins", json={"name": "ok", "git_url": "x", "colour": "red"})
    assert unknown.status_code == 422 and any(e["field"] == "colour" for e in unknown.json()["errors"])
    both = api.post("/plugins", json={"name": "ok", "git_url": "x", "local_path": "/tmp"})
    assert both.status_code == 422 and "exactly one" in both.json()["message"]
    malformed = api.post("/plugins", content=b"{not json", headers={"content-type": "application/json"})
    assert malformed.status_code == 422 and malformed.json()["code"] == "INVALID_REQUEST"
    assert api.get("/nowhere").json()["code"] == "ROUTE_NOT_FOUND"
    assert api.get("/plugins/nobody").json()["code"] == "PLUGIN_NOT_FOUND"


@pytest.mark.slow
def test_event_loop_stays_responsive_during_a_slow_add(api, repos):
    """While validation's import is held (the gate), the daemon keeps answering other requests."""
    gate = repos / "gate"
    repo = plugin_repo(repos, "slowimport", gated_ticker(gate), TICKER_CONFIG, module="ticker")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(api.post, "/plugins", json={"name": "slowimport", "git_url": repo.url})
        try:
            wait_until(lambda: (gate / "importing").exists(), timeout=60, what="validation importing the plugin")
            for _ in range(5):
                assert api.get("/health", timeout=10).status_code == 200
                assert api.get("/plugins/slowimport", timeout=10).json()["state"] == "validating"
            assert not pending.done()
        finally:
            (gate / "go").touch()
        assert pending.result(timeout=90).status_code == 201
    delete(api, "slowimport")


def test_health_counts(api, repos):
    health = api.get("/health").json()
    assert health["status"] in ("ok", "degraded") and health["version"]
    total = health["plugins"]["total"]
    repo = plugin_repo(repos, "counted", TICKER, TICKER_CONFIG, module="ticker")
    add(api, "counted", repo)
    health = api.get("/health").json()
    assert health["plugins"]["total"] == total + 1 and health["plugins"]["running"] >= 1
    delete(api, "counted")


@pytest.mark.slow
def test_kill9_leaves_no_worker_and_restart_restores_at_same_commit(tmp_path, ca):
    data = tmp_path / "data"
    daemon = Daemon(data)
    try:
        daemon.start()
        with daemon.client() as api:
            ticker = plugin_repo(tmp_path, "keep", TICKER, TICKER_CONFIG, module="ticker")
            kept = add(api, "keep", ticker)
            job = plugin_repo(tmp_path, "keepjob", SLOW_JOB, SLOW_JOB_CONFIG, module="slow")
            add(api, "keepjob", job)
            add(api, "parked", ticker, auto_start=False)
        ticker.write({"ticker.py": TICKER.replace("self.n += 1", "self.n += 100")})
        ticker.commit("newer commit the restore must not pick up")
        assert len(worker_pids(data)) == 3  # two plugins + the daemon's own status IOC
        daemon.kill9()
        wait_until(lambda: worker_pids(data) == [], timeout=10, what="workers to exit after kill -9")
        assert ca_search(kept["pvs"], timeout=0.5) == set()  # the endpoint died with the daemon

        # The origin may be gone too: restore needs no network.
        import shutil
        shutil.rmtree(ticker.path)
        daemon.start()  # the API answers at once; the restore goes on in the background
        with daemon.client() as api:
            wait_until(lambda: api.get("/health/ready").status_code == 200, what="the restore to finish")
            wait_until(lambda: api.get("/plugins/keep").json()["state"] == "running", what="keep restored")
            restored = api.get("/plugins/keep").json()
            assert restored["source"]["commit"] == kept["source"]["commit"]
            assert api.get("/plugins/parked").json()["state"] == "stopped"
            wait_until(lambda: api.get("/plugins/keepjob").json()["state"] == "running", what="job restored")
            value = wait_for(lambda: ca.caget(kept["pv_prefix"] + ":VALUE", timeout=3), timeout=20, what="PV")
            assert value < 100  # the pinned commit's code, not the newer one
        assert daemon.terminate() == 0
        assert worker_pids(data) == []
    finally:
        daemon.cleanup()


@pytest.mark.slow
def test_sigterm_stops_workers_and_exits_zero(tmp_path, ca):
    # the Quick start's prefix: the interlock example links to IOCHOST:TEMPERATURE-MONITOR:READING
    daemon = Daemon(tmp_path / "data", "--examples", str(EXAMPLES), "--prefix", "IOCHOST")
    try:
        daemon.start()
        with daemon.client() as api:
            wait_until(lambda: api.get("/health").json()["plugins"]["running"] == 4, what="examples running")
            names = sorted(p["name"] for p in api.get("/plugins").json()["plugins"])
        assert names == ["beam-shutter", "diagnostics", "over-temperature-interlock", "temperature-monitor"]
        # a link between two plugins of one daemon: the interlock follows the monitor's READING
        interlock, monitor = "IOCHOST:OVER-TEMPERATURE-INTERLOCK:", "IOCHOST:TEMPERATURE-MONITOR:"
        wait_for(lambda: list(numpy.atleast_1d(ca.caget(interlock + "CONN_INP", timeout=3))) == [1], timeout=20,
                 what="the interlock's link connected")
        wait_for(lambda: ca.caget(interlock + "temperature", timeout=3) == ca.caget(monitor + "READING", timeout=3),
                 timeout=10, what="the interlock's temperature = the monitor's READING")
        assert len(worker_pids(daemon.data_dir)) == 5  # four examples + the daemon's status IOC
        assert daemon.terminate() == 0
        assert worker_pids(daemon.data_dir) == []
        registry = json.loads((daemon.data_dir / "registry.json").read_text())
        assert len(registry["plugins"]) == 4  # desired state kept for the next start
        assert "temperature-monitor" in daemon.log()
    finally:
        daemon.cleanup()


def test_enable_zero_shows_as_paused(api, repos, ca):
    record = add(api, "pausable", plugin_repo(repos, "pausable", TICKER, TICKER_CONFIG, module="ticker"))
    ca.caput(record["pv_prefix"] + ":ENABLE", 0, wait=True, timeout=5)
    paused = wait_until(lambda: (r := api.get("/plugins/pausable").json())["state"] == "paused" and r,
                        what="state paused")
    assert paused["status"] == "PAUSED"
    ca.caput(record["pv_prefix"] + ":ENABLE", 1, wait=True, timeout=5)
    wait_until(lambda: api.get("/plugins/pausable").json()["state"] == "running", what="running again")
    transitions = [(t["from_state"], t["to_state"]) for t in api.get("/plugins/pausable").json()["transitions"]]
    assert ("running", "paused") in transitions and ("paused", "running") in transitions
    delete(api, "pausable")


def test_events_stream_transitions_and_runs(api, daemon, repos):
    with EventStream(daemon) as stream:
        add(api, "evjob", plugin_repo(repos, "evjob", SLOW_JOB, SLOW_JOB_CONFIG, module="slow"))
        api.post("/jobs/evjob/run", json={"parameters": {"steps": 1}})
        delete(api, "evjob")
        states = stream.states("evjob", timeout=30)
    assert stream.content_type is not None and stream.content_type.startswith("text/event-stream")
    assert states == ["pending", "fetching", "validating", "starting", "running", "stopping", "stopped", "deleted"]
    runs = [e["data"] for e in stream.events if e["plugin"] == "evjob" and e["type"] == "run"]
    assert runs[-1]["state"] == "succeeded" and runs[-1]["result"]["message"] == "1 steps"


def test_daemon_log_is_json_lines(daemon):
    lines = [line for line in daemon.log().splitlines() if line.strip()]
    assert lines
    for line in lines:
        entry = json.loads(line)
        assert {"time", "level", "logger", "message"} <= set(entry)


def test_the_daemon_loads_neither_softioc_nor_numpy(api, daemon, repos):
    """One plugin = one soft IOC process: the daemon serving plugins must not have loaded
    softioc, EPICS's libraries or numpy (a worker module pulling them in costs every
    daemon ~12 MB and breaks the fork server's rule). Read from the running daemon's maps."""
    add(api, "maps-probe", plugin_repo(repos, "maps-probe", TICKER, TICKER_CONFIG))
    try:
        maps = open(f"/proc/{daemon.proc.pid}/maps").read()
        loaded = {line.split()[-1] for line in maps.splitlines() if line.split()[-1].startswith("/")}
        offending = sorted(path for path in loaded
                           if any(part in path for part in ("/softioc/", "/epicscorelibs/", "/numpy/", "/pvxslibs/")))
        assert offending == [], offending
    finally:
        delete(api, "maps-probe")
