"""The iocmng-sync behaviours of the declarative worker (test_declarative_iocmng_sync.py), attacked through reads and
writes: read-back values of every type, the pv_client used from many threads with a call blocked at stop, a write
missed while the device is down waiting for ENABLE 1.

A standalone device soft IOC and the plugin under ``iochost run``, over CA and over PVA. Split from
test_declarative_sync_attack.py so that the two halves run in parallel.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
from caproto.sync.client import read, write

from conftest import Processes, wait_for
from sample_plugins import make_plugin
from test_declarative import _ioc, _run_plugin, link_env  # noqa: F401 - link_env: a fixture
from test_declarative_iocmng_sync import PAUSED, _cycles, _read, _start
from test_value_types_links import _device_and_plugin_env

TYPES_CONFIG = """\
arguments:
  outputs:
    i: {{type: int, link: "{dev}:I", link_mode: monitor, trigger: true}}
    f: {{type: float, link: "{dev}:F"}}
    s: {{type: string, link: "{dev}:S", link_mode: monitor, trigger: true}}
    b: {{type: bool, link: "{dev}:B", link_mode: monitor, trigger: true}}
    e: {{type: enum, choices: [x, y, z], link: "{dev}:E", link_mode: monitor, trigger: true}}
    w: {{type: float, length: 4, link: "{dev}:W", link_mode: monitor, trigger: true}}
    wi: {{type: int, length: 4, link: "{dev}:WI"}}
"""
TEXT = "h\u00e9llo w\u00f6rld, forty bytes and more"  # 36 characters, 38 bytes in UTF-8


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["ca", "pva"])
def test_read_back_values_of_every_type(tmp_path: Path, processes: Processes, link_env: dict[str, Any],
                                        protocol: str) -> None:
    """A device's values of every type shown by the wired outputs tied to them, monitored and
    polled (``trigger: true`` on most: on_input_changed runs for each), and never written back:
    the device PVs' timestamps stay as the test's writes left them."""
    dev, _, get, plugin = _start(tmp_path, processes, link_env, protocol, "RBT",
                                 ["I=int", "F", "S=string", "B=bool", "E=enum", "W=floats", "WI=ints"], {},
                                 TYPES_CONFIG)
    values: dict[str, Any] = {"I": [-123456], "F": [2.5e-7], "S": [TEXT.encode()], "B": [1], "E": [2],
                              "W": [1.5, -2.5, 3e10, 0.0], "WI": [1, -2, 2**31 - 1, -(2**31)]}
    for name, value in values.items():
        write(f"{dev}:{name}", value, notify=True, timeout=5, repeater=False)

    def shown(name: str) -> Any:
        return read(f"DT:RBT:{name}", timeout=5, repeater=False).data

    wait_for(lambda: (list(shown("i")), list(shown("f")), shown("s"), shown("b"), shown("e"), list(shown("w")),
                      list(shown("wi")))
             == ([-123456], [2.5e-7], [TEXT.encode()], [b"On"], [b"z"], [1.5, -2.5, 3e10, 0.0],
                 [1, -2, 2**31 - 1, -(2**31)]), timeout=20, what="every device value shown")
    stamps = {name: _read(f"{dev}:{name}")[2] for name in values}
    _cycles(get, 5)
    assert {name: _read(f"{dev}:{name}")[2] for name in values} == stamps  # nothing written back
    log = (plugin / "run.log").read_text()
    assert "Traceback" not in log and "ERROR" not in log, log


# -- pv_client from many plugin threads, and a call blocked when the worker stops -----------------
BUSY_PLUGIN = '''
import threading

from iochost import TaskBase, pv_client


class Busy(TaskBase):
    def initialize(self):
        self.failures = []

        def work(index):
            for round in range(15):
                try:
                    pv_client.put("{dev}:A", float(index * 100 + round), timeout=10.0)
                    pv_client.get("{dev}:A", timeout=10.0)
                    pv_client.get("{dev}:S", timeout=10.0)
                except Exception as exc:  # counted: the test shows them
                    self.failures.append(repr(exc))

        self.threads = [threading.Thread(target=work, args=(index,)) for index in range(12)]
        for thread in self.threads:
            thread.start()

    def execute(self):
        if any(thread.is_alive() for thread in self.threads):
            return
        self.set_pv("DONE", 1)
        self.set_pv("FAILURES", "; ".join(self.failures)[:39] or "none")
        pv_client.get("{dev}:NOBODY", timeout=3600)  # blocks the plugin thread until the worker ends

    def cleanup(self):
        pass
'''
BUSY_CONFIG = """\
parameters: {{mode: continuous, interval: 0.2, pva: {pva}}}
arguments:
  outputs:
    DONE: {{type: int}}
    FAILURES: {{type: string}}
