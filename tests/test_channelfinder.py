"""create_device() and the ChannelFinder helpers (cf_search, cf_discover_devices, cf_create_device)
with iocmng 2.7.9's signatures: real ophyd devices (infn_ophyd_hal) reading a real soft IOC from a
plugin in a real worker, found through a ChannelFinder service.

ChannelFinder itself (a Java service with Elasticsearch) cannot run here: the tests start a small
HTTP server on 127.0.0.1 that answers ChannelFinder's documented channel query
(GET /ChannelFinder/resources/channels?~name=GLOB&PROPERTY=GLOB&~size=N) with its documented JSON
(a list of {"name", "owner", "properties": [{"name", "value", "owner"}], "tags"})."""

from __future__ import annotations

import fnmatch
import json
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from conftest import Processes, free_port, wait_for
from sample_plugins import make_plugin
from test_declarative import _ioc, _run_plugin, link_env  # noqa: F401 - link_env: a fixture


def _channel(name: str, **props: str) -> dict[str, Any]:
    return {"name": name, "owner": "cfeeder",
            "properties": [{"name": k, "value": v, "owner": "cfeeder"} for k, v in props.items()],
            "tags": [{"name": "archived", "owner": "cfeeder"}]}


class ChannelFinderStandIn:
    """Answers ChannelFinder's channel query from a list of channels; ``answer`` overrides the
    reply (status, body) to play a failing service. Records the queries it got."""

    def __init__(self, channels: list[dict[str, Any]]) -> None:
        self.channels = channels
        self.answer: tuple[int, bytes] | None = None
        self.queries: list[dict[str, str]] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                stand_in.queries.append(query)
                status, body = stand_in.answer or stand_in.reply(url.path, query)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/ChannelFinder"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reply(self, path: str, query: dict[str, str]) -> tuple[int, bytes]:
        if path != "/ChannelFinder/resources/channels":
            return 404, b'{"message": "not found"}'
        found = []
        for channel in self.channels:
            props = {p["name"]: p["value"] for p in channel["properties"]}
            if "~name" in query and not fnmatch.fnmatchcase(channel["name"], query["~name"]):
                continue
            if any(not fnmatch.fnmatchcase(props.get(k, ""), v) for k, v in query.items() if not k.startswith("~")):
                continue
            found.append(channel)
        return 200, json.dumps(found[:int(query.get("~size", "10000"))]).encode()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _catalogue(dev: str) -> list[dict[str, Any]]:
    """The feeder's view of one io/ai device at ``dev`` (two channels) and an unrelated motor."""
    return [_channel(f"{dev}:AI_RB", devgroup="io", devtype="ai", iocName="aiioc", zone="LAB"),
            _channel(f"{dev}:AI_SP", devgroup="io", devtype="ai", iocName="aiioc", zone="LAB"),
            _channel("ELSEWHERE:MOT:M1:RBV", devgroup="mot", devtype="asyn", iocName="motioc", zone="TUNNEL")]


@pytest.fixture
def stand_in() -> Iterator[ChannelFinderStandIn]:
    server = ChannelFinderStandIn([])
    try:
        yield server
    finally:
        server.close()


