"""iocmng 2.7.9's fields in iochost's plugin records, /health and run answers, against a real
daemon, real workers and a real CA client.

The fields and their meaning are iocmng's (its api/bodies.py PluginInfoResponse and
HealthResponse, its PluginInfo.to_dict, its JobResult.to_dict), described here in our words:
``plugin_type`` ("task" or "job"), ``path`` (the plugin's folder in its repository),
``running`` (a task's loop runs), ``cycle_count`` (a task's cycles, its CYCLE_COUNT PV; none
for a job), ``tasks_count`` / ``jobs_count``, and a run result's ``timestamp``.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import wait_for
from daemon_harness import add, delete
from gitrepos import plugin_repo
from iochost.contract import messages as m
from iochost.supervisor import lifecycle_types as t
from iochost.supervisor.runs import RunLedger
from iochost.supervisor.states import State
from sample_plugins import SLOW_JOB, SLOW_JOB_CONFIG, TICKER, TICKER_CONFIG
from test_lifecycle import exited, feed, running, worker


def _record(api: httpx.Client, name: str) -> dict[str, Any]:
    response = api.get(f"/plugins/{name}")
    assert response.status_code == 200, response.text
    return response.json()


def _listed(api: httpx.Client, name: str) -> dict[str, Any]:
    """The plugin's entry in ``GET /plugins``: the fast lane's cached JSON, which must be live too."""
    return next(p for p in api.get("/plugins").json()["plugins"] if p["name"] == name)


def _cycles_over_ca(ca: Any, record: dict[str, Any]) -> int:
    return int(ca.caget(record["pv_prefix"] + ":CYCLE_COUNT", timeout=5))


@pytest.mark.slow
def test_cycle_count_and_running_follow_the_task(api: httpx.Client, repos: Path, ca: Any) -> None:
    """cycle_count grows over REST (the record, the cached list and /tasks) as the task cycles,
    equals CYCLE_COUNT over CA within a cycle while it runs and exactly once ENABLE=0 pauses it;
    running stays true while paused, turns false when stopped; a new worker's count is followed."""
    repo = plugin_repo(repos, "counter", TICKER, TICKER_CONFIG, module="ticker")
    record = add(api, "counter", repo, parameters={"interval": 1.0})  # a cycle is two heartbeats (0.5 s)
    assert (record["plugin_type"], record["git_url"], record["path"]) == ("task", repo.url, "")
    record = wait_for(lambda: (r := _record(api, "counter"))["state"] == "running" and r, timeout=60,
                      what="counter running")
    assert record["running"] is True

    wait_for(lambda: _record(api, "counter")["cycle_count"] >= 2, timeout=30, what="cycles over REST")
    wait_for(lambda: _listed(api, "counter")["cycle_count"] >= 3, timeout=30, what="cycles in the cached list")
    wait_for(lambda: next(p for p in api.get("/tasks").json()["plugins"] if p["name"] == "counter")
             ["cycle_count"] >= 4, timeout=30, what="cycles in /tasks")
    wait_for(lambda: abs(_record(api, "counter")["cycle_count"] - _cycles_over_ca(ca, record)) <= 1, timeout=30,
             what="REST's cycle_count within a cycle of CYCLE_COUNT")

    ca.caput(record["pv_prefix"] + ":ENABLE", 0, wait=True, timeout=5)
    paused = wait_for(lambda: (r := _record(api, "counter"))["state"] == "paused"
                      and r["cycle_count"] == _cycles_over_ca(ca, record) and r, timeout=30,
                      what="paused, REST's cycle_count = CYCLE_COUNT")
    assert paused["running"] is True  # ENABLE=0 pauses the loop, as iocmng's does; it does not end it
    counted = paused["cycle_count"]
    assert counted >= 4 and _listed(api, "counter")["cycle_count"] == counted

    stopped = api.post("/plugins/counter/stop")
    assert stopped.status_code == 200, stopped.text
    stopped_record = wait_for(lambda: (r := _record(api, "counter"))["state"] == "stopped" and r, timeout=60,
                              what="counter stopped")
    assert stopped_record["running"] is False and stopped_record["cycle_count"] == counted
    assert _listed(api, "counter")["running"] is False

    assert api.post("/plugins/counter/start").status_code == 200
    wait_for(lambda: _record(api, "counter")["state"] in ("running", "paused"), timeout=60, what="started again")
    wait_for(lambda: ca.caput(record["pv_prefix"] + ":ENABLE", 1, wait=True, timeout=5).ok, timeout=30,
             what="ENABLE=1 on the new worker")  # once CA has found it again; in case ENABLE=0 was kept
    wait_for(lambda: (r := _record(api, "counter"))["running"] is True
             and abs(r["cycle_count"] - _cycles_over_ca(ca, record)) <= 1, timeout=30,
             what="the new worker's cycle_count within a cycle of its CYCLE_COUNT")
    delete(api, "counter")


