"""iocmng 2.7.9's REST routes and start-up order, against a real daemon and real git repositories.

The request bodies are the ones iocmng documents (its MANUAL, "Add Plugin Request Body" and
"Pre-loading Plugins on Startup"; its api/bodies.py AddPluginRequest): written here in our
own words, with iocmng's field names. Answers carry iocmng's fields (``ok``, ``message``,
``validation``; the start-up metadata; ``/devices``) beside iochost's own.
"""

from __future__ import annotations

import json
import socket
import textwrap
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon_harness import Daemon, wait_until
from gitrepos import plugin_repo
from iochost.plugins_file import load_plugins_file
from iochost.settings import Settings
from iochost.supervisor.adding import boot_order
from sample_plugins import SLOW_JOB, SLOW_JOB_CONFIG, TICKER, TICKER_CONFIG

STARTUP_FIELDS = {"name", "plugin_type", "auto_start", "auto_start_on_boot", "autostart_order", "pv_prefix",
                  "plugin_prefix", "mode", "start_parameters", "arguments", "pv_definitions", "base_control_pvs",
                  "additional_input_pvs", "additional_output_pvs", "built_pvs"}


def _first(record: dict[str, Any], state: str) -> datetime:
    """When the record's plugin first entered ``state`` (the daemon's own clock)."""
    times = [datetime.fromisoformat(t["at"]) for t in record["transitions"] if t["to_state"] == state]
    assert times, (state, record["transitions"])
    return times[0]


def _started_after(records: dict[str, dict[str, Any]], earlier: str, later: str) -> None:
    """``later`` was launched only once ``earlier`` ran: the order, not a race that happened to go well."""
    assert _first(records[earlier], "running") <= _first(records[later], "starting"), (earlier, later)


def _records(api: httpx.Client) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in api.get("/plugins").json()["plugins"]}


