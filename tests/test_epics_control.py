"""Control from the panel and access security, end to end: a real ``iochost serve``, real
workers, real CA (libca) and PVA (pvxs) clients on loopback, and real EPICS access
security files (ACF) loaded by every worker's iocInit."""

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
from test_display import parse, write_actions
from iochost.config.pvnames import PLUGIN_NAME_LENGTH
from iochost.errors import ErrorCode, IochostError
from iochost.settings import Settings
from iochost.supervisor.daemon_ioc import CONTROL_LENGTH, RowTable, control_target, short_text, system_config

# Module-scoped daemons live until the module ends: each gets a prefix of its own, so a
# CA client's channel to one daemon's IOCHOST:STOP is never another's.
SYSTEM = "IOCHP:IOCHOST:"  # the plain daemon, below: not the IOCHT:IOCHOST:* earlier modules' daemons served
SECURED, LOCKED, BROKEN = "IOCHS:IOCHOST:", "IOCHL:IOCHOST:", "IOCHB:IOCHOST:"
CONTROL_PVS = [SYSTEM + pv for pv in ("START", "STOP", "RESTART", "CONTROL_MSG")]
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


def test_a_refused_request_says_why_in_control_msg(secured_api, repos, ca):
    record = add(secured_api, "idle", plugin_repo(repos, "idle", TICKER, TICKER_CONFIG, module="ticker"))
    put_name(ca, SECURED + "RESTART", "idle")
    wait_for(lambda: _control_msg(ca) == "restarted idle", timeout=20, what="restart")
    put_name(ca, SECURED + "START", "idle")  # it runs: the lifecycle refuses
    wait_for(lambda: _control_msg(ca).startswith("'idle' is running; cannot start"), timeout=10,
             what="INVALID_STATE as CONTROL_MSG")
    assert _state(secured_api, "idle") == "running"
    delete(secured_api, record["name"])


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
    assert f"epics_access_security: Value error, {missing} cannot be read" in result.stderr


# -- the plain daemon: no --epics-control ---------------------------------------------------
@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """conftest's plain daemon under a prefix of this module's own: this process's libca
    keeps a channel per name for the session, and one to a PV of a daemon an earlier module
    stopped reconnects only on libca's next disconnect-governor tick (up to 10 s)."""
    root = tmp_path_factory.mktemp("plain")
    with Daemon(root / "data", "--backoff-initial", "1", "--heartbeat-interval", "0.5",
                "--prefix", SYSTEM.split(":")[0]).serving() as d:
        yield d


def _row_of(ca: Any, name: str, rows: int = 10) -> int | None:
    names = ca.caget([f"{SYSTEM}ROW{n:03d}:NAME" for n in range(1, rows + 1)], timeout=3)
    return next((n for n, value in enumerate(names, 1) if value == name), None)


def test_without_the_flag_the_control_pvs_do_not_exist(daemon, ca):
    wait_for(lambda: ca.caget(SYSTEM + "ROWS", timeout=3) == 100, timeout=20, what="the daemon's IOC")
    assert ca_search(CONTROL_PVS) == set()
    assert ca_search([SYSTEM + "ROW100:STATE"]) == {SYSTEM + "ROW100:STATE"}


def test_table_rows_follow_a_plugin_through_add_stop_and_delete(daemon, api, repos, ca):
    wait_for(lambda: ca.caget(SYSTEM + "ROWS", timeout=3), timeout=20, what="the daemon's IOC")
    add(api, "rowa", plugin_repo(repos, "rowa", TICKER, TICKER_CONFIG, module="ticker"))
    row = wait_for(lambda: _row_of(ca, "rowa"), timeout=10, what="rowa's row")
    cell = f"{SYSTEM}ROW{row:03d}:"
    wait_for(lambda: ca.caget(cell + "STATE", datatype=ca.DBR_STRING, timeout=3) == "running", what="running")
    assert ca.caget(cell + "KIND", timeout=3) == "task"
    assert ca.caget(cell + "STATE", format=ca.FORMAT_TIME, timeout=3).severity == 0
    api.post("/plugins/rowa/stop")
    wait_for(lambda: ca.caget(cell + "STATE", datatype=ca.DBR_STRING, timeout=3) == "stopped", what="stopped")
    assert ca.caget(cell + "STATE", format=ca.FORMAT_TIME, timeout=3).severity == 1  # MINOR
    delete(api, "rowa")
    wait_for(lambda: ca.caget(cell + "NAME", timeout=3) == "", what="row released")
    assert ca.caget(cell + "STATE", datatype=ca.DBR_STRING, timeout=3) == "deleted"
    add(api, "rowb", plugin_repo(repos, "rowb", TICKER, TICKER_CONFIG, module="ticker"))
    wait_for(lambda: _row_of(ca, "rowb") == row, timeout=10, what="the lowest free row reused")
    delete(api, "rowb")


