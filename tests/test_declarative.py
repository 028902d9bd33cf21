"""iocmng 2.7 declarative plugins: the expression checks at validation, the engine's rules,
and links to real soft IOCs (a standalone device IOC and the plugin under ``iochost run``).
The README's examples are in test_declarative_readme.py; the link helpers here (``_ioc``,
``_run_plugin``, ``link_env``) are shared by the other link tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy
import pytest

from conftest import Processes, free_port, wait_for
from iochost.config import load_config
from iochost.config.issues import ConfigError
from iochost.rule_language import functions

FIXTURES = Path(__file__).parent / "fixtures"

INTERLOCK_PY = """\
from iocmng import DeclarativeTask

class MyInterlock(DeclarativeTask):
    pass
"""

# iocmng 2.7's README interlock, unchanged but for the device PV names and two extra ports:
# a poll input and a wired output (transform) forwarded to the device, and a dead link.
INTERLOCK_CONFIG = """\
parameters:
  mode: continuous
  interval: 0.2
  pva: false
  timeout: 1.0

arguments:
  inputs:
    temp:
      type: float
      value: 0.0
      link: "{dev}:TEMP"
      link_mode: monitor
      buffer_size: 4
    pressure:
      type: float
      value: 0.0
      link: "{dev}:PRESSURE"
      link_mode: poll
    later:
      type: float
      value: 0.0
      link: "{later}:X"
      link_mode: monitor
  outputs:
    avg_temp:
      type: float
      value: 0.0
      link: "{dev}:SINK"
    alarm:
      type: bool
      value: 0
      znam: "OK"
      onam: "ALARM"
      latch: true
      latch_dir: "rise"
      alarm_on: MAJOR

transforms:
  - output: avg_temp
    expression: "mean(temp_buf)"

rule_defaults:
  alarm: 0

rules:
  - id: OVER_TEMP
    condition: "mean(temp_buf) > 80 or pressure > 2.0"
    message: "Temperature or pressure limit exceeded"
    outputs:
      alarm: 1