@pytest.mark.slow
def test_plugins_file_order_boot_fields_and_devices(tmp_path: Path) -> None:
    """MANUAL's plugins.yaml: autostart_order ascending, the unordered last, name breaking ties;
    re-read at every start; a REST add with auto_start_on_boot false comes back stopped."""
    ticker = plugin_repo(tmp_path, "ticker", TICKER, TICKER_CONFIG)
    declared = tmp_path / "plugins.yaml"

    def declare(zulu_order: int) -> None:
        # MANUAL "Pre-loading Plugins on Startup": name, git_url, branch, auto_start, the two boot fields
        declared.write_text(textwrap.dedent(f"""
            plugins:
              - name: beta
                git_url: {ticker.url}
                branch: main
                auto_start: true
              - name: alpha
                git_url: {ticker.url}
                autostart_order: 20
              - name: zulu
                git_url: {ticker.url}
                auto_start: true
                auto_start_on_boot: true
                autostart_order: {zulu_order}
                parameters: {{interval: 0.5}}
        """))

    beamline = tmp_path / "values.yaml"  # iocmng's beamline values.yaml: two devices of one IOC, one IOC alone
    beamline.write_text(textwrap.dedent("""
        beamline: testline
        epicsConfiguration:
          iocs:
            - name: motors
              devgroup: mot
              devtype: tml
              iocprefix: BLT:MOT
              devices: [{name: AXIS01}, {name: AXIS02}]
            - name: cam
              devgroup: cam
              iocprefix: BLT:CAM
            - name: off
              devgroup: mot
              disable: true
    """))
    data = tmp_path / "data"
    declare(10)
    first = Daemon(data, "--plugins-file", str(declared), "--beamline-config", str(beamline))
    with first.serving(), first.client() as api:
        wait_until(lambda: api.get("/health/ready").status_code == 200, 120, what="plugins file applied")
        records = _records(api)
        assert {name: r["state"] for name, r in records.items()} == dict.fromkeys(["zulu", "alpha", "beta"], "running")
        _started_after(records, "zulu", "alpha")
        _started_after(records, "alpha", "beta")

        startup = api.get("/tasks/zulu/startup")
        assert startup.status_code == 200, startup.text
        info = startup.json()
        assert STARTUP_FIELDS <= set(info)
        assert (info["name"], info["plugin_type"], info["auto_start"], info["auto_start_on_boot"],
                info["autostart_order"], info["mode"]) == ("zulu", "task", True, True, 10, "continuous")
        assert (info["pv_prefix"], info["plugin_prefix"]) == ("IOCHT:ZULU", "ZULU")
        assert info["start_parameters"] == {"interval": 0.5}  # config.yaml's 0.2, the entry's override
        assert info["additional_input_pvs"] == ["GAIN"] and info["additional_output_pvs"] == ["VALUE"]
        assert info["pv_definitions"] == info["arguments"] and set(info["pv_definitions"]) == {"inputs", "outputs"}
        assert info["pv_definitions"]["inputs"]["GAIN"]["value"] == 2.5
        assert {"ENABLE", "STATUS", "MESSAGE", "CYCLE_COUNT"} <= set(info["base_control_pvs"])
        assert {"VALUE", "GAIN", "ENABLE"} <= set(info["built_pvs"])
        assert api.get("/tasks/beta/startup").json()["autostart_order"] is None

        # MANUAL "Add Plugin Request Body": every field iocmng documents, auto_start_on_boot false
        added = api.post("/plugins", json={
            "name": "rest-off", "git_url": ticker.url, "local_path": None, "path": "", "branch": "main",
            "auto_start": True, "auto_start_on_boot": False, "autostart_order": 5, "parameters": {"interval": 0.3}})
        assert added.status_code == 201, added.text
        body = added.json()
        assert body["ok"] is True and "rest-off" in body["message"] and body["state"] == "running"
        assert body["validation"] == {"ok": True, "class_name": "Ticker", "plugin_type": "task", "errors": [],
                                      "warnings": []}
        rest = api.get("/tasks/rest-off/startup").json()
        assert (rest["auto_start_on_boot"], rest["autostart_order"]) == (False, 5)

        devices = api.get("/devices")
        assert devices.status_code == 200, devices.text
        assert devices.json() == {"available": ["AXIS01", "AXIS02", "cam"], "available_count": 3,
                                  "created": [], "created_count": 0}

    # the file changes zulu's order: re-read at this start, it now comes after alpha
    declare(30)
    second = Daemon(data, "--plugins-file", str(declared))
    with second.serving(), second.client() as api:
        wait_until(lambda: api.get("/health/ready").status_code == 200, 120, what="registry restored")
        records = _records(api)
        assert records["rest-off"]["state"] == "stopped"  # auto_start_on_boot false: registered, not started
        assert records["rest-off"]["desired_state"] == "stopped"
        assert {records[name]["state"] for name in ("alpha", "zulu", "beta")} == {"running"}
        _started_after(records, "alpha", "zulu")
        _started_after(records, "zulu", "beta")
        assert api.get("/tasks/zulu/startup").json()["autostart_order"] == 30
        assert api.get("/devices").json() == {"available": [], "available_count": 0, "created": [],
                                              "created_count": 0}
        started = api.post("/plugins/rest-off/start")  # an operator starts it: as any stopped plugin
        assert started.status_code == 200 and started.json()["state"] == "running", started.text


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("iocmng-routes")
    return {"task": plugin_repo(root, "ticker", TICKER, TICKER_CONFIG),
            "job": plugin_repo(root, "slow", SLOW_JOB, SLOW_JOB_CONFIG),
            "broken": plugin_repo(root, "broken", TICKER, "parameters: {interval: -1}\n")}


