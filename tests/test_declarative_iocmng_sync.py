"""Three declarative behaviours iochost keeps as iocmng 2.7.9 has them (base/task.py; run side by
side in bench/iocmng_compat.py, SYNC_PLUGIN): ENABLE=0 pauses the link monitors and
ENABLE=1 resumes them; a wired output shows its device PV's value; a rule's ``message_pv``
goes INVALID/LINK while an input of its condition is down. Each with a real device soft IOC
and the plugin under ``iochost run``, its links over CA and over PVA, read with a CA client."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy
import pytest

from conftest import Processes, wait_for
from iochost.config import load_config
from iochost.declarative.engine import Engine
from iochost.rule_language.functions import builtin_library
from test_declarative import INTERLOCK_PY, _ioc, _plugin, _run_plugin, link_env  # noqa: F401 - link_env: a fixture
from test_value_types_links import _device_and_plugin_env

PAUSED, RUNNING = 2, 1
NO_ALARM, MAJOR, INVALID = 0, 2, 3


def _parameters(protocol: str) -> str:
    return f"parameters: {{mode: continuous, interval: 0.2, pva: {str(protocol == 'pva').lower()}, timeout: 5.0}}\n"


def _start(tmp_path: Path, processes: Processes, link_env: dict[str, Any], protocol: str, tag: str,
           records: list[str], values: dict[str, float], config: str) -> tuple[str, Any, Any, Path]:
    """The device IOC (its records at ``values``) and the plugin (``DT:<tag>``) linked to it;
    returns the device prefix, the device process, a reader of the plugin's PVs, the plugin."""
    env, ports, ca = link_env["env"], link_env["ports"], link_env["ca"]
    dev = f"SY{tag}{protocol.upper()}{ports['dev']}"
    device_env, plugin_env = _device_and_plugin_env(env, ports, protocol)
    device = _ioc(processes, device_env, ports["dev"], dev, *records)
    for name, value in values.items():
        _write(f"{dev}:{name}", value)
    plugin = _plugin(tmp_path / tag.lower(), _parameters(protocol) + config.format(dev=dev))
    _run_plugin(processes, plugin_env, ports["plugin"], plugin, tag.lower())
    pv = f"DT:{tag}:"

    def get(name: str) -> Any:
        return ca.caget(pv + name, timeout=5)

    wait_for(lambda: get("STATUS") == RUNNING, timeout=30, what=f"{pv} running")
    return dev, (device, device_env), get, plugin


def _write(pv: str, value: float) -> None:
    """A one-shot CA put: no channel is kept to a device IOC a test restarts (caproto's
    threading client can lose its search thread reconnecting one)."""
    from caproto.sync.client import write

    write(pv, [value], notify=True, timeout=5, repeater=False)


def _read(pv: str) -> Any:
    """A device PV's value, severity and timestamp (one-shot, as ``_write``)."""
    from caproto.sync.client import read

    reading = read(pv, data_type="time", timeout=5, repeater=False)
    return reading.data[0], int(reading.metadata.severity), reading.metadata.timestamp


def _cycles(get: Any, count: int) -> None:
    """Wait until the plugin has run ``count`` more cycles: what a cycle would do has been done."""
    first = get("CYCLE_COUNT")
    wait_for(lambda: get("CYCLE_COUNT") >= first + count, timeout=30, what=f"{count} more cycles")


