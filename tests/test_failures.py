"""Failures a user can see, end to end (issue 28): the real `iochost serve`, plugins added
from real git repositories by file:// URL, every request over real HTTP, STATUS and MESSAGE
read with libca (cothread.catools).

- ``initialize()`` that raises: one rule. An add fails (502 WORKER_START_FAILED) and an
  upgrade rolls back (409 UPGRADE_FAILED), each with the exception's type and message and the
  plugin's own frames of the traceback (``log_tail``), leaving nothing behind; after a daemon
  restart or an automatic restart the plugin stays registered, shows the error and is
  retried with backoff.
- A plugin whose ``execute()`` keeps failing: ``/health`` is degraded and names it with the
  whole error, the REST record keeps the whole text (MESSAGE holds its first 39 characters),
  ``/metrics`` counts it; when ``execute()`` succeeds again, ``/health`` is ok.

The pure parts (the contract's bounds, the lifecycle's decisions, the traceback filter) are
tested without processes in test_failures_in_lifecycle.py.
"""

from __future__ import annotations

import json
import re
import secrets
import textwrap
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from conftest import ca_search, free_port
from daemon_harness import Daemon, add, bearer, metric_by_label, snapshot, wait_until, worker_pids
from gitrepos import Repo, plugin_repo
from test_lifecycle_e2e import purge

# A prefix of this module's own: the session's CA channels to an earlier module's daemon PVs
# (IOCHT:IOCHOST:HEALTH) would wait on libca's reconnect governor before finding this daemon
PREFIX = "IOCHTFAIL"

# -- plugins ---------------------------------------------------------------------------------------

# initialize() reads a parameter nobody gave ("scal", a typo of "scale") through a helper of its
# own; cleanup() leaves a mark, so the test sees it ran after the failed initialize().
SCALER_CODE = """
    from pathlib import Path
    from iochost import {imports}


    def gain(parameters):
        return parameters["scal"] * 2


    class Scaler({base}):
        def initialize(self):
            self.gain = gain(self.parameters)

        def execute(self):
            {execute}

        def cleanup(self):
            Path(self.parameters["marker"]).write_text("cleanup ran")
"""
KINDS = {  # kind -> (what it imports, its base class, execute's body, extra parameters)
    "continuous": ("TaskBase", "TaskBase", "pass", {}),
    "triggered": ("TaskBase", "TaskBase", "pass", {"mode": "triggered"}),
    "job": ("JobBase, JobResult", "JobBase", "return JobResult(success=True)", {}),
}

# The revision an upgrade brings: initialize() needs "scale" (which the running one ignored).
SHIFTER_CODE = """
    from iochost import TaskBase


    class Shifter(TaskBase):
        def initialize(self):
            self.offset = {offset}

        def execute(self):
            self.set_pv("OFFSET", self.offset)

        def cleanup(self):
            pass
"""
SHIFTER_CONFIG = """
    parameters: {interval: 0.2}
    pvs:
      outputs:
        OFFSET: {type: float}
"""

# initialize() raises while the file `broken` names exists; execute() ends the process while
# the file `crash` names exists.
FRAGILE = """
    import os
    from iochost import TaskBase


    class Fragile(TaskBase):
        def initialize(self):
            if os.path.exists(self.parameters["broken"]):
                raise RuntimeError("calibration table missing: " + self.parameters["broken"])

        def execute(self):
            if os.path.exists(self.parameters["crash"]):
                os._exit(3)

        def cleanup(self):
            pass
"""

# execute() raises with a long message while the input FAIL is 1, and recovers when it is 0.
COMPLAINT = ("the beam current monitor BCM-07 returned no reading for 12 cycles; "
             "check its crate (rack 4, slot 11) and the timing fan-out")
BEAM = """
    from iochost import TaskBase


    class Beam(TaskBase):
        def initialize(self):
            pass

        def execute(self):
            if self.get_pv("FAIL"):
                raise RuntimeError(self.parameters["complaint"])
            self.set_pv("CURRENT", 1.5)

        def cleanup(self):
            pass
"""