@pytest.mark.slow
def test_iocmng_routes_with_iocmng_bodies(api: httpx.Client, repos: dict[str, Any]) -> None:
    """Each iocmng route iochost lacked, and iocmng's fields on the ones that change a plugin."""
    task = api.post("/tasks", json={"name": "mon", "git_url": repos["task"].url, "path": "", "branch": "main",
                                    "auto_start": True, "auto_start_on_boot": True, "autostart_order": 3,
                                    "parameters": {"interval": 0.5}})
    assert task.status_code == 201, task.text
    assert task.json()["ok"] is True and task.json()["validation"]["plugin_type"] == "task"
    job = api.post("/jobs", json={"name": "snap", "git_url": repos["job"].url, "branch": "main"})
    assert job.status_code == 201, job.text
    assert job.json()["ok"] is True and job.json()["validation"]["plugin_type"] == "job"

    got = api.get("/tasks/mon")
    assert got.status_code == 200 and got.json()["name"] == "mon" and got.json()["kind"] == "task", got.text
    assert api.get("/jobs/snap").json()["kind"] == "job"
    # HOWTO "List All": iocmng's ?type= filter on /plugins
    for kind, name in (("task", "mon"), ("job", "snap")):
        listed = api.get("/plugins", params={"type": kind}).json()
        assert [p["name"] for p in listed["plugins"]] == [name] and listed["count"] == 1, listed
    assert api.get("/plugins", params={"type": "device"}).status_code == 422
    wrong = api.get("/jobs/mon")
    assert wrong.status_code == 422 and wrong.json()["code"] == "WRONG_KIND" and wrong.json()["ok"] is False
    missing = api.get("/tasks/nobody/startup")
    assert missing.status_code == 404 and missing.json()["ok"] is False, missing.text

    job_info = api.get("/jobs/snap/startup")
    assert job_info.status_code == 200, job_info.text
    info = job_info.json()
    assert STARTUP_FIELDS <= set(info)
    assert (info["plugin_type"], info["mode"], info["auto_start_on_boot"], info["autostart_order"]) == \
        ("job", None, True, None)
    assert info["start_parameters"] == {"steps": 3} and info["additional_output_pvs"] == ["DONE"]
    assert info["base_control_pvs"] == ["STATUS", "MESSAGE", "RUN"]
    assert api.get("/tasks/snap/startup").json()["code"] == "WRONG_KIND"
    assert api.get("/tasks/mon/startup").json()["autostart_order"] == 3

    run = api.post("/plugins/snap/run")  # iocmng sends no body
    assert run.status_code == 200, run.text
    assert run.json()["ok"] is True and run.json()["result"]["success"] is True
    assert run.json()["result"]["data"] == {"steps": 3} and run.json()["state"] == "succeeded"
    assert api.post("/jobs/snap/run", json={"parameters": {"steps": 1}}).json()["ok"] is True
    not_a_job = api.post("/plugins/mon/run")
    assert not_a_job.status_code == 422 and not_a_job.json()["code"] == "WRONG_KIND"
    assert not_a_job.json()["ok"] is False

    restarted = api.post("/plugins/mon/restart")
    assert restarted.status_code == 200, restarted.text
    assert restarted.json()["ok"] is True and restarted.json()["message"] and restarted.json()["state"] == "running"
    assert restarted.json()["validation"]["ok"] is True

    # refusals: iochost's status and error body, with iocmng's ok false and validation report
    broken = api.post("/plugins", json={"name": "broken", "git_url": repos["broken"].url})
    assert broken.status_code == 422 and broken.json()["code"] == "VALIDATION_FAILED", broken.text
    report = broken.json()["validation"]
    assert broken.json()["ok"] is False and report["ok"] is False
    assert any("interval" in error and "config.yaml" in error for error in report["errors"]), report
    job_as_task = api.post("/tasks", json={"name": "not-a-task", "git_url": repos["job"].url})
    assert job_as_task.status_code == 422 and job_as_task.json()["code"] == "WRONG_KIND", job_as_task.text
    assert job_as_task.json()["ok"] is False and job_as_task.json()["validation"]["ok"] is False
    assert api.get("/plugins/not-a-task").status_code == 404  # nothing left behind

    for path in ("/tasks/mon", "/jobs/snap"):
        gone = api.delete(path)
        assert gone.status_code == 200, gone.text
        assert gone.json()["ok"] is True and gone.json()["message"] and gone.json()["deleted"] is True
    assert api.get("/plugins").json()["count"] == 0


HANGING = """
    import os
    import time
    from iochost import TaskBase

    class Hang(TaskBase):
        def initialize(self):
            while os.path.exists(self.parameters["marker"]):  # a device that stopped answering
                time.sleep(0.1)

        def execute(self):
            pass

        def cleanup(self):
            pass
"""


@pytest.mark.slow
def test_a_plugin_that_hangs_in_the_start_order_holds_the_later_ones_until_start_timeout(tmp_path: Path) -> None:
    """iocmng starts its boot list one after the other; iochost starts an order once the lower
    ones settled. One whose initialize() no longer returns is killed at --start-timeout (then
    retried with backoff, as any crash), and the later orders start then: not before, not never."""
    ticker = plugin_repo(tmp_path, "ticker", TICKER, TICKER_CONFIG)
    hang = plugin_repo(tmp_path, "hang", HANGING, "parameters: {interval: 1.0}\n")
    marker = tmp_path / "device-down"
    declared = tmp_path / "plugins.yaml"
    declared.write_text(textwrap.dedent(f"""
        plugins:
          - {{name: first, git_url: {hang.url}, autostart_order: 1, parameters: {{marker: {marker}}}}}
          - {{name: second, git_url: {ticker.url}, autostart_order: 2}}
    """))
    daemon = Daemon(tmp_path / "data", "--plugins-file", str(declared), "--start-timeout", "4",
                    "--backoff-initial", "30")
    with daemon.serving(), daemon.client() as api:  # added from the file: both start
        wait_until(lambda: api.get("/health/ready").status_code == 200, 120, what="the plugins file applied")
        assert {name: r["state"] for name, r in _records(api).items()} == {"first": "running", "second": "running"}
    marker.write_text("")
    with daemon.serving(), daemon.client() as api:  # restored in order: first hangs
        wait_until(lambda: api.get("/health/ready").status_code == 200, 120, what="the start order done")
        records = _records(api)
        assert records["second"]["state"] == "running", records["second"]
        assert records["first"]["state"] in ("crashed", "starting"), records["first"]
        killed = [t for t in records["first"]["transitions"] if t["to_state"] == "crashed"]
        assert killed and "did not start within 4 s" in killed[0]["reason"], records["first"]["transitions"]
        assert datetime.fromisoformat(killed[0]["at"]) <= _first(records["second"], "starting")


