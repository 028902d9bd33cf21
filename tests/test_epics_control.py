"""Control from the panel and access security, end to end: a real ``iochost serve``, real
workers, real CA (libca) and PVA (pvxs) clients on loopback, and real EPICS access
security files (ACF) loaded by every worker's iocInit.

Stop, start and restart by a CA put of the plugin's name, refusals in the control message, and
ACFs that admit, refuse, break or cannot be read. The plugin table and names at the edges (40
characters, control characters) are in test_epics_control_names.py."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
from cothread.cadef import CAException

from conftest import ca_search, daemon_environ, wait_for
from daemon_harness import Daemon, EventStream, add, delete, wait_until
from gitrepos import plugin_repo
from sample_plugins import TICKER, TICKER_CONFIG

SECURED, LOCKED, BROKEN = "IOCHS:IOCHOST:", "IOCHL:IOCHOST:", "IOCHB:IOCHOST:"
USER = pwd.getpwuid(os.getuid()).pw_name  # what libca and pvxs claim for this process

# Write to plugin inputs for the UAG "operators" only, to the control PVs for operators at
# a console (HAG: by the client's address); read for all. Records whose group the file
# leaves out (plugin outputs: no ASG) fall back to DEFAULT.
ACF = """
UAG(operators) {{ {users} }}
HAG(consoles) {{ localhost }}
ASG(DEFAULT) {{ RULE(1, READ) }}
ASG(IOCHOST_INPUTS) {{ RULE(1, READ) RULE(1, WRITE) {{ UAG(operators) }} }}
ASG(IOCHOST_CONTROL) {{ RULE(1, READ) RULE(1, WRITE) {{ UAG(operators) HAG(consoles) }} }}
"""

SNEAKY = """
    from iochost import TaskBase
    from iochost.contract.messages import ControlRequest

    class Sneaky(TaskBase):
        def _attach_channel(self, channel):  # the hook the daemon's own IOC uses
            self.channel = channel

        def initialize(self):
            self.channel.send(ControlRequest(action="stop", plugin="victim"))

        def execute(self):
            pass

        def cleanup(self):
            pass
"""


def _daemon(root: Path, system: str, *args: str) -> Iterator[Daemon]:
    prefix = system.split(":")[0]
    with Daemon(root / "data", "--heartbeat-interval", "0.5", "--prefix", prefix, *args).serving() as daemon:
        yield daemon


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """--epics-control with an ACF whose operators include this process's user."""
    root = tmp_path_factory.mktemp("secured")
    acf = root / "allow.acf"
    acf.write_text(ACF.format(users=USER))
    yield from _daemon(root, SECURED, "--epics-control", "--epics-access-security", str(acf))


@pytest.fixture(scope="module")
def secured_api(secured: Daemon) -> Iterator[Any]:
    with secured.client() as client:
        yield client


def _state(api: Any, name: str) -> str:
    return api.get(f"/plugins/{name}").json()["state"]


def put_name(ca: Any, pv: str, name: str) -> None:
    """Write a name to a control PV, a long string (a char array), as ``caput -S`` and
    Phoebus's CA write a string to one: its characters and a NUL."""
    ca.caput(pv, name, datatype=ca.DBR_CHAR_STR, wait=True, timeout=5)


def _as_typed(ca: Any, value: Any) -> dict[str, Any]:
    return {"datatype": ca.DBR_CHAR_STR} if isinstance(value, str) else {}


def _control_msg(ca: Any) -> str:
    return ca.caget(SECURED + "CONTROL_MSG", timeout=3)