PAUSE_CONFIG = """\
arguments:
  inputs:
    temp: {{type: float, link: "{dev}:TEMP", link_mode: monitor, buffer_size: 8}}
  outputs:
    avg: {{type: float}}
    count: {{type: int}}
transforms:
  - output: avg
    expression: "mean(temp_buf)"
  - output: count
    expression: "length(temp_buf)"
"""


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["ca", "pva"])
def test_enable_0_pauses_link_monitors_and_enable_1_resumes_them(
        tmp_path: Path, processes: Processes, link_env: dict[str, Any], protocol: str) -> None:
    """iocmng closes the monitors at ENABLE=0 and opens them again at ENABLE=1: what the device
    did meanwhile never reaches the input or its ring buffer; the new monitor's first update
    (the device's value now) joins the buffer once."""
    ca = link_env["ca"]
    dev, (device, _), get, plugin = _start(tmp_path, processes, link_env, protocol, "PAUSE", ["TEMP"],
                                           {"TEMP": 3.0}, PAUSE_CONFIG)
    # the first read and the monitor's first update: (3, 3), as iocmng's buffer starts
    wait_for(lambda: get("temp") == 3.0 and get("count") == 2, timeout=20, what="temp 3, two in the buffer")
    ca.caput("DT:PAUSE:ENABLE", 0, wait=True)
    wait_for(lambda: get("STATUS") == PAUSED, timeout=10, what="paused")
    for value in (10.0, 20.0, 30.0):
        _write(f"{dev}:TEMP", value)
    assert get("temp") == 3.0  # nothing arrives while paused
    ca.caput("DT:PAUSE:ENABLE", 1, wait=True)
    wait_for(lambda: get("STATUS") == RUNNING, timeout=10, what="running again")
    wait_for(lambda: get("temp") == 30.0, timeout=20, what="the device's value now, on resume")
    wait_for(lambda: get("count") == 3, timeout=10, what="one more in the buffer")
    assert get("avg") == pytest.approx(12.0)  # mean(3, 3, 30): 10 and 20 never arrived
    # and the monitor is live again
    _write(f"{dev}:TEMP", 6.0)
    wait_for(lambda: get("count") == 4 and get("avg") == pytest.approx(10.5), timeout=10, what="mean(3, 3, 30, 6)")
    log = (plugin / "run.log").read_text()
    assert "paused" in log and "resumed" in log, log
    # paused, a link's connection is still followed (iocmng's closed monitor would not see it)
    ca.caput("DT:PAUSE:ENABLE", 0, wait=True)
    wait_for(lambda: get("STATUS") == PAUSED, timeout=10, what="paused again")
    os.killpg(device.pid, 9)
    device.wait()
    wait_for(lambda: int(numpy.atleast_1d(get("CONN_INP"))[0]) == 0, timeout=30, what="CONN_INP 0 while paused")
    assert link_env["ca"].caget("DT:PAUSE:temp", format="time").severity == INVALID


READBACK_CONFIG = """\
arguments:
  inputs:
    temp: {{type: float, link: "{dev}:TEMP", link_mode: monitor}}
  outputs:
    sp: {{type: float, link: "{dev}:SP", link_mode: monitor, high: 50, alarm_on: MAJOR}}
    spp: {{type: float, link: "{dev}:SPP"}}
    twice: {{type: float, link: "{dev}:SINK"}}
    seen: {{type: float}}
transforms:
  - output: twice
    expression: "2 * temp"
  - output: seen
    expression: "sp + spp"
"""


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["ca", "pva"])
def test_wired_outputs_show_their_device_pv(tmp_path: Path, processes: Processes, link_env: dict[str, Any],
                                           protocol: str) -> None:
    """A wired output reads its device PV back, as iocmng's does: from the start, on each
    monitor update (``link_mode: monitor``) or each cycle (``poll``, iocmng's default); its own
    alarm judges the value; expressions see it. The engine's next write puts its own value
    back, once: no write echoes between the output and its device."""
    dev, _, get, plugin = _start(tmp_path, processes, link_env, protocol, "BACK", ["TEMP", "SP", "SPP", "SINK"],
                                 {"TEMP": 1.0, "SP": 7.0, "SPP": 8.0}, READBACK_CONFIG)
    wait_for(lambda: (get("sp"), get("spp")) == (7.0, 8.0), timeout=20, what="the device's values at start")
    wait_for(lambda: get("seen") == 15.0, timeout=10, what="sp + spp over the mirrored values")
    wait_for(lambda: _read(f"{dev}:SINK")[0] == 2.0 and get("twice") == 2.0, timeout=10, what="twice forwarded")
    _write(f"{dev}:SP", 60.0)
    wait_for(lambda: get("sp") == 60.0, timeout=10, what="SP's monitor update")
    assert link_env["ca"].caget("DT:BACK:sp", format="time").severity == MAJOR  # above high: alarm_on
    _write(f"{dev}:SPP", 10.0)
    wait_for(lambda: get("spp") == 10.0 and get("seen") == 70.0, timeout=10, what="SPP polled")
    # someone else writes the device PV of a computed output: it shows, then the next
    # evaluation puts 2 * temp back (iocmng writes it every cycle)
    _write(f"{dev}:SINK", 100.0)
    wait_for(lambda: _read(f"{dev}:SINK")[0] == 2.0, timeout=10, what="twice put back on its device")
    wait_for(lambda: get("twice") == 2.0, timeout=10, what="and shown")
    # no echo: over ten cycles neither device PV is written again (an ao's timestamp moves on
    # every write, even of the same value)
    sink, sp = _read(f"{dev}:SINK")[2], _read(f"{dev}:SP")[2]
    _cycles(get, 10)
    assert (_read(f"{dev}:SINK")[2], _read(f"{dev}:SP")[2]) == (sink, sp)
    assert "Traceback" not in (plugin / "run.log").read_text()