"""


def _plugin(tmp: Path, config: str, code: str = INTERLOCK_PY, module: str = "my_interlock.py") -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / module).write_text(code)
    (tmp / "config.yaml").write_text(config)
    return tmp


# -- validation: every bad expression refused with its key path ---------------------------------
@pytest.mark.parametrize("condition, expected", [
    ("temp >", "syntax error"),
    ("tmep > 1", "unknown name 'tmep'"),
    ("frobnicate(temp) > 1", "unknown function 'frobnicate'"),
    ("temp.real > 1", "attribute access is not allowed"),
    ("temp_buf[0] > 1", "subscript is not allowed"),
    ("__import__('os')", "unknown function '__import__'"),
    ("(lambda: 1)()", "only library functions may be called"),
    ("(lambda: temp) and 1", "lambda is not allowed"),
    ("[x for x in temp_buf]", "comprehension is not allowed"),
])
def test_bad_expression_is_refused_with_key_path(tmp_path: Path, condition: str, expected: str) -> None:
    config = INTERLOCK_CONFIG.format(dev="D", later="L")
    config = config.replace('condition: "mean(temp_buf) > 80 or pressure > 2.0"', f"condition: {condition!r}")
    config = config.replace("rules:\n", "rules:\n  - id: FINE\n    condition: \"temp > 1\"\n", 1)
    with pytest.raises(ConfigError) as caught:  # functions: checked where the plugin is imported
        load_config(_plugin(tmp_path, config), check_functions=True)
    [issue] = caught.value.issues
    assert issue.file == "config.yaml" and issue.message.startswith("rules[1].condition: ")
    assert expected in issue.message
    lines = config.splitlines()
    assert "condition" in lines[issue.line - 1] and condition[:4] in lines[issue.line - 1]


def test_transform_and_rule_targets_are_checked(tmp_path: Path) -> None:
    config = INTERLOCK_CONFIG.format(dev="D", later="L").replace("output: avg_temp", "output: nope")
    config = config.replace("  alarm: 0", "  temp: 0")
    with pytest.raises(ConfigError) as caught:
        load_config(_plugin(tmp_path, config))
    messages = [issue.message for issue in caught.value.issues]
    assert any(m.startswith("transforms[0].output: 'nope' is not a declared output") for m in messages)
    assert any(m.startswith("rule_defaults.temp: 'temp' is not a declared output") for m in messages)


def test_function_library_matches_iocmng() -> None:
    library = functions.get_registry()
    buf = [1.0, 2.0, 4.0, 9.0]
    assert library["mean"](buf) == 4.0 and library["median"](buf) == 3.0
    assert library["variance"](buf) == pytest.approx(9.5) and library["std"](buf) == pytest.approx(9.5 ** 0.5)
    assert library["rms"]([3, 4]) == pytest.approx(12.5 ** 0.5)
    assert library["diff"](buf) == [1.0, 2.0, 5.0] == library["derivative"](buf)
    assert library["last"](buf, 2) == [4.0, 9.0] and library["moving_avg"](buf, 2) == 6.5
    assert library["clamp"](7, 0, 5) == 5 and library["count_true"](1, 0, 1) == 2
    assert library["length"](buf) == 4 and library["sum_of"](buf) == 16.0
    functions.register("double_it", lambda x: 2 * x)
    try:
        assert "double_it" in functions.get_registry()
    finally:
        functions.LIBRARY.unregister("double_it")


# -- links to real soft IOCs ----------------------------------------------------------------------
def _ioc(processes: Processes, env: dict[str, str], port: int, prefix: str, *names: str) -> subprocess.Popen[str]:
    proc = processes.start([sys.executable, str(FIXTURES / "device_ioc.py"), prefix, *names],
                           env={**env, "EPICS_CAS_SERVER_PORT": str(port)}, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == "READY":
            return proc
    raise AssertionError(f"{prefix} IOC exited before READY")


def _run_plugin(processes: Processes, env: dict[str, str], port: int, plugin: Path, name: str) -> None:
    processes.start([sys.executable, "-m", "iochost", "run", str(plugin), "--name", name, "--prefix", "DT"],
                    env={**env, "EPICS_CAS_SERVER_PORT": str(port)}, stdout=subprocess.DEVNULL,
                    stderr=open(plugin / "run.log", "w"))


@pytest.fixture
def link_env() -> Any:
    """Ports for the device IOCs and the plugin, and a CA client (caproto's) searching them,
    each test its own: a client whose circuit or search thread a test's killed IOC broke
    must not fail the tests after it, and no test finds the IOCs of the one before."""
    ports = {"dev": free_port(), "later": free_port(), "plugin": free_port()}
    addr = " ".join(f"127.0.0.1:{p}" for p in ports.values())
    before = os.environ["EPICS_CA_ADDR_LIST"]
    os.environ["EPICS_CA_ADDR_LIST"] = addr
    try:
        client = _Client()  # reads the address list now
        yield {"ports": ports, "env": {**os.environ, "EPICS_CA_AUTO_ADDR_LIST": "NO"}, "ca": client}
    finally:
        os.environ["EPICS_CA_ADDR_LIST"] = before
        client.ctx.disconnect()


class _Number(float):
    severity = 0


class _Text(str):
    severity = 0


class _Client:
    """A CA client of this module's own (caproto's threading client): the session's libca
    context was created with another address list; this one searches the ports above."""

    FORMAT_TIME = "time"

    def __init__(self) -> None:
        from caproto.threading.client import Context

        self.ctx = Context()
        self._pvs: dict[str, Any] = {}

    def _pv(self, name: str) -> Any:
        if name not in self._pvs:
            self._pvs[name] = self.ctx.get_pvs(name, timeout=2)[0]
        return self._pvs[name]

    def caget(self, name: str, timeout: float = 2, format: Any = None) -> Any:
        reading = self._pv(name).read(data_type="time", timeout=timeout)
        data = reading.data
        if len(data) == 1:
            item = data[0]
            value: Any = _Text(item.decode()) if isinstance(item, bytes) else _Number(item)
        elif isinstance(data[0], (bytes, numpy.bytes_)):
            value = _Text(data[0].decode())
        else:
            return numpy.asarray(data)
        value.severity = int(reading.metadata.severity)
        return value

    def caput(self, name: str, value: Any, wait: bool = True) -> None:
        self._pv(name).write([value], wait=wait, timeout=5)


@pytest.mark.slow
def test_interlock_links_rules_latch_and_reconnect(tmp_path: Path, processes: Processes,
                                                   link_env: dict[str, Any]) -> None:
    env, ports, ca = link_env["env"], link_env["ports"], link_env["ca"]
    dev, later = f"DEV{ports['dev']}", f"LATER{ports['later']}"
    _ioc(processes, env, ports["dev"], dev, "TEMP", "PRESSURE", "SINK")
    plugin = _plugin(tmp_path / "interlock", INTERLOCK_CONFIG.format(dev=dev, later=later))
    _run_plugin(processes, env, ports["plugin"], plugin, "il")
    pv = "DT:IL:"

    def get(name: str) -> Any:
        return ca.caget(pv + name, timeout=2, format=ca.FORMAT_TIME)

    def conn(name: str) -> list[int]:
        return [int(x) for x in numpy.atleast_1d(get(name))]  # a 1-element waveform reads as a scalar

    names = wait_for(lambda: get("CONN_INP_NAMES"), timeout=20, what="the plugin serving")
    assert names.split("\n") == ["temp", "pressure", "later"]
    # monitor and poll links connect; the dead one stays 0 and never stalls the cycle
    wait_for(lambda: conn("CONN_INP") == [1, 1, 0], timeout=15, what="temp and pressure connected")
    assert conn("CONN_OUT") == [1]
    assert get("later").severity == 3  # INVALID: its link is down
    first = get("CYCLE_COUNT")
    time.sleep(2.0)
    assert get("CYCLE_COUNT") - first >= 6  # 0.2 s cycles, a 1 s timeout on the dead link: not stalled

    # monitor link: each write reaches the input; the transform over the ring buffer follows
    for value in (10.0, 20.0, 30.0, 40.0, 50.0):
        ca.caput(f"{dev}:TEMP", value, wait=True)
        wait_for(lambda v=value: get("temp") == v, timeout=5, what=f"temp = {value}")
    wait_for(lambda: get("avg_temp") == pytest.approx(35.0), timeout=5, what="mean of the last 4")
    # the wired output is forwarded to its device PV
    wait_for(lambda: ca.caget(f"{dev}:SINK") == pytest.approx(35.0), timeout=5, what="avg_temp forwarded")

    # poll link: the rule fires on pressure, sets alarm (MAJOR) and MESSAGE, and latches
    ca.caput(f"{dev}:PRESSURE", 3.0, wait=True)
    wait_for(lambda: get("pressure") == 3.0, timeout=5, what="pressure polled")
    wait_for(lambda: get("alarm") == 1, timeout=5, what="rule fired")
    assert get("alarm").severity == 2 and get("MESSAGE") == "Temperature or pressure limit exceeded"
    ca.caput(f"{dev}:PRESSURE", 1.0, wait=True)
    wait_for(lambda: get("pressure") == 1.0, timeout=5, what="pressure back")
    cycles = get("CYCLE_COUNT")
    wait_for(lambda: get("CYCLE_COUNT") >= cycles + 3, timeout=10, what="three cycles without the condition")
    assert get("alarm") == 1  # latched: the condition is gone, the alarm stays
    ca.caput(pv + "CLEAR", 1, wait=True)
    wait_for(lambda: get("alarm") == 0, timeout=5, what="CLEAR released the latch")
    wait_for(lambda: get("CLEAR") == 0, timeout=5, what="CLEAR back to 0 (a pulse)")
    assert get("alarm").severity == 0

    # the dead link connects when its PV appears
    _ioc(processes, env, ports["later"], later, "X")
    ca.caput(f"{later}:X", 7.0, wait=True)
    wait_for(lambda: conn("CONN_INP") == [1, 1, 1], timeout=15, what="later connected")
    wait_for(lambda: get("later") == 7.0, timeout=5, what="later's value")


REACTIVE_PY = """\
from iochost import TaskBase

