"""The iocmng-sync behaviours of the declarative worker (test_declarative_iocmng_sync.py),
attacked: device values a wired output's record cannot hold, and ENABLE toggled while the
device's values stream, it restarts, or RESET and CLEAR arrive. Each with a real device soft
IOC and the plugin under ``iochost run``, its links over CA and over PVA. Read-backs, the
pv_client under threads and writes missed while down are in test_declarative_sync_attack_writes.py."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest
from caproto.sync.client import write

from conftest import Processes, wait_for
from iochost.config import PVDef
from iochost.worker.links import Links
from iochost.worker.plugin_events import LinkConnection, LinkValue
from test_declarative import _ioc, link_env  # noqa: F401 - link_env: a fixture
from test_declarative_iocmng_sync import NO_ALARM, PAUSED, RUNNING, _cycles, _read, _start, _write

REFUSED_CONFIG = """\
arguments:
  outputs:
    n: {{type: int, link: "{dev}:N", link_mode: monitor}}
    e: {{type: enum, choices: [x, y], link: "{dev}:E", link_mode: monitor}}
    p: {{type: int, link: "{dev}:P"}}
transforms:
  - output: n
    expression: "5"
  - output: e
    expression: "1"
  - output: p
    expression: "7"
"""


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["ca", "pva"])
def test_a_device_value_the_output_cannot_hold_is_put_back(
        tmp_path: Path, processes: Processes, link_env: dict[str, Any], protocol: str) -> None:
    """A device value a wired output's record refuses (beyond an int's 32 bits, an enum index
    past its choices) shows INVALID/LINK on the output; the worker runs on, and the output's
    value goes back to the device, as a value the output can hold would: the device is not
    left holding what nobody computed."""
    dev, _, get, plugin = _start(tmp_path, processes, link_env, protocol, "REF", ["N", "E=enum", "P"], {},
                                 REFUSED_CONFIG)
    wait_for(lambda: (_read(f"{dev}:N")[0], _read(f"{dev}:E")[0], _read(f"{dev}:P")[0]) == (5, 1, 7), timeout=20,
             what="the computed values on the device")
    for name, value in (("N", 1e12), ("E", 2), ("P", 1e12)):  # P: polled, N and E: monitored
        _write(f"{dev}:{name}", value)
    wait_for(lambda: (_read(f"{dev}:N")[0], _read(f"{dev}:E")[0], _read(f"{dev}:P")[0]) == (5, 1, 7), timeout=20,
             what="the computed values put back on the device")
    _cycles(get, 3)
    ca = link_env["ca"]
    assert [int(ca.caget(f"DT:REF:{name}", format="time").severity) for name in ("n", "e", "p")] == [NO_ALARM] * 3
    assert (get("n"), get("e"), get("p"), get("STATUS")) == (5, 1, 7, RUNNING)
    log = (plugin / "run.log").read_text()
    assert "out of the range of a 32-bit integer" in log and "index 2 is not one of 0..1" in log, log
    assert "Traceback" not in log, log


RESET_CONFIG = """\
arguments:
  inputs:
    p: {{type: float, link: "{dev}:P", poll_rate: 3600}}
    m: {{type: float, link: "{dev}:M", link_mode: monitor, buffer_size: 8}}
  outputs:
    count: {{type: int}}
transforms:
  - output: count
    expression: "length(m_buf)"
