"""Plugin lifecycle end to end, as a user sees it: the real `iochost serve`, plugins added
from real git repositories by file:// URL, every request over real HTTP, CA writes with libca.

Each test states one user-visible promise of the lifecycle (grace periods, job runs that
never wedge, terminal events of a failed add, cancelling an add, a plugin that never
finishes initialize(), run records that agree with themselves, teardown that leaves
nothing) and checks it through the REST API, the event stream and the daemon's data dir.

One module-scoped daemon, ``daemon`` (the harness's --grace-period 5); the tests needing
``strict_daemon`` (--start-timeout 5, logs rotating at 64 KiB) are in test_lifecycle_e2e_strict.py.
Every test deletes what it added, whatever happened, so the next one starts from a healthy daemon.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import random
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

from conftest import wait_for
from daemon_harness import Daemon, EventStream, add, delete, wait_until, worker_pids
from gitrepos import plugin_repo
from sample_plugins import SLOW_JOB, SLOW_JOB_CONFIG, TICKER, TICKER_CONFIG, gated_ticker

# -- plugins ---------------------------------------------------------------------------------------

SLOW_CLEANUP = """
    import time
    from pathlib import Path
    from iochost import TaskBase

    class SlowCleanup(TaskBase):
        def initialize(self):
            pass

        def execute(self):
            pass

        def cleanup(self):
            time.sleep(7)
            Path(self.parameters["marker"]).write_text("cleanup finished")
"""

QUICK_JOB = """
    import time
    from iochost import JobBase, JobResult

    class Quick(JobBase):
        def initialize(self):
            pass

        def execute(self):
            time.sleep(0.2)
            return JobResult(success=True, message="quick")
"""
QUICK_JOB_CONFIG = "pvs: {outputs: {DONE: {type: int}}}\n"

STUBBORN_JOB = """
    import time
    from pathlib import Path
    from iochost import JobBase, JobResult

    class Stubborn(JobBase):
        def initialize(self):
            pass

        def execute(self):
            Path(self.parameters["executing"]).touch()
            time.sleep(3)  # ignores cancel_requested: this run always finishes
            return JobResult(success=True, message="done")
"""


# -- helpers ---------------------------------------------------------------------------------------

def log_files(data_dir: Path, name: str) -> list[str]:
    """``logs/NAME.log`` and its rotated files."""
    return sorted(p.name for p in (data_dir / "logs").glob(f"{name}.log*"))


def leftovers(data_dir: Path, name: str) -> list[str]:
    """Everything of plugin ``name`` still on this host: workers, checkout, registry entry, logs."""
    left = [f"worker pid {pid}" for pid in worker_pids(data_dir, name)]
    for path in (data_dir / "plugins" / name, data_dir / "envs" / name):
        if path.exists():
            left.append(f"{path.relative_to(data_dir)}/")
    left += [f"tmp/{p.name}" for p in (data_dir / "tmp").glob(f"{name}-*")]
    registry = data_dir / "registry.json"
    if registry.exists() and name in json.loads(registry.read_text())["plugins"]:
        left.append("registry.json entry")
    left += [f"logs/{f}" for f in log_files(data_dir, name)]
    return left


def purge(api: httpx.Client, name: str) -> None:
    """Test teardown: the plugin is deleted if it exists, whatever the test left it in."""
    try:
        api.delete(f"/plugins/{name}")
    except httpx.HTTPError:
        pass


def timed(call: Callable[..., httpx.Response], *args: Any, **kwargs: Any) -> tuple[float, httpx.Response]:
    t0 = time.monotonic()
    response = call(*args, **kwargs)
    return time.monotonic() - t0, response


def code_of(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("code") if isinstance(body, dict) else None


def inconsistent_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs whose state and result disagree: finished without a result, or "succeeded"
    without success (or success in any other state)."""
    bad = []
    for run in runs:
        result = run.get("result")
        if run["state"] == "running":
            continue
        if result is None or (run["state"] == "succeeded") != bool(result["success"]):
            bad.append({k: run.get(k) for k in ("run_id", "origin", "state", "result")})
    return bad