def test_a_job_has_no_cycles_and_its_result_a_timestamp(api: httpx.Client, repos: Path) -> None:
    """A job: plugin_type job, running and cycle_count null (iocmng shows them for tasks only);
    its run's result carries iocmng's four keys, the timestamp ISO 8601 local time without zone."""
    add(api, "stepper", plugin_repo(repos, "stepper", SLOW_JOB, SLOW_JOB_CONFIG, module="slow"))
    record = wait_for(lambda: (r := _record(api, "stepper"))["state"] == "running" and r, timeout=60,
                      what="stepper running")
    assert (record["plugin_type"], record["running"], record["cycle_count"]) == ("job", None, None)
    assert _listed(api, "stepper")["cycle_count"] is None

    for path in ("/jobs/stepper/run", "/plugins/stepper/run"):
        answer = api.post(path, json={"parameters": {"steps": 2}})
        assert answer.status_code == 200, answer.text
        run = answer.json()
        assert run["ok"] is True and set(run["result"]) == {"success", "data", "message", "timestamp"}
        stamp = datetime.fromisoformat(run["result"]["timestamp"])
        assert stamp.tzinfo is None  # as iocmng's datetime.now().isoformat()
        finished = datetime.fromisoformat(run["finished_at"]).astimezone().replace(tzinfo=None)
        assert stamp <= finished  # made in the worker before the daemon saw the run finish
    delete(api, "stepper")


@pytest.mark.slow
def test_health_counts_tasks_and_jobs(api: httpx.Client, repos: Path) -> None:
    """iocmng's tasks_count and jobs_count: every plugin of each kind, whatever its state."""
    before = api.get("/health").json()
    tasks, jobs = before["tasks_count"], before["jobs_count"]
    assert tasks + jobs == before["plugins"]["total"]
    add(api, "count-task", plugin_repo(repos, "count-task", TICKER, TICKER_CONFIG, module="ticker"))
    health = api.get("/health").json()
    assert (health["tasks_count"], health["jobs_count"]) == (tasks + 1, jobs)
    add(api, "count-job", plugin_repo(repos, "count-job", SLOW_JOB, SLOW_JOB_CONFIG, module="slow"),
        auto_start=False)
    health = api.get("/health").json()
    assert (health["tasks_count"], health["jobs_count"]) == (tasks + 1, jobs + 1)
    delete(api, "count-task")
    delete(api, "count-job")
    health = api.get("/health").json()
    assert (health["tasks_count"], health["jobs_count"]) == (tasks, jobs)


def test_the_record_counts_what_the_current_worker_reports() -> None:
    """The lifecycle (pure): cycle_count is the last heartbeat's, kept while stopped, 0 from a
    new worker's spawn until its first heartbeat; running only in running and paused; a job
    has neither. (The end-to-end test above cannot catch the moment before a first heartbeat.)"""
    lc = running()
    assert (lc.record().cycle_count, lc.record().running, lc.record().plugin_type) == (0, True, "task")
    worker(lc, m.Heartbeat(cycles=7))
    assert lc.record().cycle_count == 7
    worker(lc, m.StatusChanged(status="PAUSED", message="Paused (ENABLE=0)"))
    assert (lc.state, lc.record().running, lc.record().cycle_count) == (State.PAUSED, True, 7)
    feed(lc, t.StopRequested())
    exited(lc, 0)
    assert (lc.state, lc.record().running, lc.record().cycle_count) == (State.STOPPED, False, 7)
    feed(lc, t.StartRequested())
    assert (lc.state, lc.record().running, lc.record().cycle_count) == (State.STARTING, False, 0)
    job = running("job")
    worker(job, m.Heartbeat(cycles=0))
    assert (job.record().running, job.record().cycle_count, job.record().plugin_type) == (None, None, "job")


@pytest.mark.slow
def test_a_result_the_daemon_makes_is_stamped_too() -> None:
    """A run whose worker went away gets its result from the daemon: stamped with the end of
    the run, in the JobResult's format (local time, no zone), so ``result.timestamp`` is always there."""
    ledger = RunLedger("j", keep=5)
    start = datetime(2026, 1, 31, 13, 0, 0, tzinfo=timezone.utc)
    ledger.accepted("r1", "api", {}, start)
    end = start + timedelta(seconds=5, microseconds=250)
    run = ledger.abandon("the worker exited: killed", end)
    assert run is not None and run.result is not None
    assert run.result.timestamp == end.astimezone().replace(tzinfo=None).isoformat()
    ledger.accepted("r2", "api", {}, end)
    kept = ledger.finished("r2", False, {"success": True, "timestamp": "2026-01-31T14:05:09.123456"}, end)
    assert kept is not None and kept.result is not None and kept.result.timestamp == "2026-01-31T14:05:09.123456"