# A job whose run fails, with a long message, when asked to.
SHOT = """
    from iochost import JobBase, JobResult


    class Shot(JobBase):
        def initialize(self):
            pass

        def execute(self):
            if self.parameters.get("fail"):
                return JobResult(success=False, message=self.parameters["complaint"])
            return JobResult(success=True, message="fired")
"""


def beam_config(fail: int = 0) -> str:
    return (f"parameters: {json.dumps({'interval': 0.2, 'retry_on_error': True, 'complaint': COMPLAINT})}\n"
            f"pvs:\n  inputs:\n    FAIL: {{type: int, value: {fail}}}\n  outputs:\n    CURRENT: {{type: float}}\n")


# -- helpers ---------------------------------------------------------------------------------------

FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<function>\S+)$')


def frames(lines: list[str]) -> list[tuple[str, int, str]]:
    """(file name, line, function) of every frame a traceback's lines show."""
    return [(Path(m["file"]).name, int(m["line"]), m["function"]) for line in lines if (m := FRAME.match(line))]


def line_of(code: str, text: str) -> int:
    """The line number of ``text`` in the module ``code`` becomes once written (dedented)."""
    return textwrap.dedent(code).splitlines().index(text) + 1


def record(api: httpx.Client, name: str) -> dict[str, Any]:
    response = api.get(f"/plugins/{name}")
    assert response.status_code == 200, response.text
    return response.json()


def problems(api: httpx.Client) -> dict[str, dict[str, Any]]:
    """``/health``'s problems by plugin name; {} when it is ok (and then it must say so)."""
    health = api.get("/health").json()
    named = {p["name"]: p for p in health["problems"]}
    assert (health["status"] == "degraded") == bool(named), health
    return named


def in_error(daemon: Daemon) -> dict[str, float]:
    """``iochost_plugins_in_error`` per reason, scraped from ``/metrics``."""
    return metric_by_label(daemon, "iochost_plugins_in_error", "reason")


def held(daemon: Daemon) -> tuple[list[str], list[str], list[int]]:
    """``snapshot()`` with the registry as the plugins it names: the daemon's first add
    creates registry.json, which is no plugin's leftover once empty."""
    files, registry, workers = snapshot(daemon)
    plugins = sorted(json.loads(registry)["plugins"]) if registry is not None else []
    return [f for f in files if f != "registry.json"], plugins, workers


def no_thread_dumps(lines: list[str]) -> bool:
    """faulthandler's stack dumps (a hung worker's) start with these; a traceback has none."""
    return not any(line.startswith(("Thread 0x", "Current thread 0x")) for line in lines)


# -- the daemon ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """Quick backoff (0.5 s doubling), heartbeats and probation; no add rate limit."""
    root = tmp_path_factory.mktemp("failures")
    with Daemon(root / "data", "--prefix", PREFIX, "--backoff-initial", "0.5", "--heartbeat-interval", "0.5",
                "--upgrade-probation", "1", "--add-rate", "off").serving() as d:
        wait_until(lambda: worker_pids(d.data_dir, "iochost"), what="the daemon's own IOC")  # snapshots' baseline
        yield d


@pytest.fixture(scope="module")
def api(daemon: Daemon) -> Iterator[httpx.Client]:
    with daemon.client() as client:
        yield client


# -- initialize() that raises ----------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KINDS))
def test_initialize_that_raises_fails_the_add_with_its_traceback_and_leaves_nothing(
        api: httpx.Client, daemon: Daemon, repos: Path, kind: str) -> None:
    """502 WORKER_START_FAILED: the exception's type and message, and in ``log_tail`` the
    plugin's own frames (initialize, then its helper) and no thread dump; cleanup() ran; no
    registry entry, checkout, worker or PV is left."""
    imports, base, execute, extra = KINDS[kind]
    name, marker = f"scaler-{kind}", repos / "cleaned"
    code = SCALER_CODE.format(imports=imports, base=base, execute=execute)
    config = f"parameters: {json.dumps({'interval': 0.5, 'marker': str(marker), **extra})}\n"
    repo = plugin_repo(repos, name, code, config, module="scaler")
    before = held(daemon)
    try:
        response = api.post("/plugins", json={"name": name, "git_url": repo.url})
        assert response.status_code == 502, response.text
        body = response.json()
        assert body["code"] == "WORKER_START_FAILED", body
        assert "initialize() raised KeyError: 'scal'" in body["message"], body
        assert body["exception"] == {"type": "KeyError", "message": "'scal'"}, body
        tail = body["log_tail"]
        assert frames(tail) == [("scaler.py", line_of(code, "        self.gain = gain(self.parameters)"), "initialize"),
                                ("scaler.py", line_of(code, '    return parameters["scal"] * 2'), "gain")], tail
        assert tail[-1] == "KeyError: 'scal'" and no_thread_dumps(tail), tail
        assert marker.read_text() == "cleanup ran"
        assert api.get(f"/plugins/{name}").status_code == 404
        assert held(daemon) == before
        assert ca_search([f"{PREFIX}:{name.upper()}:STATUS"]) == set()
    finally:
        purge(api, name)