def test_row_table_gives_the_lowest_free_row_and_queues_past_the_end():
    table = RowTable(2)
    assert [table.appear(name) for name in ("a", "b", "c", "d")] == [1, 2, None, None]
    assert table.appear("a") == 1  # kept while it exists
    table.release("b")
    assert table.rows() == {"a": 1, "c": 2}  # the first waiting plugin takes the freed row
    table.release("d")  # gone while waiting
    table.release("a")
    assert table.rows() == {"c": 2}
    assert table.appear("e") == 1


# -- whole names only: 39 and 40 characters, control characters, the text log ---------------
FORGE = "IOCHF:IOCHOST:"  # the text-log daemon, below
LONG = "n" * PLUGIN_NAME_LENGTH  # the longest plugin name
SHORT = LONG[:-1]  # what a stringout (39 characters) kept of LONG: another plugin
CHATTY = """
    from iochost import TaskBase

    class Chatty(TaskBase):
        def initialize(self):
            self.logger.info("hello\\nFORGED-BY-PLUGIN a line of its own")

        def execute(self):
            pass

        def cleanup(self):
            pass
"""


@pytest.fixture(scope="module")
def texty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """--epics-control, no ACF, and the daemon's default text log (the harness asks for JSON)."""
    root = tmp_path_factory.mktemp("texty")
    yield from _daemon(root, FORGE, "--epics-control", "--log-format", "text")