class Counter(TaskBase):
    def initialize(self):
        self.changes = 0

    def execute(self):
        pass

    def cleanup(self):
        pass

    def on_input_changed(self, key, value, old_value):
        self.changes += 1
        self.set_output("changes", self.changes)
        self.set_output("last", value)
"""

REACTIVE_CONFIG = """\
parameters:
  mode: reactive
  interval: 0.5
  pva: false
arguments:
  inputs:
    level:
      type: float
      link: "{dev}:LEVEL"
      link_mode: monitor
  outputs:
    changes:
      type: int
    last:
      type: float
"""


@pytest.mark.slow
def test_reactive_mode_calls_on_input_changed_once_per_change(tmp_path: Path, processes: Processes,
                                                             link_env: dict[str, Any]) -> None:
    env, ports, ca = link_env["env"], link_env["ports"], link_env["ca"]
    dev = f"RDEV{ports['dev']}"
    _ioc(processes, env, ports["dev"], dev, "LEVEL")
    ca.caput(f"{dev}:LEVEL", 1.0, wait=True)
    plugin = _plugin(tmp_path / "reactive", REACTIVE_CONFIG.format(dev=dev), REACTIVE_PY, "counter.py")
    _run_plugin(processes, env, ports["plugin"], plugin, "rx")
    wait_for(lambda: numpy.atleast_1d(ca.caget("DT:RX:CONN_INP", timeout=2))[0] == 1, timeout=20,
             what="level connected")
    start = ca.caget("DT:RX:changes")
    for value in (2.0, 3.0, 4.0):
        ca.caput(f"{dev}:LEVEL", value, wait=True)
        wait_for(lambda v=value: ca.caget("DT:RX:last") == v, timeout=5, what=f"change to {value}")
    ca.caput(f"{dev}:LEVEL", 4.0, wait=True)  # the same value again: no change
    cycles = ca.caget("DT:RX:CYCLE_COUNT")  # reactive mode still counts its heartbeat
    wait_for(lambda: ca.caget("DT:RX:CYCLE_COUNT") >= cycles + 2, timeout=10, what="two heartbeats after the write")
    assert ca.caget("DT:RX:changes") - start == 3


# -- PVA links, poll_rate, actuators, message_pv --------------------------------------------------
PVA_CONFIG = """\
parameters:
  mode: continuous
  interval: 0.2
  pva: true
  timeout: 1.0