# The plugin of iocmng 2.7.9's QUICKSTART "Using Ophyd Devices" and TaskBase.cf_* docstrings, in our
# words: a device by prefix/group/type, then devices found through ChannelFinder.
DEVICE_USER = """
    from iocmng import TaskBase

    DEV = "{dev}"


    class DeviceUser(TaskBase):
        def initialize(self):
            self.direct = self.create_device(prefix=DEV, devgroup="io", devtype="ai", name="DIRECT")
            fresh = self.create_device(prefix=DEV, devgroup="io", devtype="ai", name="DIRECT", cache=False)
            self.set_pv("FRESH", int(fresh is not None and fresh is not self.direct))
            self.set_pv("NOCLASS", int(self.create_device("NOBODY:X", "nosuch", "thing") is None))
            self.set_pv("FOUND", len(self.cf_search(name=DEV + ":*", devgroup="io")))
            descriptors = self.cf_discover_devices(devgroup="io", devtype="ai")
            self.set_pv("DESCRIBED", ",".join(d["name"] + "@" + d["prefix"] for d in descriptors))
            self.found = self.cf_create_device(descriptors[0]) if descriptors else None

        def execute(self):
            same = self.direct is not None and self.direct is self.create_device(DEV, "io", "ai", name="DIRECT")
            same = same and self.get_device("DIRECT") is self.direct and self.found is self.get_device("AI1")
            self.set_pv("SAME", int(same))
            self.set_pv("DEVICES", ",".join(self.list_devices()))
            self.set_pv("DIRECT_VALUE", self.direct.get() if self.direct is not None else -1.0)
            self.set_pv("FOUND_VALUE", self.found.get() if self.found is not None else -1.0)

        def cleanup(self):
            pass
"""

DEVICE_USER_CONFIG = """
    parameters: {{interval: 0.5, channelfinder_url: "{url}", channelfinder_timeout: 5.0}}
    arguments:
      outputs:
        FRESH: {{type: int, value: -1}}
        NOCLASS: {{type: int, value: -1}}
        FOUND: {{type: int, value: -1}}
        DESCRIBED: {{type: string, value: ""}}
        SAME: {{type: int, value: -1}}
        DEVICES: {{type: string, value: ""}}
        DIRECT_VALUE: {{type: float, value: -1.0}}
        FOUND_VALUE: {{type: float, value: -1.0}}
"""


@pytest.mark.slow
def test_a_plugin_creates_devices_directly_and_through_channelfinder(
        tmp_path: Path, processes: Processes, link_env: dict[str, Any], stand_in: ChannelFinderStandIn) -> None:
    env, ports, ca = link_env["env"], link_env["ports"], link_env["ca"]
    dev = f"CFD{ports['dev']}:IO:AI1"
    _ioc(processes, env, ports["dev"], dev, "AI_RB")  # what an io/ai device (OphydAI) reads
    ca.caput(f"{dev}:AI_RB", 42.5)
    stand_in.channels = _catalogue(dev)
    plugin = make_plugin(tmp_path, "device_user", DEVICE_USER.format(dev=dev),
                         DEVICE_USER_CONFIG.format(url=stand_in.url))
    _run_plugin(processes, env, ports["plugin"], plugin, "du")
    pv = "DT:DU:"

    def get(name: str) -> Any:
        return ca.caget(pv + name, timeout=2)

    log = plugin / "run.log"
    wait_for(lambda: get("FOUND_VALUE") == 42.5, timeout=60,
             what=f"the device found in ChannelFinder read ({log.read_text(errors='replace')[-3000:]})")
    assert get("DIRECT_VALUE") == 42.5
    assert get("FRESH") == 1 and get("NOCLASS") == 1  # cache=False: a new object; no class: None
    assert get("FOUND") == 2  # both channels of the device, not the motor
    assert get("DESCRIBED") == f"AI1@{dev}"
    assert get("SAME") == 1  # cached under its name, and get_device() gives the same object
    assert get("DEVICES") == "DIRECT,AI1"
    assert {"~name": f"{dev}:*", "devgroup": "io", "~size": "10000"} in stand_in.queries
    assert "device X could not be created" in log.read_text(errors="replace")  # name: the last segment


class _Plugin:
    """A TaskBase not hosted by a worker, as plugin authors unit-test theirs."""

    @staticmethod
    def make(**parameters: Any) -> Any:
        from iochost import TaskBase

        class Probe(TaskBase):
            def initialize(self) -> None: ...

            def execute(self) -> None: ...

            def cleanup(self) -> None: ...

        return Probe(name="probe", parameters=parameters)