"""


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["ca", "pva"])
def test_reset_while_paused_reads_every_input(
        tmp_path: Path, processes: Processes, link_env: dict[str, Any], protocol: str) -> None:
    """ENABLE=0 pauses the monitors, not RESET: iocmng's RESET reads every wired input and
    shows what it read, paused or not. (Dropped, a poll input with a long poll_rate kept
    its value from before the pause for that long after ENABLE=1.)"""
    ca = link_env["ca"]
    dev, _, get, _ = _start(tmp_path, processes, link_env, protocol, "RST", ["P", "M"], {"P": 1.0, "M": 2.0},
                            RESET_CONFIG)
    wait_for(lambda: (get("p"), get("m"), get("count")) == (1.0, 2.0, 2), timeout=20, what="the first reads")
    ca.caput("DT:RST:ENABLE", 0, wait=True)
    wait_for(lambda: get("STATUS") == PAUSED, timeout=10, what="paused")
    _write(f"{dev}:P", 42.0)
    _write(f"{dev}:M", 43.0)
    ca.caput("DT:RST:RESET", 1, wait=True)
    wait_for(lambda: (get("p"), get("m")) == (42.0, 43.0), timeout=20, what="RESET's reads, while paused")
    assert get("STATUS") == PAUSED
    ca.caput("DT:RST:ENABLE", 1, wait=True)
    wait_for(lambda: get("STATUS") == RUNNING, timeout=10, what="running again")
    _write(f"{dev}:M", 44.0)
    wait_for(lambda: get("m") == 44.0, timeout=10, what="the monitor live again")
    assert get("p") == 42.0


# -- Links, as logic: a replaced PVA subscription ------------------------------------------------
class _Subscriptions:
    """What Links asks of p4p's Context to subscribe: each callback kept, to be called as
    p4p's worker threads call it (close() does not stop one already running)."""

    def __init__(self) -> None:
        self.callbacks: list[Any] = []

    def monitor(self, link: str, callback: Any, notify_disconnect: bool) -> Any:
        self.callbacks.append(callback)
        return self

    def close(self) -> None:
        pass


def test_a_replaced_pva_subscription_posts_nothing() -> None:
    """ENABLE=0 replaces each monitored PVA subscription; an update the old one is still
    delivering (p4p runs callbacks on its own threads, and close() does not wait for them)
    must not reach the plugin, paused or after a quick ENABLE=1: it would be a value older
    than the one the new monitor brings. And the Disconnected p4p opens each new monitor
    with is no news: the link stays as it was."""
    from p4p.client.thread import Disconnected
    posted: list[tuple[Any, ...]] = []
    links = Links({"t": PVDef(type="float", link="DEV:T", link_mode="monitor")}, {"t"}, pva=True, timeout=1.0,
                  post=posted.append)
    links._context = subscriptions = _Subscriptions()
    links._pva_monitor("t")  # as start() subscribes
    first = subscriptions.callbacks[0]
    first(Disconnected())  # p4p opens every monitor with one
    first(3.0)
    assert posted == [LinkConnection("t", False), LinkConnection("t", True), LinkValue("t", 3.0)]
    links.pause()
    links.resume()
    posted.clear()
    first(4.0)  # the first subscription's late update
    subscriptions.callbacks[1](Disconnected())
    subscriptions.callbacks[1](5.0)  # the paused one's
    subscriptions.callbacks[2](Disconnected())  # the one resume() opened: no news
    assert posted == []
    subscriptions.callbacks[2](6.0)
    subscriptions.callbacks[2](Disconnected())  # and now a real one
    assert posted == [LinkConnection("t", True), LinkValue("t", 6.0), LinkConnection("t", False)]
    assert links._pva_reopened == set()  # none kept of the monitors replaced