MESSAGE_CONFIG = """\
arguments:
  inputs:
    temp: {{type: float, link: "{dev}:TEMP", link_mode: monitor}}
    other: {{type: float}}
  outputs:
    hot: {{type: bool}}
    note: {{type: string}}
    quiet: {{type: string}}
    sp: {{type: float, link: "{dev}:SP", link_mode: monitor}}
rule_defaults: {{hot: 0}}
rules:
  - id: HOT
    condition: "temp > 50"
    message: "Hot"
    message_pv: note
    outputs: {{hot: 1}}
  - id: OTHER
    condition: "other > 1"
    message: "Other"
    message_pv: quiet
"""


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["ca", "pva"])
def test_message_pv_is_invalid_while_an_input_of_its_rule_is_down(
        tmp_path: Path, processes: Processes, link_env: dict[str, Any], protocol: str) -> None:
    """iocmng counts a rule's message_pv among the outputs computed from its condition's
    inputs: INVALID while one of them is down, its own alarm again once it is back. A rule
    that reads no down input leaves its message_pv alone. A wired output shows the restarted
    device's value, and is not written back (nothing wrote it while the device was away)."""
    dev, (device, device_env), get, _ = _start(tmp_path, processes, link_env, protocol, "MSG",
                                               ["TEMP", "SP"], {"TEMP": 60.0, "SP": 7.0}, MESSAGE_CONFIG)
    ca = link_env["ca"]

    def severity(name: str) -> int:
        return int(ca.caget(f"DT:MSG:{name}", format="time", timeout=5).severity)

    wait_for(lambda: get("hot") == 1 and get("note").endswith(" - Hot"), timeout=20, what="HOT fired")
    wait_for(lambda: get("sp") == 7.0, timeout=10, what="sp mirrored")
    assert severity("note") == NO_ALARM and severity("quiet") == NO_ALARM
    os.killpg(device.pid, 9)
    device.wait()
    wait_for(lambda: severity("note") == INVALID, timeout=30, what="note INVALID with temp's link down")
    assert severity("hot") == INVALID and severity("quiet") == NO_ALARM
    _ioc(processes, device_env, link_env["ports"]["dev"], dev, "TEMP", "SP")  # back, at 0
    wait_for(lambda: severity("note") == NO_ALARM, timeout=40, what="note trusted again")
    assert get("note").endswith(" - Hot")  # the last message stays: HOT does not fire at temp 0
    wait_for(lambda: get("hot") == 0 and get("sp") == 0.0, timeout=10, what="hot 0, sp the device's 0")
    _cycles(get, 5)
    assert _read(f"{dev}:SP")[0] == 0.0 and get("sp") == 0.0


# -- the engine, as pure logic ---------------------------------------------------------------------
def test_depends_on_counts_message_pv(tmp_path: Path) -> None:
    config = load_config(_plugin(tmp_path, _parameters("ca") + MESSAGE_CONFIG.format(dev="D"), INTERLOCK_PY))
    engine = Engine(config, {}, builtin_library())
    assert engine.depends_on({"temp"}) == {"hot", "note"}
    assert engine.depends_on({"other"}) == {"quiet"}
    assert engine.depends_on(set()) == set()