@pytest.mark.slow
def test_initialize_that_raises_fails_an_upgrade_with_its_traceback_and_the_old_one_serves(
        api: httpx.Client, daemon: Daemon, repos: Path, ca: Any) -> None:
    """An upgrade whose new revision's initialize() raises answers 409 UPGRADE_FAILED with the
    exception and the plugin's frames in ``log_tail``; the previous revision serves again and
    nothing of the new one is left (same files, same registry)."""
    name = "shifter"
    repo = Repo(repos / "shifter")
    repo.write({"shifter.py": SHIFTER_CODE.format(offset="1.0"), "config.yaml": SHIFTER_CONFIG})
    good = repo.commit("v1")
    code = SHIFTER_CODE.format(offset='self.parameters["scale"] * 0.5')
    repo.write({"shifter.py": code})
    bad = repo.commit("v2: the offset scales")
    try:
        add(api, name, repo, commit=good)
        pv = f"{PREFIX}:{name.upper()}:OFFSET"
        wait_until(lambda: ca.caget(pv, timeout=3) == 1.0, timeout=20, what="OFFSET 1.0 over CA")
        files, registry, _ = snapshot(daemon)
        response = api.post(f"/plugins/{name}/upgrade", json={"commit": bad})
        assert response.status_code == 409, response.text
        body = response.json()
        assert body["code"] == "UPGRADE_FAILED", body
        assert "initialize() raised KeyError: 'scale'" in body["message"] and "rolled back" in body["message"], body
        assert body["exception"] == {"type": "KeyError", "message": "'scale'"}, body
        tail = body["log_tail"]
        assert frames(tail) == [("shifter.py", line_of(code, '        self.offset = self.parameters["scale"] * 0.5'),
                                 "initialize")], tail
        assert tail[-1] == "KeyError: 'scale'" and no_thread_dumps(tail), tail
        after = wait_until(lambda: (r := record(api, name))["state"] == "running" and r, timeout=20,
                           what="the previous revision running again")
        assert after["source"]["commit"] == good
        assert snapshot(daemon)[:2] == (files, registry)
        assert ca.caget(f"{PREFIX}:{name.upper()}:STATUS", datatype=ca.DBR_STRING, timeout=15) == "RUN"
    finally:
        purge(api, name)


@pytest.mark.slow
def test_initialize_that_raises_after_a_daemon_restart_keeps_the_plugin_and_retries(
        api: httpx.Client, daemon: Daemon, repos: Path) -> None:
    """Restored after a daemon restart, a plugin whose initialize() now raises stays
    registered, is crashed or restarting with the error as ``last_error``, named by /health,
    and retried with backoff until initialize() returns again."""
    name, broken, crash = "fragile-restore", repos / "broken", repos / "crash"
    repo = plugin_repo(repos, name, FRAGILE, "parameters: {interval: 0.5}\n", module="fragile")
    try:
        add(api, name, repo, parameters={"broken": str(broken), "crash": str(crash)})
        broken.touch()
        assert daemon.terminate() == 0, daemon.log()[-2000:]
        daemon.start()
        plugin = wait_until(lambda: (r := record(api, name))["restarts"] >= 2 and r, timeout=30,
                            what="two retries of the restored plugin")
        assert plugin["state"] in ("crashed", "starting") and plugin["desired_state"] == "running", plugin
        assert "initialize() raised RuntimeError: calibration table missing" in plugin["last_error"], plugin
        assert name in json.loads((daemon.data_dir / "registry.json").read_text())["plugins"]
        problem = problems(api)[name]
        assert problem["reason"] in ("crashed", "crash_looping"), problem
        assert "initialize() raised RuntimeError" in problem["last_error"], problem
        broken.unlink()
        wait_until(lambda: record(api, name)["state"] == "running", timeout=30,
                   what="running once initialize() returns")
        wait_until(lambda: problems(api) == {}, timeout=10, what="/health ok")
    finally:
        broken.unlink(missing_ok=True)
        purge(api, name)