arguments:
  inputs:
    level: {{type: float, link: "{dev}:LEVEL", link_mode: monitor}}
    slow: {{type: float, link: "{dev}:SLOW", link_mode: poll, poll_rate: 2.0}}
  outputs:
    doubled: {{type: float, link: "{dev}:SINK"}}
    valve: {{type: float, link: "{dev}:VALVE"}}
    last_trip: {{type: string}}
    tripped: {{type: bool}}
transforms:
  - output: doubled
    expression: "2 * level"
rule_defaults: {{tripped: 0}}
rules:
  - id: HIGH
    condition: "level > 10"
    message: "Level high"
    message_pv: last_trip
    outputs: {{tripped: 1}}
    actuators: {{valve: 0}}
"""


@pytest.mark.slow
def test_pva_links_poll_rate_actuators_and_message_pv(tmp_path: Path, processes: Processes,
                                                      link_env: dict[str, Any]) -> None:
    """pva: true: the device serves PVA on ports only the plugin's PVA client searches (its CA
    client cannot see the device), so every value here crossed a PVA link."""
    env, ports, ca = link_env["env"], link_env["ports"], link_env["ca"]
    dev = f"PDEV{ports['dev']}"
    pva_server, pva_udp = free_port(), free_port()
    device_env = {**env, "EPICS_PVAS_SERVER_PORT": str(pva_server), "EPICS_PVA_SERVER_PORT": str(pva_server),
                  "EPICS_PVAS_BROADCAST_PORT": str(pva_udp), "EPICS_PVA_BROADCAST_PORT": str(pva_udp)}
    _ioc(processes, device_env, ports["dev"], dev, "LEVEL", "SLOW", "SINK", "VALVE")
    ca.caput(f"{dev}:VALVE", 1.0, wait=True)
    own_server, own_udp = free_port(), free_port()
    plugin_env = {**env, "EPICS_CA_ADDR_LIST": f"127.0.0.1:{ports['plugin']}",
                  "EPICS_PVA_ADDR_LIST": f"127.0.0.1:{pva_udp}",
                  "EPICS_PVAS_SERVER_PORT": str(own_server), "EPICS_PVA_SERVER_PORT": str(own_server),
                  "EPICS_PVAS_BROADCAST_PORT": str(own_udp), "EPICS_PVA_BROADCAST_PORT": str(own_udp)}
    plugin = _plugin(tmp_path / "pva", PVA_CONFIG.format(dev=dev))
    _run_plugin(processes, plugin_env, ports["plugin"], plugin, "pv")

    def get(name: str) -> Any:
        return ca.caget("DT:PV:" + name, timeout=2, format=ca.FORMAT_TIME)

    wait_for(lambda: list(numpy.atleast_1d(get("CONN_INP"))) == [1, 1], timeout=20, what="PVA inputs up")
    wait_for(lambda: list(numpy.atleast_1d(get("CONN_OUT"))) == [1, 1], timeout=20, what="PVA outputs up")
    assert "over PVA" in (plugin / "run.log").read_text()

    # monitor over PVA, and the transform's output forwarded over PVA
    ca.caput(f"{dev}:LEVEL", 4.0, wait=True)
    wait_for(lambda: get("level") == 4.0, timeout=5, what="level over PVA")
    wait_for(lambda: ca.caget(f"{dev}:SINK") == 8.0, timeout=5, what="doubled forwarded over PVA")
    assert ca.caget(f"{dev}:VALVE") == 1.0  # no rule fired: the actuator is untouched

    # the rule fires: its output, its actuator on the device, its timestamped message_pv
    ca.caput(f"{dev}:LEVEL", 12.0, wait=True)
    wait_for(lambda: get("tripped") == 1, timeout=5, what="HIGH fired")
    wait_for(lambda: ca.caget(f"{dev}:VALVE") == 0.0, timeout=5, what="actuator valve=0 put over PVA")
    assert get("MESSAGE") == "Level high"
    stamp, _, text = get("last_trip").partition(" - ")
    assert text == "Level high" and time.strptime(stamp, "%d/%m/%y %H:%M:%S")
    ca.caput(f"{dev}:LEVEL", 1.0, wait=True)
    wait_for(lambda: get("tripped") == 0, timeout=5, what="rule_defaults once HIGH stops")

    # poll_rate 2 s at a 0.2 s interval: ten device changes in 2.5 s reach the input at most twice
    # or three times (one poll per 2 s; a slow machine polls less, never more)
    seen: list[float] = []
    for value in range(1, 11):
        ca.caput(f"{dev}:SLOW", float(value), wait=True)
        until = time.monotonic() + 0.25
        while time.monotonic() < until:  # sampled 5x more often than the device changes
            seen.append(float(get("slow")))
            time.sleep(0.04)
    wait_for(lambda: get("slow") == 10.0, timeout=5, what="the last value polled")
    polled = [v for v in dict.fromkeys(seen) if v > 0]
    assert 1 <= len(polled) <= 3, polled

