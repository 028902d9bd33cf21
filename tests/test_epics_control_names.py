"""The control PVs' plugin table and the names written to them, end to end: a real ``iochost serve``, real workers,
real CA (libca) and PVA (pvxs) clients on loopback.

The table's rows follow a plugin through add, stop and delete; a stop of a 40-character name stops exactly that
plugin whichever client writes it; plain string writes, control characters and newlines never act and are logged on
one escaped line.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest
from cothread.cadef import CAException

from conftest import ca_search, wait_for
from daemon_harness import Daemon, EventStream, add, delete, wait_until
from gitrepos import plugin_repo
from iochost.config.pvnames import PLUGIN_NAME_LENGTH
from iochost.errors import ErrorCode, IochostError
from iochost.settings import Settings
from iochost.supervisor.daemon_ioc import CONTROL_LENGTH, RowTable, control_target, short_text, system_config
from sample_plugins import TICKER, TICKER_CONFIG
from test_display import parse, write_actions
from test_epics_control import _daemon, put_name

# Module-scoped daemons live until the module ends: each gets a prefix of its own, so a
# CA client's channel to one daemon's IOCHOST:STOP is never another's.
SYSTEM = "IOCHP:IOCHOST:"  # the plain daemon, below: not the IOCHT:IOCHOST:* earlier modules' daemons served
CONTROL_PVS = [SYSTEM + pv for pv in ("START", "STOP", "RESTART", "CONTROL_MSG")]


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


@pytest.mark.slow
def test_without_the_flag_the_control_pvs_do_not_exist(daemon, ca):
    wait_for(lambda: ca.caget(SYSTEM + "ROWS", timeout=3) == 100, timeout=20, what="the daemon's IOC")
    assert ca_search(CONTROL_PVS) == set()
    assert ca_search([SYSTEM + "ROW100:STATE"]) == {SYSTEM + "ROW100:STATE"}


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_control_target_takes_a_whole_name_as_it_is():
    for name in (LONG, SHORT, "a", "beam-shutter_2"):
        assert control_target(name) == name

