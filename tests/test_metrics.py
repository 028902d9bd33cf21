"""``GET /metrics`` end to end: a real `iochost serve` with tokens, a task and a job added
from git, job runs that succeed and fail, a worker killed with SIGKILL; the scrape parsed
with prometheus_client's own parser and checked against what the REST API and /proc say."""

from __future__ import annotations

import os
import re
import secrets
import signal
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from daemon_harness import Daemon, add, bearer, wait_until, worker_pids
from gitrepos import plugin_repo
from iochost.api.prometheus import UNMATCHED, RouteTemplates
from iochost.supervisor.runs import RUN_OUTCOMES, RunLedger
from iochost.supervisor.states import LISTED, State
from sample_plugins import TICKER, TICKER_CONFIG

READ_TOKEN = "rd-" + secrets.token_hex(16)
ADMIN_TOKEN = "ad-" + secrets.token_hex(16)

VERDICT = """
    from iochost import JobBase, JobResult

    class Verdict(JobBase):
        def initialize(self):
            pass

        def execute(self):
            ok = bool(self.parameters["succeed"])
            return JobResult(success=ok, message="passed" if ok else "failed on purpose")
"""
VERDICT_CONFIG = "parameters: {succeed: true}\npvs: {outputs: {DONE: {type: int}}}\n"

Samples = dict[str, list[Sample]]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("metrics")
    d = Daemon(root / "data", "--backoff-initial", "1", "--heartbeat-interval", "0.5",
               env={"IOCHOST_READ_TOKEN": READ_TOKEN, "IOCHOST_ADMIN_TOKEN": ADMIN_TOKEN})
    with d.serving():
        yield d


@pytest.fixture(scope="module")
def admin(daemon: Daemon) -> Iterator[httpx.Client]:
    with daemon.client(timeout=90, token=ADMIN_TOKEN) as client:
        yield client