@pytest.fixture(scope="module")
def twins(texty: Daemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Plugins named with 39 and 40 characters, the shorter the longer's prefix; an API client."""
    repos = tmp_path_factory.mktemp("twins")
    with texty.client() as api:
        for name in (SHORT, LONG):
            add(api, name, plugin_repo(repos, name, TICKER, TICKER_CONFIG, module="ticker"))
        wait_for(lambda: ca_search([FORGE + "STOP"]) == {FORGE + "STOP"}, timeout=20, what="the daemon's IOC")
        yield api


def _running(api: Any) -> dict[str, int]:
    """Both twins' pids; each must be running."""
    records = {name: api.get(f"/plugins/{name}").json() for name in (SHORT, LONG)}
    assert {name: r["state"] for name, r in records.items()} == {SHORT: "running", LONG: "running"}, records
    return {name: r["pid"] for name, r in records.items()}


def _control_events(events: EventStream) -> list[tuple[str, str]]:
    return [(e["plugin"], e["data"]["phase"]) for e in list(events.events) if e["type"] == "control"]


def _forge_msg(ca: Any) -> str:
    return ca.caget(FORGE + "CONTROL_MSG", timeout=3)


def _stop_by_index_button(api: Any, ca: Any, pva: Any) -> None:
    """The index display's STOP button of LONG, pressed as Phoebus's CA client does it: the
    action's string written to the char array PV (its characters and a NUL)."""
    actions = write_actions(parse(api.get("/displays/index.bob").content))
    pv, value = next((pv, value) for pv, value in actions if pv == FORGE + "STOP" and value == LONG)
    put_name(ca, pv, value)


def _stop_by_caproto(api: Any, ca: Any, pva: Any) -> None:
    from caproto.sync.client import write

    write(FORGE + "STOP", LONG, notify=True, timeout=5, repeater=False)  # caproto's own client


def _stop_by_pva(api: Any, ca: Any, pva: Any) -> None:
    pva.put(FORGE + "STOP", LONG, timeout=5)


@pytest.mark.parametrize("stop", [_stop_by_index_button, _stop_by_caproto, _stop_by_pva],
                         ids=["cothread-index-button", "caproto", "pva"])
def test_stop_of_a_40_character_name_stops_exactly_that_plugin(twins, ca, pva, stop):
    api = twins
    before = wait_until(lambda: _running(api), what="both twins running")
    stop(api, ca, pva)
    wait_until(lambda: api.get(f"/plugins/{LONG}").json()["state"] == "stopped", what=f"{LONG} stopped")
    wait_for(lambda: _forge_msg(ca) == short_text(f"stopped {LONG}"), timeout=10, what="CONTROL_MSG")
    short = api.get(f"/plugins/{SHORT}").json()
    assert (short["state"], short["pid"], short["desired_state"]) == ("running", before[SHORT], "running")
    assert api.post(f"/plugins/{LONG}/start").status_code == 200


def test_a_plain_string_write_of_40_characters_never_acts(texty, twins, ca):
    """DBR_STRING holds 39 characters and a NUL: libca refuses 40, and the IOC refuses a
    DBR_STRING into the char array (it would read it as a number); neither names SHORT, nor
    hands over the name written before (EPICS processes the record after a refused put)."""
    from caproto import ChannelType
    from caproto.sync.client import write

    before = wait_until(lambda: _running(twins), what="both twins running")
    with EventStream(texty) as events:
        put_name(ca, FORGE + "STOP", "earlier")  # the name written before
        wait_for(lambda: _forge_msg(ca) == "no plugin named 'earlier'", timeout=10, what="the earlier outcome")
        with pytest.raises(CAException, match="Invalid string"):
            ca.caput(FORGE + "STOP", LONG, datatype=ca.DBR_STRING, wait=True, timeout=5)
        answer = write(FORGE + "STOP", LONG, data_type=ChannelType.STRING, notify=True, timeout=5, repeater=False)
        assert answer.status.name == "ECA_PUTFAIL", answer
        put_name(ca, FORGE + "STOP", "nosuch")  # after them: their requests, had there been any, came first
        wait_for(lambda: _forge_msg(ca) == "no plugin named 'nosuch'", timeout=10, what="the marker's outcome")
        wait_until(lambda: ("nosuch", "failed") in _control_events(events), timeout=10, what="the marker's events")
    assert _control_events(events) == [("earlier", "requested"), ("earlier", "failed"),
                                       ("nosuch", "requested"), ("nosuch", "failed")]
    assert _running(twins) == before


def test_a_name_with_a_control_character_is_refused_and_logged_on_one_escaped_line(texty, twins, ca, pva):
    before = wait_until(lambda: _running(twins), what="both twins running")
    forged = "nosuch\nFORGED-BY-CA a line of its own"
    with EventStream(texty) as events:
        put_name(ca, FORGE + "STOP", forged)
        why = f"control character in name: {forged!r}"
        wait_for(lambda: _forge_msg(ca) == short_text(why), timeout=10, what="the refusal in CONTROL_MSG")
        pva.put(FORGE + "RESTART", SHORT + "\n", timeout=5)  # a whole name and a newline: not the name
        wait_for(lambda: _forge_msg(ca) == short_text(f"control character in name: {SHORT + chr(10)!r}"),
                 timeout=10, what="the second refusal")
        wait_until(lambda: len([e for e in events.events if e["type"] == "control"]) >= 2, timeout=10,
                   what="the refusals' events")
    refusals = [e for e in events.events if e["type"] == "control"]
    assert [(e["plugin"], e["data"]["action"], e["data"]["phase"], e["data"]["code"]) for e in refusals] == [
        (forged, "stop", "failed", "INVALID_REQUEST"), (SHORT + "\n", "restart", "failed", "INVALID_REQUEST")]
    assert refusals[0]["data"]["message"] == why
    assert _running(twins) == before  # the restart of SHORT was refused: same pids
    lines = [line for line in texty.log().splitlines() if "FORGED-BY-CA" in line]
    assert len(lines) == 1 and "iochost.supervisor: epics: stop refused: INVALID_REQUEST control character" \
        in lines[0] and "'nosuch\\nFORGED-BY-CA a line of its own'" in lines[0], lines


def test_a_plugin_log_message_with_a_newline_is_one_escaped_line_of_the_text_log(texty, repos):
    with texty.client() as api:
        add(api, "chatty", plugin_repo(repos, "chatty", CHATTY, "parameters: {interval: 1.0}\n"))
        wait_until(lambda: "FORGED-BY-PLUGIN" in texty.log(), timeout=10, what="the plugin's message")
        lines = [line for line in texty.log().splitlines() if "FORGED-BY-PLUGIN" in line]
        assert len(lines) == 1 and "iochost.plugin.chatty: hello\\nFORGED-BY-PLUGIN a line" in lines[0], lines
        delete(api, "chatty")


# -- the rules alone ---------------------------------------------------------------------------
def test_control_pvs_hold_more_than_the_longest_name():
    inputs = system_config(Settings(epics_control=True))["pvs"]["inputs"]
    assert {pv: spec["length"] for pv, spec in inputs.items()} == dict.fromkeys(("START", "STOP", "RESTART"),
                                                                                  CONTROL_LENGTH)
    assert CONTROL_LENGTH >= PLUGIN_NAME_LENGTH + 4  # a longer write cut between UTF-8 characters is still longer


@pytest.mark.parametrize(("text", "why"), [
    (LONG + "n", "name over 40 characters: 'nnnnnnnn"), ("a\nb", "control character in name: 'a\\nb'"),
    (SHORT + "\r", "control character in name"), ("a\x1b[2Jb", "control character in name: 'a\\x1b[2Jb'"),
    ("a\u2028b", "control character in name"), (" a", "not a plugin name: ' a'"), ("a.b", "not a plugin name"),
    ("é", "not a plugin name"), ("", "not a plugin name"),
])
def test_control_target_refuses_what_is_not_a_whole_name(text, why):
    with pytest.raises(IochostError) as refused:
        control_target(text)
    assert refused.value.code == ErrorCode.INVALID_REQUEST and refused.value.message.startswith(why)


def test_control_target_takes_a_whole_name_as_it_is():
    for name in (LONG, SHORT, "a", "beam-shutter_2"):
        assert control_target(name) == name