# -- daemons ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """The harness's --grace-period 5; quick backoff and heartbeats; no add rate limit; an
    import held at its gate (add_in_background) is never timed out: the test ends it."""
    root = tmp_path_factory.mktemp("lifecycle")
    with Daemon(root / "data", "--backoff-initial", "1", "--heartbeat-interval", "0.5",
                "--add-rate", "off", "--import-timeout", "600").serving() as d:
        yield d


@pytest.fixture(scope="module")
def api(daemon: Daemon) -> Iterator[httpx.Client]:
    with daemon.client() as client:
        yield client


# -- grace periods ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_grace_period_in_config_yaml_lets_cleanup_finish_on_delete(api, repos):
    """`grace_period: 15` in config.yaml beats the daemon's 5 s: DELETE waits for a 7 s cleanup()."""
    name, marker = "grace-yaml", repos / "cleaned"
    config = f"parameters: {json.dumps({'interval': 0.5, 'grace_period': 15, 'marker': str(marker)})}\n"
    try:
        add(api, name, plugin_repo(repos, name, SLOW_CLEANUP, config, module="slowclean"))
        elapsed, response = timed(api.delete, f"/plugins/{name}")
        assert response.status_code == 200, response.text
        assert marker.exists(), f"cleanup() was cut short: DELETE answered after {elapsed:.1f} s, no marker"
        assert elapsed >= 7
    finally:
        purge(api, name)


@pytest.mark.slow
def test_grace_period_in_post_parameters_lets_cleanup_finish_on_stop(api, daemon, repos):
    """`parameters: {grace_period: 15}` in the POST body: POST /stop waits for a 7 s cleanup()."""
    name, marker = "grace-post", repos / "cleaned"
    try:
        add(api, name, plugin_repo(repos, name, SLOW_CLEANUP, "parameters: {interval: 0.5}\n", module="slowclean"),
            parameters={"grace_period": 15, "marker": str(marker)})
        elapsed, response = timed(api.post, f"/plugins/{name}/stop")
        assert response.status_code == 200, response.text
        assert response.json()["state"] == "stopped"
        assert marker.exists(), f"cleanup() was cut short: stop answered after {elapsed:.1f} s, no marker"
        assert elapsed >= 7
        assert worker_pids(daemon.data_dir, name) == []
    finally:
        purge(api, name)


@pytest.mark.slow
def test_top_level_grace_period_lets_cleanup_finish_on_delete(api, repos):
    """The POST body's own `grace_period: 15` field: DELETE waits for a 7 s cleanup()."""
    name, marker = "grace-top", repos / "cleaned"
    config = f"parameters: {json.dumps({'interval': 0.5, 'marker': str(marker)})}\n"
    try:
        add(api, name, plugin_repo(repos, name, SLOW_CLEANUP, config, module="slowclean"), grace_period=15)
        elapsed, response = timed(api.delete, f"/plugins/{name}")
        assert response.status_code == 200, response.text
        assert marker.exists(), f"cleanup() was cut short: DELETE answered after {elapsed:.1f} s, no marker"
        assert elapsed >= 7
    finally:
        purge(api, name)


# -- job runs never wedge --------------------------------------------------------------------------

def _storm(daemon: Daemon, name: str, run_pv: str, ca: Any, seed: int) -> list[str]:
    """30 REST runs from 8 threads (a third with wait=false), each fired together with a CA
    write RUN=1, so the two kinds of run keep racing for the idle job; returns every REST
    answer that is not 200/201/202 or 409 EXECUTION_LOCKED."""
    import cothread

    rng = random.Random(seed)
    problems: list[str] = []

    def rest_run(client: httpx.Client, i: int) -> None:
        wait = i % 3 != 0
        try:
            response = client.post(f"/jobs/{name}/run", params={"wait": "true" if wait else "false"}, json={})
        except httpx.TimeoutException:
            problems.append(f"run #{i} (wait={wait}): no answer within 30 s")
            return
        if response.status_code in (200, 201, 202):
            if response.status_code == 200 and inconsistent_runs([response.json()]):
                problems.append(f"run #{i}: inconsistent record {response.json()}")
        elif not (response.status_code == 409 and code_of(response) == "EXECUTION_LOCKED"):
            problems.append(f"run #{i} (wait={wait}): {response.status_code} {response.text[:200]}")

    with daemon.client(timeout=30) as client, concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = []
        for i in range(30):  # CA from this (the cothread) thread, REST from the pool's
            futures.append(pool.submit(rest_run, client, i))
            cothread.Sleep(rng.uniform(0, 0.004))  # sweep the phase between the two
            ca.caput(run_pv, 1, wait=True, timeout=10)
            cothread.Sleep(rng.uniform(0.22, 0.3))  # a 0.2 s run has ended: the next pair races for an idle job
        wait_for(lambda: all(f.done() for f in futures), timeout=150, what="every REST run to answer")
        for future in futures:
            future.result()
    return problems