def test_discovered_descriptors_group_channels_by_device(stand_in: ChannelFinderStandIn) -> None:
    stand_in.channels = [*_catalogue("LAB:IO:AI1"), _channel("LAB:IO:AI2:AI_RB", devgroup="io", devtype="ai",
                                                             device="LAB:IO:AI2", iocName="aiioc2"),
                         _channel("BARE", devgroup="io", devtype="ai")]
    plugin = _Plugin.make(channelfinder_url=stand_in.url + "/")
    found = plugin.cf_discover_devices(devgroup="io")
    assert [(d["name"], d["prefix"], d["iocname"], d["pvs"]) for d in found] == [
        ("AI1", "LAB:IO:AI1", "aiioc", ["LAB:IO:AI1:AI_RB", "LAB:IO:AI1:AI_SP"]),
        ("AI2", "LAB:IO:AI2", "aiioc2", ["LAB:IO:AI2:AI_RB"]),  # the `device` property is the prefix
        ("BARE", "BARE", "", ["BARE"]),
    ]
    assert found[0]["devgroup"] == "io" and found[0]["devtype"] == "ai" and found[0]["properties"]["zone"] == "LAB"
    assert [c["name"] for c in plugin.cf_search(zone="TUNNEL")] == ["ELSEWHERE:MOT:M1:RBV"]
    assert stand_in.queries[-1] == {"~size": "10000", "zone": "TUNNEL"}
    assert plugin.cf_create_device({"name": "AI1", "prefix": "LAB:IO:AI1", "devgroup": "io"}) is None  # no devtype


def test_channelfinder_failures_name_the_url(stand_in: ChannelFinderStandIn) -> None:
    from iochost.sdk.channelfinder import ChannelFinderError

    plugin = _Plugin.make(channelfinder_url=stand_in.url, channelfinder_timeout=5.0)
    stand_in.answer = (200, b"<html>maintenance</html>")
    with pytest.raises(ChannelFinderError, match=rf"ChannelFinder at {stand_in.url}/resources/channels\?.* not JSON"):
        plugin.cf_search(name="X:*")
    stand_in.answer = (200, b'{"channels": []}')
    with pytest.raises(ChannelFinderError, match="answered dict JSON, not a list of channels"):
        plugin.cf_discover_devices()
    stand_in.answer = (500, b'{"message": "elastic down"}')
    with pytest.raises(ChannelFinderError, match=rf"ChannelFinder at {stand_in.url}/.* answered HTTP 500"):
        plugin.cf_search()
    down = f"http://127.0.0.1:{free_port()}/ChannelFinder"  # nothing listens there
    with pytest.raises(ChannelFinderError, match=rf"ChannelFinder at {down}/resources/channels\?.* cannot be reached"):
        _Plugin.make(channelfinder_url=down).cf_search()
    with pytest.raises(ValueError, match="channelfinder_url must be an http"):
        _Plugin.make(channelfinder_url="cf-host:8080").cf_search()


def test_without_channelfinder_url_the_helpers_find_nothing(caplog: pytest.LogCaptureFixture) -> None:
    plugin = _Plugin.make()
    with caplog.at_level("WARNING"):
        assert plugin.channelfinder is None
        assert plugin.cf_search(name="*") == [] and plugin.cf_discover_devices() == []
    assert [r.getMessage() for r in caplog.records if "ChannelFinder is off" in r.getMessage()] == [
        "cf_search: ChannelFinder is off (no channelfinder_url parameter); the cf_* helpers find nothing"]


def test_without_ophyd_create_device_is_none_and_names_the_extra(monkeypatch: pytest.MonkeyPatch,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "ophyd", None)  # import ophyd raises ImportError
    plugin = _Plugin.make()
    with caplog.at_level("ERROR", logger="iochost.sdk.devices"):
        assert plugin.create_device("LAB:IO:AI1", "io", "ai") is None
    assert any("iochost[ophyd]" in r.getMessage() and "create_device()" in r.getMessage() for r in caplog.records)
    assert plugin.list_devices() == []
    with pytest.raises(ValueError, match="create_device: devtype must be a non-empty string"):
        plugin.create_device("LAB:IO:AI1", "io", "")