def test_a_request_refused_below_the_app_says_ok_false_too(daemon: Daemon) -> None:
    """iocmng's scripts test ``ok`` on every answer: the errors the HTTP layer writes itself
    (a request that is not HTTP) carry it as the API's own do."""
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=30) as conn:
        conn.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 422"), answer  # INVALID_REQUEST's status
    error = json.loads(body)
    assert (error["ok"], error["code"]) == (False, "INVALID_REQUEST"), error


def test_startup_mode_is_the_one_the_worker_runs(api: httpx.Client, repos: dict[str, Any]) -> None:
    """iocmng's ``triggered: true`` given as an override (config.yaml says no mode): the start-up
    metadata names the mode and the control PVs the worker built (RUN), not config.yaml's alone."""
    added = api.post("/tasks", json={"name": "trig", "git_url": repos["task"].url,
                                     "parameters": {"triggered": True}})
    assert added.status_code == 201, added.text
    try:
        info = api.get("/tasks/trig/startup").json()
        assert info["mode"] == "triggered" and "RUN" in info["base_control_pvs"], info
        assert set(info["base_control_pvs"]) <= set(info["built_pvs"]), info
    finally:
        assert api.delete("/tasks/trig").status_code == 200


# -- the pure parts: the order key and the file's entries ------------------------------------------


@given(st.lists(st.tuples(st.text("abcz-", min_size=1, max_size=4), st.none() | st.integers(-5, 5)),
                unique_by=lambda item: item[0]))
def test_boot_order_is_ascending_order_then_unordered_then_name(plugins: list[tuple[str, int | None]]) -> None:
    ordered = [name for name, order in sorted(plugins, key=lambda item: boot_order(item[1], item[0]))]
    with_order = sorted((order, name) for name, order in plugins if order is not None)
    without = sorted(name for name, order in plugins if order is None)
    assert ordered == [name for _, name in with_order] + without


def test_plugins_file_keeps_the_boot_fields(tmp_path: Path) -> None:
    """MANUAL "Pre-loading Plugins on Startup": both fields on an entry, as iocmng documents them."""
    path = tmp_path / "plugins.yaml"
    path.write_text("plugins:\n"
                    "  - {name: beam-monitor, git_url: https://git.example.org/t.git, path: tasks/monitor,\n"
                    "     auto_start: true, auto_start_on_boot: true, autostart_order: 10}\n"
                    "  - {name: later, git_url: https://git.example.org/t.git, autostart_order: ten}\n")
    declared = load_plugins_file(path)
    assert [(r.name, r.auto_start_on_boot, r.autostart_order) for r in declared.requests] == \
        [("beam-monitor", True, 10)]
    assert len(declared.problems) == 1 and "plugins[1] (later): autostart_order:" in declared.problems[0]


def test_iocmng_server_variables_configure_the_daemon() -> None:
    """MANUAL "Environment Variables": an iocmng deployment's IOCMNG_PREFIX, IOCMNG_HOST,
    IOCMNG_PORT and IOCMNG_LOG_LEVEL (any case) keep their meaning; iochost's own names win."""
    iocmng_env = {"IOCMNG_PREFIX": "SPARC:CONTROL", "IOCMNG_HOST": "127.0.0.2", "IOCMNG_PORT": "8099",
                  "IOCMNG_LOG_LEVEL": "DEBUG"}
    settings = Settings.from_sources({}, iocmng_env)
    assert (settings.prefix, settings.host, settings.port, settings.log_level) == (
        "SPARC:CONTROL", "127.0.0.2", 8099, "debug")
    both = Settings.from_sources({}, iocmng_env | {"IOCHOST_PREFIX": "BL1", "IOCHOST_PORT": "8100"})
    assert (both.prefix, both.port) == ("BL1", 8100)
    with pytest.raises(ValueError, match="log_level"):
        Settings.from_sources({}, {"IOCMNG_LOG_LEVEL": "chatty"})