@pytest.mark.slow
def test_job_runs_from_rest_and_ca_at_once_never_wedge(api, daemon, repos, ca):
    """REST runs (wait and no-wait) racing CA RUN=1 writes: every request answers promptly
    with a result or EXECUTION_LOCKED, the job is usable afterwards, and every run's state
    matches its result."""
    name = "stormjob"
    try:
        record = add(api, name, plugin_repo(repos, name, QUICK_JOB, QUICK_JOB_CONFIG, module="quick"))
        prefix = record["pv_prefix"]
        wait_for(lambda: ca.caget(prefix + ":STATUS", datatype=ca.DBR_STRING, timeout=3), timeout=20,
                 what="job PVs over CA")
        for round_ in range(3):
            problems = _storm(daemon, name, prefix + ":RUN", ca, seed=round_)
            assert problems == [], f"storm {round_ + 1}: {problems}"
            wait_until(lambda: not any(r["state"] == "running" for r in api.get(f"/jobs/{name}/runs").json()["runs"]),
                       timeout=30, what=f"no run left running after storm {round_ + 1}")
            after = api.post(f"/jobs/{name}/run", json={}, timeout=30)
            assert after.status_code == 200, f"storm {round_ + 1} left the job unusable: {after.text}"
            assert after.json()["state"] == "succeeded", after.text
            runs = api.get(f"/jobs/{name}/runs").json()["runs"]
            assert inconsistent_runs(runs) == [], f"after storm {round_ + 1}"
    finally:
        purge(api, name)


# -- a failed add ends with terminal events --------------------------------------------------------

def test_failed_validation_publishes_failed_then_deleted(api, daemon, repos):
    """An add refused by validation is seen on /events to end: failed (saying why), then deleted."""
    name = "badtype"
    config = "parameters: {interval: 1}\npvs:\n  outputs:\n    X: {type: quaternion}\n"
    repo = plugin_repo(repos, name, TICKER, config, module="ticker")
    with EventStream(daemon) as stream:
        response = api.post("/plugins", json={"name": name, "git_url": repo.url})
        assert response.status_code == 422 and code_of(response) == "VALIDATION_FAILED", response.text
        states = stream.states(name)
    assert states == ["pending", "fetching", "validating", "failed", "deleted"]
    failed = next(t for t in stream.transitions(name) if t["to_state"] == "failed")
    assert "validation" in failed["reason"].lower(), failed
    assert api.get(f"/plugins/{name}").status_code == 404


def test_failed_fetch_publishes_failed_then_deleted(api, daemon, repos):
    """An add whose git URL does not exist is seen on /events to end: failed, then deleted."""
    name = "nofetch"
    with EventStream(daemon) as stream:
        response = api.post("/plugins", json={"name": name, "git_url": (repos / "missing").as_uri()})
        assert code_of(response) == "FETCH_FAILED", response.text
        states = stream.states(name)
    assert states[0] == "pending" and states[-2:] == ["failed", "deleted"], states
    assert api.get(f"/plugins/{name}").status_code == 404


# -- an add in progress is visible, and can be deleted or stopped ----------------------------------

def _in_flight_state(api: httpx.Client, name: str) -> str:
    """The add's state, which GET /plugins/NAME and GET /plugins must agree on."""
    one = api.get(f"/plugins/{name}")
    assert one.status_code == 200, f"an add in progress is not visible: {one.status_code} {one.text}"
    state = one.json()["state"]
    assert state in ("fetching", "validating"), one.json()
    listed = {p["name"]: p["state"] for p in api.get("/plugins").json()["plugins"]}
    again = api.get(f"/plugins/{name}").json()["state"]
    assert listed.get(name) in (state, again), f"GET /plugins shows {listed.get(name)}, GET /plugins/{name} {state}"
    return state


@contextlib.contextmanager
def add_in_background(api: httpx.Client, name: str, repos: Path) -> Iterator[Callable[[], httpx.Response]]:
    """POST a GATED_TICKER as ``name`` from a thread; once its import holds validation, check
    it is visible alike on every route, and hand over a call that opens the gate and waits
    for the POST (the gate opens at the end in any case)."""
    gate = repos / f"{name}-gate"
    repo = plugin_repo(repos, name, gated_ticker(gate), TICKER_CONFIG, module="ticker")

    def added(open_gate: bool = True) -> httpx.Response:
        if open_gate:
            (gate / "go").touch()
        return pending.result(timeout=90)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(api.post, "/plugins", json={"name": name, "git_url": repo.url})
        try:
            wait_until(lambda: (gate / "importing").exists(), timeout=60, what="validation importing the plugin")
            _in_flight_state(api, name)
            yield added
        finally:
            (gate / "go").touch()