"""


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["ca", "pva"])
def test_pv_client_from_many_threads_and_a_blocked_call_at_stop(
        tmp_path: Path, processes: Processes, link_env: dict[str, Any], protocol: str) -> None:
    """Twelve plugin threads get and put at once, all answered; then the plugin thread blocks
    in a get of a PV nobody serves (timeout: an hour), and SIGTERM still ends the worker once
    its grace period is over, saying so."""
    env, ports, ca = link_env["env"], link_env["ports"], link_env["ca"]
    dev = f"BUSY{protocol.upper()}{ports['dev']}"
    device_env, plugin_env = _device_and_plugin_env(env, ports, protocol)
    _ioc(processes, device_env, ports["dev"], dev, "A", "S=string")
    plugin = make_plugin(tmp_path, "busy", BUSY_PLUGIN.replace("{dev}", dev),
                         BUSY_CONFIG.format(pva=str(protocol == "pva").lower()))
    _run_plugin(processes, plugin_env, ports["plugin"], plugin, "busy")
    worker = processes.procs[-1]
    wait_for(lambda: ca.caget("DT:BUSY:DONE", timeout=2) == 1, timeout=60, what="every thread's calls answered")
    assert str(ca.caget("DT:BUSY:FAILURES", timeout=2)) == "none"
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=60)  # the default grace period is 10 s
    log = (plugin / "run.log").read_text()
    assert "did not finish within" in log, log


MISSED_CONFIG = """\
arguments:
  inputs:
    k: {{type: float, value: 1}}
  outputs:
    twice: {{type: float, link: "{dev}:SINK"}}
transforms:
  - output: twice
    expression: "2 * k"
"""


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["ca", "pva"])
def test_a_write_missed_while_down_waits_for_enable_1(
        tmp_path: Path, processes: Processes, link_env: dict[str, Any], protocol: str) -> None:
    """A wired output's write its device missed while down is sent again when it reconnects,
    but not while the task is paused: ENABLE=0 writes nothing (as iocmng's stopped cycle);
    ENABLE=1 sends it."""
    ca = link_env["ca"]
    dev, (device, device_env), get, plugin = _start(tmp_path, processes, link_env, protocol, "MISS", ["SINK"], {},
                                                    MISSED_CONFIG)
    wait_for(lambda: _read(f"{dev}:SINK")[0] == 2.0, timeout=20, what="2 * k on the device")
    os.killpg(device.pid, 9)
    device.wait()
    wait_for(lambda: get("CONN_OUT") == 0, timeout=30, what="the output's link down")
    log = plugin / "run.log"
    ca.caput("DT:MISS:k", 5.0, wait=True)
    wait_for(lambda: "write to" in log.read_text() and "failed" in log.read_text(), timeout=30,
             what="the write of 10 failed")
    ca.caput("DT:MISS:ENABLE", 0, wait=True)
    wait_for(lambda: get("STATUS") == PAUSED, timeout=10, what="paused")
    _ioc(processes, device_env, link_env["ports"]["dev"], dev, "SINK")  # back, at 0
    wait_for(lambda: "waits for ENABLE=1" in log.read_text(), timeout=30, what="the reconnection seen, paused")
    assert _read(f"{dev}:SINK")[0] == 0.0
    ca.caput("DT:MISS:ENABLE", 1, wait=True)
    wait_for(lambda: _read(f"{dev}:SINK")[0] == 10.0, timeout=20, what="the missed write sent at ENABLE=1")

