"""What a plugin's page reads beyond its record, over real HTTP from a real ``iochost serve``:
its PVs described (``/pvs``) and followed through the PV gateway (``/pvs/events``, monitors
shared between streams and stopped with the last), its log followed as the worker writes it
(``/logs/events``: whole lines, bytes that are not UTF-8 shown as U+FFFD), and the
config.yaml it runs (``/config``)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import wait_for
from daemon_harness import Daemon, EventStream, add
from gitrepos import Repo
from iochost.sdk.status import TaskStatus
from iochost.supervisor.log_feed import LogFeed

TALKER = """
    import os
    from iochost import TaskBase

    class Talker(TaskBase):
        def initialize(self):
            os.write(1, b"talker ready\\n")

        def execute(self):
            self.set_pv("COUNT", self.get_pv("COUNT") + 1)

        def on_input(self, name, value):
            if name == "SAY":  # a line in two writes, with a Latin-1 byte
                os.write(1, b"said caf\\xe9 ")
                os.write(1, value.encode("utf-8", "surrogateescape") + b"\\n")

        def cleanup(self):
            pass
"""
TALKER_CONFIG = """\
parameters: {interval: 0.5}
pvs:
  inputs:
    GAIN: {type: float, value: 2.5, unit: V, prec: 2, low: 0, high: 10, description: Amplifier gain}
    SAY: {type: string, value: ""}
  outputs:
    COUNT: {type: int, value: 0}
"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, dict[str, Any]]]:
    root = tmp_path_factory.mktemp("views")
    repo = Repo(root / "talker").write({"talker.py": TALKER, "config.yaml": TALKER_CONFIG})
    repo.commit("talker")
    d = Daemon(root / "data")
    with d.serving(), d.client() as api:
        yield d, add(api, "talker", repo)


def test_the_pvs_are_described_as_the_panel_shows_them(daemon: tuple[Daemon, dict[str, Any]]) -> None:
    d, record = daemon
    with d.client() as api:
        pvs = {pv["name"]: pv for pv in api.get("/plugins/talker/pvs").json()["pvs"]}
        assert api.get("/plugins/nobody/pvs").json()["code"] == "PLUGIN_NOT_FOUND"
    base = record["pv_prefix"]
    assert set(record["pvs"]) <= {pv["pv"] for pv in pvs.values()}  # every PV the worker serves
    gain = pvs["GAIN"]
    assert (gain["pv"], gain["group"], gain["label"], gain["unit"], gain["prec"], gain["low"], gain["high"],
            gain["writable"]) == (f"{base}:GAIN", "inputs", "Amplifier gain", "V", 2, 0, 10, True)
    assert (pvs["COUNT"]["group"], pvs["COUNT"]["writable"]) == ("outputs", False)
    assert (pvs["ENABLE"]["group"], pvs["ENABLE"]["shape"], pvs["ENABLE"]["writable"]) == ("plugin", "switch", True)
    assert pvs["STATUS"]["choices"] == [member.name for member in TaskStatus]  # the mbbi's states, by index
    assert pvs["STATUS"]["writable"] is False and pvs["RESET"]["shape"] == "command"


def test_the_config_it_runs(daemon: tuple[Daemon, dict[str, Any]]) -> None:
    d, record = daemon
    with d.client() as api:
        config = api.get("/plugins/talker/config").json()
    assert config == {"name": "talker", "commit": record["source"]["commit"], "file": "config.yaml",
                      "text": TALKER_CONFIG}


def test_the_log_is_followed_in_whole_lines(daemon: tuple[Daemon, dict[str, Any]], ca: Any) -> None:
    d, record = daemon
    with EventStream(d, "/api/v1/plugins/talker/logs/events?lines=50") as stream:
        wait_for(lambda: stream.named and stream.named[0][0] == "tail", timeout=5, what="the tail")
        tail = stream.named[0][1]["lines"]
        assert "talker ready" in tail and len(tail) <= 50
        ca.caput(f"{record['pv_prefix']}:SAY", "hello", datatype=str, wait=True)
        wait_for(lambda: [line for name, data in stream.named[1:] if name == "lines" for line in data["lines"]],
                 timeout=10, what="the new line")
        said = [line for name, data in stream.named[1:] if name == "lines" for line in data["lines"]]
    assert said == ["said caf\ufffd hello"]  # one line from two writes; the Latin-1 byte shown as U+FFFD
    assert not any("said" in line for line in tail)  # what the tail had is not sent again, nor the reverse


def test_pv_streams_share_their_monitors_and_stop_them_with_the_last(
        daemon: tuple[Daemon, dict[str, Any]], ca: Any) -> None:
    d, record = daemon
    gain = f"{record['pv_prefix']}:GAIN"
    path = "/api/v1/plugins/talker/pvs/events"

    def watched() -> list[str]:
        with d.client() as api:
            return sorted(key for key in api.get("/pvs/monitors").json()["monitors"] if key.startswith("watch:"))

    with EventStream(d, path) as first:
        wait_for(lambda: any(n == "value" and e["pv_name"] == gain for n, e in first.named), timeout=15,
                 what="GAIN's value")
        keys = watched()
        assert f"watch:{gain}" in keys and len(keys) == len(record["pvs"])
        with EventStream(d, path) as second:
            wait_for(lambda: any(n == "value" and e["pv_name"] == gain for n, e in second.named), timeout=15,
                     what="GAIN's value on the second stream (the latest known, at once)")
            assert watched() == keys  # one monitor per PV, not one per page
            ca.caput(gain, 7.25, wait=True)
            for stream in (first, second):
                wait_for(lambda: any(n == "value" and e["pv_name"] == gain and e["value"] == 7.25
                                     for n, e in stream.named), timeout=5, what="the write, on both streams")
        assert watched() == keys  # the first still follows them
    wait_for(lambda: watched() == [], timeout=10, what="the monitors stopped with the last stream")


def test_an_unknown_plugin_is_404_not_an_empty_stream(daemon: tuple[Daemon, dict[str, Any]]) -> None:
    d, _ = daemon
    with d.client() as api:
        for path in ("/plugins/nobody/pvs/events", "/plugins/nobody/logs/events", "/plugins/nobody/config"):
            answer = api.get(path)
            assert (answer.status_code, answer.json()["code"]) == (404, "PLUGIN_NOT_FOUND"), path


# -- the log feed alone -----------------------------------------------------------------------------
def test_a_slow_follower_is_told_what_it_lost_and_never_slows_the_writer() -> None:
    async def scenario() -> list[Any]:
        feed = LogFeed()
        write = feed.publisher("p")
        lines = feed.follow("p", keepalive=5)
        other = feed.follow("q", keepalive=5)  # another plugin's follower hears nothing of p
        for n in range(300):  # more writes than a follower's queue holds; none blocks
            write(f"line {n}\n".encode())
        write(b"half a ")
        write(b"line\n")
        got = [await anext(lines), await anext(lines)]
        more = []
        while not (more and more[-1] == ["half a line"]):
            more.append(await anext(lines))
        await lines.aclose()
        await other.aclose()
        write(b"after\n")  # nobody follows: nothing is kept
        fresh = feed.follow("p", keepalive=0.01)
        first = await anext(fresh)  # a new follower starts from now: a keepalive, not old lines
        await fresh.aclose()
        return [got, more, first]

    got, more, first = asyncio.run(scenario())
    assert isinstance(got[0], int) and got[0] > 0  # the writes dropped, counted
    assert got[1][0].startswith("line ")
    assert more[-1] == ["half a line"]
    assert first is None