@pytest.mark.slow
def test_delete_during_add_cancels_it_and_leaves_nothing(api, daemon, repos):
    """DELETE of a plugin still validating answers 200 without waiting for its import (the
    probe is ended: the gate stays closed, and the import timeout here is 600 s), the add
    answers 409 ADD_CANCELLED, nothing of it is left, and the name can be added again."""
    name = "slowadd"
    try:
        with add_in_background(api, name, repos) as added_later:
            logs = api.get(f"/plugins/{name}/logs")
            assert logs.status_code == 200, logs.text
            deleted = api.delete(f"/plugins/{name}")
            assert deleted.status_code == 200, deleted.text
            added = added_later(open_gate=False)
            assert not (repos / f"{name}-gate" / "go").exists()
        assert added.status_code == 409 and code_of(added) == "ADD_CANCELLED", f"{added.status_code} {added.text}"
        assert "ended 1 process(es) its preparation was waiting on" in daemon.log()
        assert api.get(f"/plugins/{name}").status_code == 404
        assert leftovers(daemon.data_dir, name) == []
        again = plugin_repo(repos / "again", name, TICKER, TICKER_CONFIG, module="ticker")
        assert add(api, name, again)["state"] == "running"
        delete(api, name)
    finally:
        purge(api, name)


@pytest.mark.slow
def test_stop_during_add_stores_it_stopped(api, daemon, repos):
    """POST /stop of a plugin still validating answers 200 desired_state stopped; the add then
    answers 201 with the plugin stopped, and no worker was started."""
    name = "slowstop"
    try:
        with add_in_background(api, name, repos) as added_later:
            stopped = api.post(f"/plugins/{name}/stop")
            assert stopped.status_code == 200, stopped.text
            assert stopped.json()["desired_state"] == "stopped"
            added = added_later()
        assert added.status_code == 201, added.text
        record = added.json()
        assert (record["state"], record["desired_state"], record["pid"]) == ("stopped", "stopped", None)
        assert worker_pids(daemon.data_dir, name) == []
        assert api.get(f"/plugins/{name}").json()["state"] == "stopped"
    finally:
        purge(api, name)


# -- a run record agrees with itself ---------------------------------------------------------------

@pytest.mark.slow
def test_run_that_finishes_during_a_restart_is_succeeded(api, repos):
    """A run that ignores cancellation and finishes while a restart waits for it is
    "succeeded" with its result, not "cancelled" with success true."""
    name = "stubborn"
    try:
        add(api, name, plugin_repo(repos, name, STUBBORN_JOB, QUICK_JOB_CONFIG, module="stubborn"))
        executing = repos / "executing"
        started = api.post(f"/jobs/{name}/run?wait=false", json={"parameters": {"executing": str(executing)}})
        assert started.status_code == 202, started.text
        run_id = started.json()["run_id"]
        wait_until(executing.exists, timeout=30, what="execute() running")
        restarted = api.post(f"/plugins/{name}/restart")
        assert restarted.status_code == 200 and restarted.json()["state"] == "running", restarted.text
        run = wait_until(lambda: (r := api.get(f"/jobs/{name}/runs/{run_id}").json())["state"] != "running" and r,
                         timeout=10, what="the run to end")
        assert (run["state"], run["result"]["success"], run["result"]["message"]) == ("succeeded", True, "done"), run
    finally:
        purge(api, name)


@pytest.mark.slow
def test_run_that_honours_cancel_is_cancelled_and_unsuccessful(api, repos):
    """A run cancelled through the API that stops on check_cancelled() is "cancelled", success false."""
    name = "obedient"
    try:
        add(api, name, plugin_repo(repos, name, SLOW_JOB, SLOW_JOB_CONFIG, module="slow"))
        executing = repos / "executing"
        started = api.post(f"/jobs/{name}/run?wait=false",
                           json={"parameters": {"steps": 200, "executing": str(executing)}})
        assert started.status_code == 202, started.text
        run_id = started.json()["run_id"]
        wait_until(executing.exists, timeout=30, what="execute() running")
        cancelled = api.post(f"/jobs/{name}/runs/{run_id}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        for run in (cancelled.json(), api.get(f"/jobs/{name}/runs/{run_id}").json()):
            assert (run["state"], run["result"]["success"]) == ("cancelled", False), run
    finally:
        purge(api, name)