@pytest.mark.slow
def test_stop_start_restart_by_a_ca_put_of_the_plugin_name(secured, secured_api, repos, ca, pva):
    api = secured_api
    record = add(api, "shutter", plugin_repo(repos, "shutter", TICKER, TICKER_CONFIG, module="ticker"))
    pv = record["pv_prefix"] + ":VALUE"
    wait_for(lambda: ca.caget(pv, timeout=3) >= 1, timeout=20, what="shutter up")
    wait_for(lambda: _control_msg(ca) == "", timeout=20, what="the daemon's IOC up")
    with EventStream(secured) as events:
        put_name(ca, SECURED + "STOP", "shutter")
        wait_until(lambda: _state(api, "shutter") == "stopped", what="stopped by STOP")
        assert api.get("/plugins/shutter").json()["desired_state"] == "stopped"
        assert ca_search([pv]) == set()  # its PVs left the network
        wait_for(lambda: _control_msg(ca) == "stopped shutter", timeout=10, what="CONTROL_MSG after STOP")

        pva.put(SECURED + "START", "shutter", timeout=5)  # PVA: the same control, the same ACF
        wait_until(lambda: _state(api, "shutter") == "running", what="running after START")
        started = api.get("/plugins/shutter").json()["pid"]
        wait_for(lambda: ca_search([pv]) == {pv}, timeout=20, what="PVs back after START")  # a fresh search
        wait_for(lambda: _control_msg(ca) == "started shutter", timeout=10, what="CONTROL_MSG after START")

        put_name(ca, SECURED + "RESTART", "shutter")
        wait_for(lambda: _control_msg(ca) == "restarted shutter", timeout=20, what="CONTROL_MSG after RESTART")
        restarted = api.get("/plugins/shutter").json()
        assert restarted["state"] == "running" and restarted["pid"] not in (None, started)

        put_name(ca, SECURED + "STOP", "nosuch")
        wait_for(lambda: _control_msg(ca) == "no plugin named 'nosuch'", timeout=10, what="unknown name")
        assert api.get("/plugins/shutter").json()["pid"] == restarted["pid"]  # nothing else changed
        wait_until(lambda: len([e for e in events.events if e["type"] == "control"]) >= 8, timeout=10,
                   what="control events")
    control = [e for e in events.events if e["type"] == "control"]
    assert {e["data"]["origin"] for e in control} == {"epics"}
    assert [(e["plugin"], e["data"]["action"], e["data"]["phase"]) for e in control] == [
        ("shutter", "stop", "requested"), ("shutter", "stop", "done"),
        ("shutter", "start", "requested"), ("shutter", "start", "done"),
        ("shutter", "restart", "requested"), ("shutter", "restart", "done"),
        ("nosuch", "stop", "requested"), ("nosuch", "stop", "failed")]
    assert control[-1]["data"]["code"] == "PLUGIN_NOT_FOUND"
    assert '"epics: stop nosuch refused: PLUGIN_NOT_FOUND' in secured.log().replace("\\", "")
    delete(api, "shutter")


@pytest.mark.slow
def test_a_refused_request_says_why_in_control_msg(secured_api, repos, ca):
    record = add(secured_api, "idle", plugin_repo(repos, "idle", TICKER, TICKER_CONFIG, module="ticker"))
    put_name(ca, SECURED + "RESTART", "idle")
    wait_for(lambda: _control_msg(ca) == "restarted idle", timeout=20, what="restart")
    put_name(ca, SECURED + "START", "idle")  # it runs: the lifecycle refuses
    wait_for(lambda: _control_msg(ca).startswith("'idle' is running; cannot start"), timeout=10,
             what="INVALID_STATE as CONTROL_MSG")
    assert _state(secured_api, "idle") == "running"
    delete(secured_api, record["name"])


@pytest.mark.slow
def test_an_acf_that_includes_the_user_lets_it_write_inputs_over_ca_and_pva(secured_api, repos, ca, pva):
    record = add(secured_api, "open", plugin_repo(repos, "open", TICKER, TICKER_CONFIG, module="ticker"))
    prefix = record["pv_prefix"]
    wait_for(lambda: ca.caget(prefix + ":VALUE", timeout=3) >= 1, timeout=20, what="up")
    ca.caput(prefix + ":GAIN", 4.5, wait=True, timeout=5)
    assert ca.caget(prefix + ":GAIN", timeout=3) == 4.5
    pva.put(prefix + ":GAIN", 5.5, timeout=5)
    assert ca.caget(prefix + ":GAIN", timeout=3) == 5.5
    ca.caput(prefix + ":ENABLE", 1, wait=True, timeout=5)  # ENABLE is IOCHOST_INPUTS too
    assert ca.caget([prefix + ":GAIN.ASG", prefix + ":ENABLE.ASG", SECURED + "STOP.ASG", SECURED + "START.ASG"],
                    timeout=3) == ["IOCHOST_INPUTS", "IOCHOST_INPUTS", "IOCHOST_CONTROL", "IOCHOST_CONTROL"]
    # An output has no group of IOCHOST's: DEFAULT, which this file makes read-only.
    with pytest.raises(CAException, match="Write access denied"):
        ca.caput(prefix + ":VALUE", 99, wait=True, timeout=5)
    delete(secured_api, "open")


