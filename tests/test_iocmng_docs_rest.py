"""iocmng 2.7.9's documented REST and startup usage under a real `iochost serve`: HOWTO 11, 12, 17 and 20 (jobs and
scripts over REST, plugins.yaml at startup), MANUAL 05's complete example under the daemon, MANUAL 18's PV gateway
routes.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from conftest import ca_search, wait_for
from daemon_harness import Daemon, wait_until
from gitrepos import Repo
from test_iocmng_docs import (
    copy_fixture,
    device,  # noqa: F401 - a fixture
    put,
    until,
)

DEV = "DOCREST"  # this module's device PVs: test_iocmng_docs uses the same names under DOCDEV (see there)


# -- the REST scripts (HOWTO §11, §12, §20; MANUAL §7, §18) against one real daemon ---------------
@pytest.fixture(scope="module")
def rest_daemon(tmp_path_factory: pytest.TempPathFactory, device: None) -> Iterator[Daemon]:
    """A daemon whose PV gateway may write the device's PVs (iochost's own rule: writes only to
    --pv-gateway-allow patterns; iocmng has no such limit)."""
    root = tmp_path_factory.mktemp("docs-daemon")
    with Daemon(root / "data", "--pv-gateway-allow", f"{DEV}:*").serving() as daemon:
        yield daemon


def curl(daemon: Daemon, command: str) -> httpx.Response:
    """One of the documents' curl lines, sent to ``daemon`` as the same request: method (-X),
    path (the documents' host is localhost:8080), JSON body (-d)."""
    import shlex

    words = shlex.split(command.replace("\\\n", " "))
    method = words[words.index("-X") + 1] if "-X" in words else "GET"
    url = httpx.URL(next(w for w in words if w.startswith("http")))
    body = json.loads(words[words.index("-d") + 1]) if "-d" in words else None
    return httpx.request(method, daemon.url + url.raw_path.decode(), json=body, timeout=120)


def _interlock_repo(root: Path) -> Repo:
    """A repository holding HOWTO §2's interlock fixture at plugins/interlock/ (§12's path)."""
    repo = Repo(root / "beamline-tasks")
    repo.copy_dir(copy_fixture("howto-02-interlock", root, DEV), "plugins/interlock")
    repo.commit("interlock")
    return repo


@pytest.mark.slow
def test_howto_12_and_20_rest_scripts(rest_daemon: Daemon, tmp_path: Path, ca: Any) -> None:
    """HOWTO §12 (add from git with every field it shows, from a local directory, restart,
    remove, list, list by type) and §20 (plugin details, startup metadata, health)."""
    for pv, value in (("IL_HEAT", 20.0), ("IL_PRESS", 1.0), ("IL_FLOW", 1.0)):
        put(ca, f"{DEV}:{pv}", value)
    repo = _interlock_repo(tmp_path)
    local = copy_fixture("howto-01-monitor", tmp_path, DEV)
    body = {"name": "my-interlock", "git_url": repo.url, "path": "plugins/interlock/", "branch": "main",
            "pat": "ghp_not-a-real-token", "auto_start": True, "auto_start_on_boot": True,
            "autostart_order": 5, "parameters": {"interval": 0.5}}
    added = curl(rest_daemon, f"curl -X POST http://localhost:8080/api/v1/plugins -H 'Content-Type: "
                              f"application/json' -d '{json.dumps(body)}'")
    assert added.status_code in (200, 201), added.text
    assert added.json()["ok"] is True and added.json()["message"]
    wait_for(lambda: ca.caget("IOCHT:MY-INTERLOCK:TRIP", timeout=2) == 0, timeout=60, what="the interlock serving")
    local_body = {"name": "my-monitor", "local_path": str(local), "auto_start": True}
    added = curl(rest_daemon, f"curl -X POST http://localhost:8080/api/v1/plugins -d '{json.dumps(local_body)}'")
    assert added.status_code in (200, 201), added.text
    assert added.json()["ok"] is True
    wait_for(lambda: ca.caget("IOCHT:MY-MONITOR:HIGH", timeout=2) == 0, timeout=60, what="the monitor serving")

    listed = curl(rest_daemon, "curl http://localhost:8080/api/v1/plugins").json()
    assert listed["count"] == len(listed["plugins"]) >= 2
    assert {"my-interlock", "my-monitor"} <= {p["name"] for p in listed["plugins"]}
    tasks = curl(rest_daemon, 'curl "http://localhost:8080/api/v1/plugins?type=task"').json()
    assert tasks["count"] >= 2
    details = curl(rest_daemon, "curl http://localhost:8080/api/v1/plugins/my-interlock").json()
    startup = curl(rest_daemon, "curl http://localhost:8080/api/v1/tasks/my-interlock/startup").json()
    expected = {"name": "my-interlock", "plugin_type": "task", "auto_start": True, "auto_start_on_boot": True,
                "autostart_order": 5, "pv_prefix": "IOCHT:MY-INTERLOCK", "mode": "continuous"}
    assert {key: startup.get(key) for key in expected} == expected
    assert startup["start_parameters"]["interval"] == 0.5
    assert set(startup["arguments"]) == {"inputs", "outputs"} and "TRIP" in startup["built_pvs"]
    health = curl(rest_daemon, "curl http://localhost:8080/api/v1/health").json()

    restarted = curl(rest_daemon, "curl -X POST http://localhost:8080/api/v1/plugins/my-interlock/restart")
    assert restarted.status_code == 200, restarted.text
    assert restarted.json()["ok"] is True
    wait_for(lambda: ca.caget("IOCHT:MY-INTERLOCK:TRIP", timeout=2) == 0, timeout=60, what="serving again")
    for name in ("my-interlock", "my-monitor"):
        removed = curl(rest_daemon, f"curl -X DELETE http://localhost:8080/api/v1/plugins/{name}")
        assert removed.status_code == 200 and removed.json()["ok"] is True, removed.text
    wait_until(lambda: not ca_search(["IOCHT:MY-INTERLOCK:TRIP"]), timeout=30, what="its PVs gone")

    # iocmng 2.7.9's fields in the answers taken above (its PluginInfo.to_dict and HealthResponse)
    assert all(p.get("plugin_type") == "task" for p in tasks["plugins"]), tasks
    expected = {"name": "my-interlock", "plugin_type": "task", "class_name": "CoolantInterlock",
                "path": "plugins/interlock/"}
    assert {key: details.get(key) for key in expected} == expected
    assert details.get("running") is True and isinstance(details.get("cycle_count"), int), details
    assert health["status"] and health["version"], health
    assert health.get("tasks_count", 0) >= 2 and isinstance(health.get("jobs_count"), int), health


@pytest.mark.slow
def test_howto_11_job_over_rest(rest_daemon: Daemon, tmp_path: Path, ca: Any) -> None:
    """HOWTO §11, MANUAL §7/§18: the job added, run through /jobs/{name}/run and
    /plugins/{name}/run. iocmng 2.7.9 answers ``{ok, result: {success, data, message,
    timestamp}}`` (its JobRunResponse); HOWTO's "Response" shows result's fields alone."""
    put(ca, f"{DEV}:PVC_SRC", 2.0)
    job = copy_fixture("howto-11-job", tmp_path, DEV)
    with rest_daemon.client() as api:
        response = api.post("/jobs", json={"name": "diagnostics", "local_path": str(job)})
        assert response.status_code in (200, 201) and response.json()["ok"] is True, response.text
        for path in ("/jobs/diagnostics/run", "/plugins/diagnostics/run"):
            ran = curl(rest_daemon, f"curl -X POST http://localhost:8080/api/v1{path}")
            assert ran.status_code == 200, ran.text
            answer = ran.json()
            assert answer["ok"] is True, answer
            result = answer["result"]
            assert result["success"] is True and result["message"] == "checks passed"
            assert result["data"]["device_reachable"] is True and result["data"]["ghost_reachable"] is False
            assert result["data"]["rss_kib"] > 0 and result["timestamp"]
            assert result["data"]["result_fields"] == ["data", "message", "success", "timestamp"]
        assert api.get("/jobs/diagnostics").json()["plugin_type"] == "job"
        assert api.get("/jobs/diagnostics/startup").json()["plugin_type"] == "job"
        assert "diagnostics" in {p["name"] for p in api.get("/jobs").json()["plugins"]}
        assert "diagnostics" not in {p["name"] for p in api.get("/plugins", params={"type": "task"}).json()["plugins"]}
        assert api.delete("/jobs/diagnostics").json()["ok"] is True


def test_manual_05_complete_example_prefix_under_the_daemon(rest_daemon: Daemon, tmp_path: Path, ca: Any) -> None:
    """MANUAL §5's complete config under a daemon: its ``prefix:`` is the plugin's PV segment
    (§21: CONTROLLER_PREFIX:PLUGIN_PREFIX:PV); poll_rate on a monitor link is accepted; the
    rule on an unwired input's actuator fires its outputs, and the actuator (no device PV to
    write, as under iocmng, which logs the failed link_put) leaves the input as it was."""
    put(ca, f"{DEV}:PROBE", 0.0)
    full = copy_fixture("manual-05-complete", tmp_path, DEV)
    with rest_daemon.client() as api:
        response = api.post("/tasks", json={"name": "doc-full", "local_path": str(full)})
        assert response.status_code in (200, 201), response.text
        wait_for(lambda: ca.caget("IOCHT:DOC_FULL:DEMAND", timeout=2) == 25.0, timeout=60, what="DOC_FULL serving")
        assert api.get("/tasks/doc-full/startup").json()["plugin_prefix"] == "DOC_FULL"
        for value in (45.0, 50.0, 55.0):
            put(ca, f"{DEV}:PROBE", value)
            until(ca, "IOCHT:DOC_FULL:PROBE", value)
        until(ca, "IOCHT:DOC_FULL:PROBE_AVG", 50.0)
        until(ca, "IOCHT:DOC_FULL:OVER", 1)
        wait_for(lambda: ca.caget("IOCHT:DOC_FULL:NOTE").endswith(" - probe high"), timeout=10, what="message_pv")
        for value in (0.0, 0.0, -1.0):
            put(ca, f"{DEV}:PROBE", value)
        until(ca, "IOCHT:DOC_FULL:PROBE", -1.0)
        until(ca, "IOCHT:DOC_FULL:OVER", 1)
        assert ca.caget("IOCHT:DOC_FULL:DEMAND") == 25.0
        assert api.delete("/tasks/doc-full").json()["ok"] is True


@pytest.mark.slow
def test_manual_18_pv_gateway_routes(rest_daemon: Daemon, ca: Any) -> None:
    """MANUAL §18 "PV Access", on the paths iocmng 2.7.9 serves (/pvs/..., where the Manual
    writes /pv/...), with iocmng's request and response fields; /devices answers."""
    put(ca, f"{DEV}:PVC_SRC", 6.5)
    with rest_daemon.client() as api:
        assert api.get("/pvs/provider").json()["provider"] in ("pva", "ca")
        got = api.post("/pvs/get", json={"pv_name": f"{DEV}:PVC_SRC", "timeout": 5.0}).json()
        assert (got["ok"], got["pv_name"], got["value"]) == (True, f"{DEV}:PVC_SRC", 6.5)
        written = api.post("/pvs/put", json={"pv_name": f"{DEV}:PVC_DST", "value": 42, "timeout": 5.0}).json()
        assert (written["ok"], written["pv_name"]) == (True, f"{DEV}:PVC_DST")
        until(ca, f"{DEV}:PVC_DST", 42.0)
        started = api.post("/pvs/monitor", json={"pv_name": f"{DEV}:PVC_HB", "name": "doc-hb"}).json()
        assert started["ok"] is True and started["key"] and "message" in started
        monitors = api.get("/pvs/monitors").json()
        assert monitors["monitors"].get(started["key"]) == f"{DEV}:PVC_HB" and monitors["count"] >= 1
        stopped = api.delete(f"/pvs/monitor/{started['key']}").json()
        assert stopped["ok"] is True and stopped["key"] == started["key"]
        assert started["key"] not in api.get("/pvs/monitors").json()["monitors"]
        assert api.get("/devices").status_code == 200


# -- plugins.yaml (HOWTO §17, MANUAL §3) -----------------------------------------------------------
PLUGINS_YAML = """\
# iocmng 2.7.9 HOWTO.md §17 / MANUAL.md §3 "Pre-loading Plugins on Startup", in iochost's words:
# git entries with path, branch, pat, parameters, auto_start_on_boot and autostart_order; local
# entries with and without an order; one that cannot load (its failure must not stop the rest).
plugins:
  - name: zulu-first
    git_url: {url}
    path: plugins/interlock/
    branch: main
    pat: ghp_not-a-real-token
    auto_start: true
    auto_start_on_boot: true
    autostart_order: 1
    parameters:
      interval: 0.5
  - name: alpha-second
    git_url: {url}
    path: plugins/interlock/
    branch: main
    auto_start: true
    auto_start_on_boot: true
    autostart_order: 2
  - name: mike-tenth
    local_path: {local}
    auto_start: true
    autostart_order: 10
  - name: bravo-unordered
    local_path: {local}
    auto_start: true
  - name: broken-one
    local_path: {missing}
    auto_start: true
    autostart_order: 3
"""


@pytest.mark.slow
def test_howto_17_plugins_yaml_startup(tmp_path: Path, device: None, ca: Any) -> None:
    """HOWTO §17 / MANUAL §3: the file given by iocmng's IOCMNG_PLUGINS_CONFIG (and IOCMNG_PVA
    false, HOWTO §19 "Via environment variable"); every loadable entry runs, the failing one
    does not stop the others, and /tasks/{name}/startup reports the order fields. Start-up order
    itself: autostart_order, then name (zulu-first, alpha-second, mike-tenth)."""
    repo = _interlock_repo(tmp_path)
    local = copy_fixture("howto-01-monitor", tmp_path, DEV)
    plugins = tmp_path / "plugins.yaml"
    plugins.write_text(PLUGINS_YAML.format(url=repo.url, local=local, missing=tmp_path / "nowhere"))
    with Daemon(tmp_path / "data", env={"IOCMNG_PLUGINS_CONFIG": str(plugins), "IOCMNG_PVA": "false"}).serving() as d:
        with d.client() as api:
            names = ("zulu-first", "alpha-second", "mike-tenth", "bravo-unordered")

            def all_running() -> bool:
                return all(api.get(f"/plugins/{n}").json().get("state") == "running" for n in names)

            wait_until(all_running, timeout=120, what="the four loadable entries running")
            for name, order, on_boot in (("zulu-first", 1, True), ("alpha-second", 2, True), ("mike-tenth", 10, None)):
                startup = api.get(f"/tasks/{name}/startup").json()
                assert startup["autostart_order"] == order, startup
                if on_boot is not None:
                    assert startup["auto_start_on_boot"] is on_boot
            assert api.get("/tasks/zulu-first/startup").json()["start_parameters"]["interval"] == 0.5
            assert api.get("/pvs/provider").json()["provider"] == "ca"
            assert "nowhere" in d.log()  # the failing entry is logged
        wait_for(lambda: ca.caget("IOCHT:ZULU-FIRST:STATUS", timeout=2) is not None, timeout=30,
                 what="a file-loaded plugin's PVs over CA")
        log = d.log()
        assert all(f"added task {n} (" in log for n in names[:3]), log[-3000:]
        started = sorted(names[:3], key=lambda n: log.find(f"added task {n} ("))
        assert started == ["zulu-first", "alpha-second", "mike-tenth"], textwrap.shorten(log, 2000)