@pytest.mark.slow
def test_initialize_that_raises_on_an_automatic_or_operator_restart_is_retried(
        api: httpx.Client, daemon: Daemon, repos: Path) -> None:
    """A crash whose automatic restart meets a raising initialize() is retried with backoff
    (restarts grows, the plugin stays); an operator's restart then answers 502 with the
    error and the plugin stays too; once initialize() returns it runs."""
    name, broken, crash = "fragile-crash", repos / "broken", repos / "crash"
    repo = plugin_repo(repos, name, FRAGILE, "parameters: {interval: 0.2}\n", module="fragile")
    try:
        add(api, name, repo, parameters={"broken": str(broken), "crash": str(crash)})
        broken.touch()
        crash.touch()  # the next execute() ends the worker; its restarts meet the broken initialize()
        wait_until(lambda: record(api, name)["state"] != "running", timeout=10, what="the crash")
        crash.unlink()
        plugin = wait_until(lambda: (r := record(api, name))["restarts"] >= 3 and r, timeout=30,
                            what="three automatic restarts")
        assert "start failed: initialize() raised RuntimeError" in plugin["last_error"], plugin
        assert problems(api)[name]["reason"] in ("crashed", "crash_looping")
        restarted = api.post(f"/plugins/{name}/restart")
        assert restarted.status_code == 502, restarted.text
        assert restarted.json()["code"] == "WORKER_START_FAILED"
        assert "initialize() raised RuntimeError: calibration table missing" in restarted.json()["message"]
        assert record(api, name)["desired_state"] == "running"
        broken.unlink()
        wait_until(lambda: record(api, name)["state"] == "running", timeout=30,
                   what="running once initialize() returns")
        wait_until(lambda: problems(api) == {}, timeout=10, what="/health ok")
    finally:
        broken.unlink(missing_ok=True)
        crash.unlink(missing_ok=True)
        purge(api, name)


# -- execute() that keeps failing ------------------------------------------------------------------

def test_a_task_in_error_makes_health_degraded_with_its_whole_error_until_it_recovers(
        api: httpx.Client, daemon: Daemon, repos: Path, ca: Any) -> None:
    """FAIL=1 over CA: every execute() raises. STATUS reads ERROR and MESSAGE the error's first
    39 characters over CA; the REST record keeps the whole text (message and last_error);
    /health is degraded naming the task, /metrics counts it, the daemon's HEALTH PV reads
    DEGRADED. FAIL=0: it recovers, /health and HEALTH are ok."""
    name = "beam"
    whole = f"RuntimeError: {COMPLAINT}"
    pv = f"{PREFIX}:{name.upper()}"
    try:
        add(api, name, plugin_repo(repos, name, BEAM, beam_config(), module="beam"))
        assert api.get("/health").json()["status"] == "ok"
        ca.caput(f"{pv}:FAIL", 1, wait=True, timeout=10)
        wait_until(lambda: ca.caget(f"{pv}:STATUS", datatype=ca.DBR_STRING, timeout=3) == "ERROR", timeout=10,
                   what="STATUS ERROR over CA")
        assert ca.caget(f"{pv}:MESSAGE", timeout=3) == whole[:39]
        plugin = wait_until(lambda: (r := record(api, name))["status"] == "ERROR" and r, timeout=10,
                            what="the record in ERROR")
        assert (plugin["state"], plugin["message"], plugin["last_error"]) == ("running", whole, whole), plugin
        assert api.get("/health").json()["status"] == "degraded"
        problem = problems(api)[name]
        assert (problem["reason"], problem["status"], problem["last_error"]) == ("status_error", "ERROR", whole)
        assert in_error(daemon)["status_error"] == 1
        wait_until(lambda: ca.caget(f"{PREFIX}:IOCHOST:HEALTH", datatype=ca.DBR_STRING, timeout=3) == "DEGRADED",
                   timeout=10, what="the daemon's HEALTH PV DEGRADED")
        ca.caput(f"{pv}:FAIL", 0, wait=True, timeout=10)
        wait_until(lambda: ca.caget(f"{pv}:STATUS", datatype=ca.DBR_STRING, timeout=3) == "RUN", timeout=10,
                   what="STATUS RUN over CA")
        wait_until(lambda: problems(api) == {}, timeout=10, what="/health ok once execute() succeeds")
        assert in_error(daemon)["status_error"] == 0
        wait_until(lambda: ca.caget(f"{PREFIX}:IOCHOST:HEALTH", datatype=ca.DBR_STRING, timeout=3) == "OK",
                   timeout=10, what="the daemon's HEALTH PV OK")
        assert record(api, name)["last_error"] == whole  # the last error stays on the record
    finally:
        purge(api, name)