@pytest.mark.slow
def test_a_plugin_worker_sending_a_control_request_is_ignored(secured, secured_api, repos):
    victim = add(secured_api, "victim", plugin_repo(repos, "victim", TICKER, TICKER_CONFIG, module="ticker"))
    with EventStream(secured) as events:
        add(secured_api, "sneaky", plugin_repo(repos, "sneaky", SNEAKY, "parameters: {interval: 1.0}\n"))
        wait_until(lambda: "control request" in secured.log() and "from a plugin's worker ignored" in secured.log(),
                   timeout=10, what="the ignored request in the daemon's log")
    assert not [e for e in events.events if e["type"] == "control"]
    after = secured_api.get("/plugins/victim").json()
    assert after["state"] == "running" and after["pid"] == victim["pid"]
    delete(secured_api, "sneaky")
    delete(secured_api, "victim")


# -- an ACF that does not include this user -------------------------------------------------
@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("locked")
    acf = root / "deny.acf"
    acf.write_text(ACF.format(users="not-" + USER))
    yield from _daemon(root, LOCKED, "--epics-control", "--epics-access-security", str(acf))


@pytest.mark.slow
def test_an_acf_without_the_user_refuses_its_writes_and_serves_its_reads(locked, repos, ca, pva):
    from p4p.client.thread import RemoteError

    with locked.client() as api:
        record = add(api, "guarded", plugin_repo(repos, "guarded", TICKER, TICKER_CONFIG, module="ticker"))
        prefix = record["pv_prefix"]
        wait_for(lambda: ca.caget(prefix + ":VALUE", timeout=3) >= 1, timeout=20, what="up")
        for pv, value in ((prefix + ":GAIN", 9.0), (prefix + ":ENABLE", 0), (LOCKED + "STOP", "guarded")):
            with pytest.raises(CAException, match="Write access denied"):
                ca.caput(pv, value, wait=True, timeout=5, **_as_typed(ca, value))
            with pytest.raises(RemoteError, match="not permitted"):
                pva.put(pv, value, timeout=5)
        assert ca.caget(prefix + ":GAIN", timeout=3) == 2.5  # reads work, the value is untouched
        assert pva.get(prefix + ":GAIN", timeout=5).value == 2.5
        assert ca.caget(LOCKED + "CONTROL_MSG", timeout=3) == ""
        assert api.get("/plugins/guarded").json()["state"] == "running"
        delete(api, "guarded")


@pytest.mark.slow
def test_an_acf_that_epics_rejects_stops_the_daemon_at_start_with_its_line(tmp_path):
    acf = tmp_path / "broken.acf"
    acf.write_text("UAG(ops) {alice}\nASG(DEFAULT) {\n  RULE(1, READ)\n  RULE(1, WRITE) { UAG(opz) }\n}\n")
    result = subprocess.run([sys.executable, "-m", "iochost", "serve", "--data-dir", str(tmp_path / "data"),
                             "--epics-access-security", str(acf)], env=daemon_environ(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert f"access security file {acf} is refused by EPICS" in result.stderr
    assert "line 4" in result.stderr and "No User Access Group named 'opz'" in result.stderr
    assert not (tmp_path / "data" / "registry.json").exists()


@pytest.mark.slow
def test_an_acf_broken_after_the_start_fails_new_workers_naming_the_file(tmp_path, repos, ca):
    """An operator edits the file in place: the next worker refuses to serve without it."""
    acf = tmp_path / "site.acf"
    acf.write_text("ASG(DEFAULT) {\n  RULE(1, READ)\n  RULE(1, WRITE)\n}\n")
    with Daemon(tmp_path / "data", "--prefix", "IOCHB", "--epics-access-security", str(acf)).serving() as daemon:
        with daemon.client() as api:
            wait_for(lambda: ca.caget(BROKEN + "UPTIME", timeout=3) is not None, timeout=20, what="the daemon's IOC")
            acf.write_text("ASG(DEFAULT) { RULE(1, READ\n")
            response = api.post("/plugins", json={"name": "never", "git_url": plugin_repo(
                repos, "never", TICKER, TICKER_CONFIG, module="ticker").url})
            assert response.status_code >= 400, response.text
            assert f"access security file {acf} was rejected" in response.text
            assert ca_search(["IOCHB:NEVER:VALUE"]) == set()  # nothing served unprotected


def test_an_unreadable_acf_stops_the_daemon_at_start(tmp_path):
    missing = tmp_path / "missing.acf"
    result = subprocess.run([sys.executable, "-m", "iochost", "serve", "--data-dir", str(tmp_path / "data"),
                             "--epics-access-security", str(missing)], env=daemon_environ(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"epics_access_security {missing} cannot be read" in result.stderr