@pytest.fixture(scope="module")
def story(daemon: Daemon, admin: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What an operator did before the scrapes: a task and a job added, the job run once
    with success and once with failure, the task's worker killed with SIGKILL and back."""
    repos = tmp_path_factory.mktemp("metrics-repos")
    add(admin, "ticker", plugin_repo(repos, "ticker", TICKER, TICKER_CONFIG))
    add(admin, "verdict", plugin_repo(repos, "verdict", VERDICT, VERDICT_CONFIG))
    outcomes = []
    for succeed in (True, False):
        run = admin.post("/jobs/verdict/run", json={"parameters": {"succeed": succeed}})
        assert run.status_code == 200, run.text
        outcomes.append(run.json()["state"])
    assert outcomes == ["succeeded", "failed"]

    killed = admin.get("/plugins/ticker").json()["pid"]
    assert killed in worker_pids(daemon.data_dir, "ticker")
    os.kill(killed, signal.SIGKILL)
    back = wait_until(lambda: (r := admin.get("/plugins/ticker").json())["state"] == "running"
                      and r["pid"] != killed and r, timeout=30, what="ticker restarted after SIGKILL")
    assert back["restarts"] >= 1
    return {"killed_pid": killed, "runs": Counter(outcomes)}


def scrape(daemon: Daemon, token: str = READ_TOKEN) -> Samples:
    response = httpx.get(daemon.url + "/metrics", headers=bearer(token), timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The one sample of ``name`` whose labels include ``labels``; None if there is none."""
    found = [s.value for s in samples.get(name, []) if labels.items() <= s.labels.items()]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    return {s.labels[label]: s.value for s in samples.get(name, [])}


def statm_rss(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# -- access ------------------------------------------------------------------------------------------
def test_metrics_take_the_read_token(daemon: Daemon) -> None:
    for headers in ({}, bearer("wrong-" + READ_TOKEN), {"Authorization": f"Basic {READ_TOKEN}"}):
        refused = httpx.get(daemon.url + "/metrics", headers=headers, timeout=10)
        assert refused.status_code == 401, (headers, refused.text)
        assert refused.json()["code"] == "UNAUTHORIZED" and "iochost_" not in refused.text
    assert scrape(daemon, READ_TOKEN) and scrape(daemon, ADMIN_TOKEN)
    assert httpx.get(daemon.url + "/api/v1/metrics", headers=bearer(READ_TOKEN), timeout=10).status_code == 404


def test_openmetrics_when_prometheus_asks_for_it(daemon: Daemon) -> None:
    accept = "application/openmetrics-text;version=1.0.0;q=0.6,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
    response = httpx.get(daemon.url + "/metrics", headers={**bearer(READ_TOKEN), "Accept": accept}, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert response.text.endswith("# EOF\n") and "iochost_plugins{" in response.text


def test_daemon_identity_and_readiness(daemon: Daemon, admin: httpx.Client) -> None:
    samples = scrape(daemon)
    assert value(samples, "iochost_build_info", version=admin.get("/health").json()["version"]) == 1
    assert value(samples, "iochost_ready") == 1
    # The fork server's pool (test_scale waits on it): ready members of both kinds, once it is full.
    def pool_full() -> Samples | None:
        now = scrape(daemon)
        idle = {kind: value(now, "iochost_fork_server_idle_members", kind=kind) for kind in ("warm", "cold")}
        return now if idle == {"warm": 2, "cold": 1} else None

    full = wait_until(pool_full, timeout=30, what="the fork server's pool full")
    assert {sample.labels["kind"] for sample in full["iochost_fork_server_idle_members"]} == {"warm", "cold"}
    # The daemon's own process, from prometheus_client's process collector.
    started = value(samples, "process_start_time_seconds")
    assert started is not None and started <= datetime.now(timezone.utc).timestamp()
    rss = value(samples, "process_resident_memory_bytes")
    assert rss is not None and 0.5 < rss / statm_rss(daemon.proc.pid) < 2


# -- the supervisor's state -----------------------------------------------------------------------------
@pytest.mark.slow
def test_plugins_by_state_match_the_listing(daemon: Daemon, admin: httpx.Client, story: dict[str, Any]) -> None:
    def agreeing() -> tuple[Counter[str], dict[str, float]] | None:
        before = Counter(p["state"] for p in admin.get("/plugins").json()["plugins"])
        gauge = by_label(scrape(daemon), "iochost_plugins", "state")
        after = Counter(p["state"] for p in admin.get("/plugins").json()["plugins"])
        return (after, gauge) if before == after else None

    listed, gauge = wait_until(agreeing, timeout=10, what="a listing that holds still")
    # every state a listed plugin can be in, zeros included; the same states /health counts: a deleted
    # plugin is gone, so neither has "deleted"
    health = admin.get("/health").json()["plugins"]
    assert set(gauge) == {state.value for state in LISTED} == set(health) - {"total"}
    assert State.DELETED.value not in gauge
    assert {state: int(count) for state, count in gauge.items() if count} == dict(listed)
    assert listed["running"] == 2


def test_restart_counter_counts_the_kill_and_never_goes_down(daemon: Daemon, admin: httpx.Client,
                                                            story: dict[str, Any]) -> None:
    samples = scrape(daemon)
    restarts = value(samples, "iochost_plugin_restarts_total", plugin="ticker", kind="task")
    assert restarts is not None and restarts >= 1
    assert restarts == admin.get("/plugins/ticker").json()["restarts"]
    assert value(samples, "iochost_plugin_restarts_total", plugin="verdict", kind="job") == 0
    # An operator's restart resets the record's crash count (the backoff's), not the counter.
    restarted = admin.post("/plugins/ticker/restart")
    assert restarted.status_code == 200 and restarted.json()["restarts"] == 0
    assert value(scrape(daemon), "iochost_plugin_restarts_total", plugin="ticker", kind="task") == restarts


def test_job_runs_per_outcome(daemon: Daemon, admin: httpx.Client, story: dict[str, Any]) -> None:
    runs = by_label(scrape(daemon), "iochost_job_runs_total", "outcome")
    assert set(runs) == set(RUN_OUTCOMES) == {"succeeded", "failed", "cancelled"}
    assert {outcome: int(n) for outcome, n in runs.items()} == {"succeeded": story["runs"]["succeeded"],
                                                                "failed": story["runs"]["failed"], "cancelled": 0}
    listed = Counter(run["state"] for run in admin.get("/jobs/verdict/runs").json()["runs"])
    assert {outcome: int(n) for outcome, n in runs.items() if n} == dict(listed)
    assert not any(s.labels["plugin"] == "ticker" for s in scrape(daemon).get("iochost_job_runs_total", []))


def test_worker_rss_for_every_running_plugin(daemon: Daemon, admin: httpx.Client, story: dict[str, Any]) -> None:
    plugins = [p for p in admin.get("/plugins").json()["plugins"] if p["state"] == "running"]
    assert {p["name"] for p in plugins} == {"ticker", "verdict"}
    rss = by_label(scrape(daemon), "iochost_worker_rss_bytes", "plugin")
    for plugin in plugins:
        assert plugin["pid"] in worker_pids(daemon.data_dir, plugin["name"])
        measured = statm_rss(plugin["pid"])
        assert rss[plugin["name"]] > 0 and 0.8 < rss[plugin["name"]] / measured < 1.25, (plugin["name"], measured)
    assert story["killed_pid"] not in {p["pid"] for p in plugins}
    assert rss.get("iochost", 0) > 0  # the daemon's own status IOC is a worker too


def test_a_stopped_plugin_has_no_worker_memory(daemon: Daemon, admin: httpx.Client, story: dict[str, Any]) -> None:
    assert admin.post("/plugins/verdict/stop").json()["state"] == "stopped"
    try:
        samples = scrape(daemon)
        assert "verdict" not in by_label(samples, "iochost_worker_rss_bytes", "plugin")
        assert value(samples, "iochost_plugins", state="stopped") == 1
        assert value(samples, "iochost_job_runs_total", plugin="verdict", outcome="failed") == 1  # kept
    finally:
        assert admin.post("/plugins/verdict/start").json()["state"] == "running"


# -- REST requests ----------------------------------------------------------------------------------------
def test_requests_are_counted_by_route_template(daemon: Daemon, admin: httpx.Client, story: dict[str, Any]) -> None:
    before = scrape(daemon)
    with daemon.client(timeout=30, token=READ_TOKEN) as reader:
        for _ in range(5):  # FastAPI's routes
            assert reader.get("/plugins/ticker").status_code == 200
            assert reader.get("/plugins/verdict").status_code == 200
        for _ in range(7):  # the fast lane
            assert reader.get("/plugins").status_code == 200
        assert reader.get("/plugins/nobody").status_code == 404
        assert reader.get("/no/such/path").status_code == 404
    after = scrape(daemon)

    def delta(name: str, **labels: str) -> float:
        return (value(after, name, **labels) or 0) - (value(before, name, **labels) or 0)

    one = "/api/v1/plugins/{name}"
    assert delta("iochost_http_requests_total", method="GET", route=one, status="200") == 10
    assert delta("iochost_http_requests_total", method="GET", route=one, status="404") == 1
    assert delta("iochost_http_request_duration_seconds_count", method="GET", route=one) == 11
    assert delta("iochost_http_requests_total", method="GET", route="/api/v1/plugins", status="200") == 7
    assert delta("iochost_http_request_duration_seconds_count", method="GET", route="/api/v1/plugins") == 7
    assert delta("iochost_http_requests_total", method="GET", route=UNMATCHED, status="404") == 1
    assert delta("iochost_http_requests_total", method="GET", route="/metrics", status="200") == 1  # `before`

    # Every route label is a template of the API, never a raw path: no plugin name, no run id.
    schema_paths = set(httpx.get(daemon.url + "/openapi.json", timeout=10).json()["paths"])
    counted = ("iochost_http_requests_total", "iochost_http_request_duration_seconds_count")
    routes = {s.labels["route"] for name in counted for s in after[name]}
    assert one in routes and "/metrics" in routes and "/api/v1/jobs/{name}/run" in routes
    assert routes <= schema_paths | {UNMATCHED, "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
    assert not [route for route in routes if re.search(r"ticker|verdict|nobody|such|[0-9a-f]{32}", route)]


# -- the pieces, without a daemon -----------------------------------------------------------------------
def test_job_run_counts_survive_the_ledger_dropping_old_runs() -> None:
    """The ledger keeps the last ``keep`` runs; the counter behind iochost_job_runs_total
    must still count every run, or it would go down."""
    ledger = RunLedger("job", keep=2)
    now = datetime.now(timezone.utc)
    for i, success in enumerate([True, False, True, True]):
        ledger.accepted(f"run{i}", "api", {}, now)
        ledger.finished(f"run{i}", False, {"success": success}, now)
    assert len(ledger.all()) == 2
    assert ledger.finished_total == {"succeeded": 3, "failed": 1}
    assert ledger.finished("run3", False, {"success": True}, now) is None  # a second finish counts nothing
    assert sum(ledger.finished_total.values()) == 4


def test_route_templates() -> None:
    routes = RouteTemplates(["/api/v1/plugins", "/api/v1/plugins/{name}", "/api/v1/jobs/{name}/runs/{run_id}"])
    assert routes.match("/api/v1/plugins") == "/api/v1/plugins"
    assert routes.match("/api/v1/plugins/ticker") == "/api/v1/plugins/{name}"
    assert routes.match("/api/v1/jobs/j/runs/0123abcd") == "/api/v1/jobs/{name}/runs/{run_id}"
    assert routes.match("/api/v1/plugins/ticker/extra") == UNMATCHED
    assert routes.match("/api/v1/plugins/") == UNMATCHED