TOGGLE_CONFIG = """\
arguments:
  inputs:
    temp: {{type: float, link: "{dev}:TEMP", link_mode: monitor, buffer_size: 4}}
    text: {{type: string, link: "{dev}:TEXT", link_mode: monitor}}
  outputs:
    sp: {{type: float, link: "{dev}:SP", link_mode: monitor}}
    newest: {{type: float}}
transforms:
  - output: newest
    expression: "last(temp_buf)"
"""


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["ca", "pva"])
def test_enable_toggled_while_the_device_streams(
        tmp_path: Path, processes: Processes, link_env: dict[str, Any], protocol: str) -> None:
    """ENABLE toggled forty times while the device's values stream: the worker runs on, no
    link is ever shown down (p4p opens each new monitor with a Disconnected), and once
    enabled its inputs, buffer and read-back outputs show the device's values, live."""
    ca = link_env["ca"]
    dev, _, get, plugin = _start(tmp_path, processes, link_env, protocol, "TGL", ["TEMP", "TEXT=string", "SP"],
                                 {"TEMP": 1.0}, TOGGLE_CONFIG)
    wait_for(lambda: get("temp") == 1.0, timeout=20, what="the first value")
    done = threading.Event()

    def stream() -> None:
        value = 1
        while not done.is_set():
            value += 1
            for name in ("TEMP", "SP"):
                _write(f"{dev}:{name}", float(value))
            write(f"{dev}:TEXT", f"n{value}".encode(), notify=True, timeout=5, repeater=False)

    streamer = threading.Thread(target=stream, daemon=True)
    streamer.start()
    try:
        for index in range(40):  # each put waits for the record: generous, the device is busy too
            write("DT:TGL:ENABLE", [index % 2], notify=True, timeout=30, repeater=False)
    finally:
        done.set()
        streamer.join(timeout=30)
    assert not streamer.is_alive()
    ca.caput("DT:TGL:ENABLE", 1, wait=True)
    wait_for(lambda: get("STATUS") == RUNNING, timeout=10, what="running")
    _write(f"{dev}:TEMP", 999.0)
    _write(f"{dev}:SP", 998.0)
    write(f"{dev}:TEXT", b"last", notify=True, timeout=5, repeater=False)
    wait_for(lambda: (get("temp"), get("newest"), get("sp"), str(get("text"))) == (999.0, 999.0, 998.0, "last"),
             timeout=20, what="the device's last values")
    _write(f"{dev}:TEMP", 1000.0)
    wait_for(lambda: get("newest") == 1000.0, timeout=10, what="the newest in the buffer")
    log = (plugin / "run.log").read_text()
    assert "Traceback" not in log, log
    assert "DISCONNECTED" not in log, log  # a monitor opened again is no reconnection (PVA said so)


RESTART_CONFIG = """\
arguments:
  inputs:
    temp: {{type: float, link: "{dev}:TEMP", link_mode: monitor}}
  outputs:
    sp: {{type: float, link: "{dev}:SP", link_mode: monitor}}
    twice: {{type: float, link: "{dev}:SINK", link_mode: monitor}}
transforms:
  - output: twice
    expression: "2 * temp"
"""


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["ca", "pva"])
def test_the_device_restarts_while_paused(
        tmp_path: Path, processes: Processes, link_env: dict[str, Any], protocol: str) -> None:
    """ENABLE=0, the device IOC killed and started again (its records at 0), CLEAR meanwhile:
    at ENABLE=1 the inputs and read-back outputs show the restarted device's values, and the
    computed output goes back to it."""
    ca = link_env["ca"]
    dev, (device, device_env), get, plugin = _start(tmp_path, processes, link_env, protocol, "RSTA",
                                                    ["TEMP", "SP", "SINK"], {"TEMP": 3.0, "SP": 4.0},
                                                    RESTART_CONFIG)
    wait_for(lambda: (get("temp"), get("sp"), _read(f"{dev}:SINK")[0]) == (3.0, 4.0, 6.0), timeout=20,
             what="the device's values, and 2 * temp on it")
    ca.caput("DT:RSTA:ENABLE", 0, wait=True)
    wait_for(lambda: get("STATUS") == PAUSED, timeout=10, what="paused")
    os.killpg(device.pid, 9)
    device.wait()
    wait_for(lambda: get("CONN_INP") == 0, timeout=30, what="the input's link down")
    ca.caput("DT:RSTA:CLEAR", 1, wait=True)
    _ioc(processes, device_env, link_env["ports"]["dev"], dev, "TEMP", "SP", "SINK")
    _write(f"{dev}:TEMP", 5.0)
    ca.caput("DT:RSTA:ENABLE", 1, wait=True)
    wait_for(lambda: (get("temp"), get("sp"), _read(f"{dev}:SINK")[0]) == (5.0, 0.0, 10.0), timeout=30,
             what="the restarted device's values, and 2 * temp on it again")
    assert [int(ca.caget(f"DT:RSTA:{name}", format="time").severity) for name in ("temp", "sp", "twice")] == \
        [NO_ALARM] * 3
    assert "Traceback" not in (plugin / "run.log").read_text()