def test_a_job_whose_run_failed_is_named_until_a_run_succeeds(
        api: httpx.Client, repos: Path, ca: Any) -> None:
    """A run that fails with a long message: STATUS FAILED over CA, the whole message in the
    record and in /health; the next successful run makes /health ok."""
    name = "shot"
    complaint = f"trigger refused: {COMPLAINT}"
    try:
        add(api, name, plugin_repo(repos, name, SHOT, "pvs: {outputs: {DONE: {type: int}}}\n", module="shot"))
        run = api.post(f"/jobs/{name}/run", json={"parameters": {"fail": True, "complaint": complaint}})
        assert run.status_code == 200 and run.json()["state"] == "failed", run.text
        assert ca.caget(f"{PREFIX}:SHOT:STATUS", datatype=ca.DBR_STRING, timeout=10) == "FAILED"
        assert ca.caget(f"{PREFIX}:SHOT:MESSAGE", timeout=3) == complaint[:39]
        assert record(api, name)["message"] == complaint
        wait_until(lambda: api.get("/health").json()["status"] == "degraded", timeout=10, what="/health degraded")
        problem = problems(api)[name]
        assert (problem["reason"], problem["status"], problem["last_error"]) == ("status_error", "FAILED", complaint)
        assert api.post(f"/jobs/{name}/run", json={}).json()["state"] == "succeeded"
        wait_until(lambda: problems(api) == {}, timeout=10, what="/health ok after a good run")
    finally:
        purge(api, name)


@pytest.mark.slow
def test_health_names_plugins_only_to_token_holders(tmp_path: Path) -> None:
    """With tokens configured, /health answers everyone (probes need no token) but names the
    plugin in error and its error only to a caller with a valid token."""
    read, admin = "rd-" + secrets.token_hex(20), "ad-" + secrets.token_hex(20)
    repo = plugin_repo(tmp_path, "beam", BEAM, beam_config(fail=1), module="beam")
    daemon = Daemon(tmp_path / "data", "--add-rate", "off", "--ca-port", str(free_port()),  # no CA here
                    env={"IOCHOST_READ_TOKEN": read, "IOCHOST_ADMIN_TOKEN": admin})
    with daemon.serving(), daemon.client(token=admin) as api:
        add(api, "beam", repo)
        health = wait_until(lambda: (h := httpx.get(daemon.url + "/api/v1/health", headers=bearer(read)).json())
                            ["status"] == "degraded" and h, timeout=10, what="degraded for the reader")
        assert [p["name"] for p in health["problems"]] == ["beam"], health
        anonymous = httpx.get(daemon.url + "/api/v1/health")
        assert anonymous.status_code == 200, anonymous.text
        assert (anonymous.json()["status"], anonymous.json()["problems"]) == ("degraded", None)
        wrong = httpx.get(daemon.url + "/api/v1/health", headers=bearer("wrong-" + read))
        assert wrong.status_code == 200 and wrong.json()["problems"] is None
        api.delete("/plugins/beam")

