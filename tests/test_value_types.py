"""Values cross every boundary in the receiving PV's type, end to end: a device soft IOC
serving a PV of each type, a declarative plugin wiring an input of each type to each of them
(over CA and over PVA), an operator's PVA puts of other types, ``set_pv`` with numpy values,
and autosave files written while an input had another type. The rules alone are in
test_convert.py."""

from __future__ import annotations

import socket
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy
import pytest

from conftest import Processes, free_port, wait_for
from iochost.contract import messages
from iochost.worker import autosave
from sample_plugins import make_plugin
from test_declarative import _ioc, _plugin, _run_plugin, link_env  # noqa: F401 - link_env: a fixture
from worker_harness import WorkerProcess

NO_ALARM, INVALID = 0, 3
CALC, LINK, SOFT = 12, 14, 15  # menuAlarmStat

# -- an operator's PVA puts of other types -----------------------------------------------------------
ECHO = """
    from iochost import TaskBase

    class Echo(TaskBase):
        def initialize(self):
            pass

        def execute(self):
            pass

        def cleanup(self):
            pass

        def on_input(self, name, value):
            seen = value.tolist() if hasattr(value, "tolist") else value
            self.logger.info("on_input %s %r", name, seen)
            self.set_pv("SEEN", f"{name} {type(seen).__name__} {seen}")
"""

ECHO_CONFIG = """
    parameters: {interval: 3600}
    pvs:
      inputs:
        F: {type: float}
        I: {type: int}
        S: {type: string}
        L: {type: string, length: 60}
        B: {type: bool, znam: Closed, onam: Open}
        E: {type: enum, choices: [a, b, c]}
        WF: {type: float, length: 4}
        WI: {type: int, length: 4}
      outputs:
        SEEN: {type: string, length: 80}
"""

# what a p4p put writes -> what the record holds and the plugin's on_input sees
PVA_PUTS = [
    ("F", "2.5", 2.5, "float"), ("F", 3, 3.0, "float"), ("F", True, 1.0, "float"),
    ("I", 2.7, 2, "int"), ("I", "12", 12, "int"), ("I", True, 1, "int"),
    ("S", 3.5, "3.5", "str"), ("S", 7, "7", "str"), ("L", 2.5, "2.5", "str"),
    ("B", 2, 1, "int"), ("B", "Open", 1, "int"), ("B", 0.0, 0, "int"),
    ("E", "b", 1, "int"), ("E", 1.7, 1, "int"),
    ("WF", [1, 2], [1.0, 2.0], "list"), ("WF", ["3", "4.5"], [3.0, 4.5], "list"), ("WI", [1.5, 2.5], [1, 2], "list"),
]


def _pva_read(pva: Any, name: str) -> tuple[Any, int, str]:
    """(value, severity, alarm message) over PVA: QSRV gives the EPICS status as the message."""
    value = pva.get(name, timeout=5)
    got = value["value"]
    got = got["index"] if hasattr(got, "get") and "index" in got else got
    return (got.tolist() if hasattr(got, "tolist") else got), value["alarm.severity"], value["alarm.message"]


def test_operator_puts_of_another_type_over_pva(processes: Processes, tmp_path: Path, pva: Any) -> None:
    worker = WorkerProcess(processes, tmp_path, name="echo", plugin_dir=str(make_plugin(tmp_path, "echo", ECHO,
                           ECHO_CONFIG)), module_file="echo.py", class_name="Echo", prefix="IOCHTYPES")
    worker.wait_event(messages.Initialized)
    pv = "IOCHTYPES:ECHO:"
    for name, put, held, kind in PVA_PUTS:
        pva.put(pv + name, put, timeout=5)
        shown = f"{name} {kind} {held}"
        wait_for(lambda: pva.get(pv + "SEEN", timeout=5)["value"] == shown, timeout=5, what=shown, sleep=time.sleep)
        assert _pva_read(pva, pv + name) == (held, NO_ALARM, "")

    # an index past the choices: refused (EPICS's mbbo would hold 5), INVALID, logged, the plugin not told
    pva.put(pv + "E", 5, timeout=5)
    wait_for(lambda: _pva_read(pva, pv + "E")[1:] == (INVALID, "STATE"), timeout=5, what="E INVALID/STATE",
             sleep=time.sleep)
    pva.put(pv + "F", 9.5, timeout=5)  # a write after it: the plugin has seen everything before
    wait_for(lambda: pva.get(pv + "SEEN", timeout=5)["value"] == "F float 9.5", timeout=5, what="F 9.5",
             sleep=time.sleep)
    log = worker.log()
    assert "on_input E 5" not in log
    assert ("IOCHTYPES:ECHO:E: an operator's write is refused: cannot convert 5 (int) to enum (a, b, c): "
            "index 5 is not one of 0..2") in log
    pva.put(pv + "E", "c", timeout=5)  # a value that fits: taken, the alarm cleared
    wait_for(lambda: pva.get(pv + "SEEN", timeout=5)["value"] == "E int 2", timeout=5, what="E c",
             sleep=time.sleep)
    assert _pva_read(pva, pv + "E") == (2, NO_ALARM, "")
    assert worker.proc.poll() is None


# -- set_pv with numpy values ----------------------------------------------------------------------
NUMPY_TASK = """
    import numpy
    from iochost import TaskBase

    class Numeric(TaskBase):
        def initialize(self):
            pass

        def cleanup(self):
            pass

        def execute(self):
            if self.get_pv("STEP") == 0:
                self.set_pv("F", numpy.float32(0.1))
                self.set_pv("I", numpy.int64(7))
                self.set_pv("I2", numpy.float64(-2.9))
                self.set_pv("B", numpy.bool_(True))
                self.set_pv("E", numpy.int64(2))
                self.set_pv("S", numpy.float32(0.1))
                self.set_pv("WF", numpy.arange(3, dtype=numpy.float32))
                self.set_pv("WI", numpy.array([1.5, 2.5]))
                self.set_pv("FIRST", numpy.array([4.5, 5.5]))
                self.set_pv("WONE", numpy.float64(6.5))
                self.set_pv("IN", numpy.float64(3.7))
                return
            try:
                self.set_pv("I", "not a number")
            except ValueError as exc:
                self.set_pv("ERR", str(exc))
            self.set_pv("IN", [])  # raises: execute() fails, STATUS ERROR, the IOC serves on
"""

NUMPY_CONFIG = """
    parameters: {mode: triggered}
    pvs:
      inputs:
        STEP: {type: int}
        IN: {type: int, value: 1}
      outputs:
        F: {type: float, prec: 6}
        I: {type: int}
        I2: {type: int}
        B: {type: bool}
        E: {type: enum, choices: [a, b, c]}
        S: {type: string}
        WF: {type: float, length: 4}
        WI: {type: int, length: 4}
        FIRST: {type: float}
        WONE: {type: float, length: 4}
        ERR: {type: string, length: 200}
"""


def test_set_pv_with_numpy_scalars_and_arrays(processes: Processes, tmp_path: Path, ca: Any) -> None:
    worker = WorkerProcess(processes, tmp_path, name="numeric", plugin_dir=str(make_plugin(
        tmp_path, "numeric", NUMPY_TASK, NUMPY_CONFIG)), module_file="numeric.py", class_name="Numeric",
        prefix="IOCHNUMPY")
    worker.wait_event(messages.Initialized)
    pv = "IOCHNUMPY:NUMERIC:"

    def read(name: str) -> tuple[Any, int, int]:
        value = ca.caget(pv + name, format=ca.FORMAT_TIME, timeout=5)
        plain = value.tolist() if hasattr(value, "tolist") else value
        return plain, value.severity, value.status

    ca.caput(pv + "RUN", 1, wait=True, timeout=5)
    wait_for(lambda: read("IN")[0] == 3, timeout=10, what="the first run", sleep=time.sleep)
    assert read("F")[0] == pytest.approx(0.1, abs=1e-7) and read("S")[0] == "0.1"
    assert [read(name)[0] for name in ("I", "I2", "B", "E", "FIRST")] == [7, -2, 1, 2, 4.5]
    assert read("WF")[0] == [0.0, 1.0, 2.0] and read("WI")[0] == [1, 2]
    assert read("WONE")[0] == [6.5]  # a scalar is a one-element waveform (NORD 1)
    assert all(read(name)[1:] == (NO_ALARM, NO_ALARM) for name in ("F", "I", "IN", "WF", "STATUS"))

    ca.caput(pv + "STEP", 1, wait=True, timeout=5)
    ca.caput(pv + "RUN", 1, wait=True, timeout=5)
    err = wait_for(lambda: ca.caget(pv + "ERR", datatype=ca.DBR_CHAR_STR, timeout=5), timeout=10,
                   what="the refused write's error", sleep=time.sleep)
    assert err == ("IOCHNUMPY:NUMERIC:I: cannot convert 'not a number' (str) to int: not a number; "
                   "it keeps its value, in INVALID/SOFT alarm")
    assert read("I") == (7, INVALID, SOFT)
    wait_for(lambda: read("STATUS")[0] == 4, timeout=5, what="STATUS ERROR", sleep=time.sleep)  # execute() raised
    assert read("IN") == (3, INVALID, SOFT)
    assert "ConversionError: IOCHNUMPY:NUMERIC:IN: cannot convert [] (list) to int: the array is empty" in worker.log()

    ca.caput(pv + "IN", 5, wait=True, timeout=5)  # an operator's write clears the refusal's alarm
    wait_for(lambda: read("IN") == (5, NO_ALARM, NO_ALARM), timeout=5, what="IN written", sleep=time.sleep)
    ca.caput(pv + "STEP", 0, wait=True, timeout=5)
    ca.caput(pv + "RUN", 1, wait=True, timeout=5)  # the plugin runs on
    wait_for(lambda: read("IN")[0] == 3 and read("I") == (7, NO_ALARM, NO_ALARM), timeout=10,
             what="a run after the error", sleep=time.sleep)
    assert worker.proc.poll() is None


# -- autosave: values saved while the inputs had other types ----------------------------------------
KEEPER = """
    from iochost import TaskBase

    class Keeper(TaskBase):
        def initialize(self):
            pass

        def execute(self):
            pass

        def cleanup(self):
            pass
"""

BEFORE = {"A": "{type: float}", "B": "{type: float}", "C": "{type: string}", "D": "{type: int}",
          "E": "{type: float}", "F": "{type: float, length: 3}", "G": "{type: string}"}
AFTER = {"A": "{type: int}", "B": "{type: string}", "C": "{type: float}",
         "D": "{type: enum, choices: [x, y], value: y}", "E": "{type: bool}", "F": "{type: int, length: 3}",
         "G": "{type: int, value: 5}"}
WRITTEN = {"A": 2.7, "B": 2.5, "C": "3.25", "D": 7, "E": 1.5, "F": [1.5, 2.5, 3.5], "G": "abc"}
RESTORED = {"A": 2, "B": "2.5", "C": 3.25, "D": 1, "E": 1, "F": [1, 2, 3], "G": 5}  # D, G: config values


def test_autosaved_values_follow_an_input_type_change(processes: Processes, tmp_path: Path, ca: Any) -> None:
    plugin_dir = tmp_path / "keeper"
    plugin_dir.mkdir()
    (plugin_dir / "keeper.py").write_text(textwrap.dedent(KEEPER))
    save = tmp_path / "autosave" / "keeper.json"

    def run(number: int, inputs: dict[str, str]) -> WorkerProcess:
        (plugin_dir / "config.yaml").write_text("parameters: {interval: 3600}\npvs:\n  inputs:\n" +
                                                "".join(f"    {n}: {pv}\n" for n, pv in inputs.items()))
        (tmp_path / f"run{number}").mkdir()
        worker = WorkerProcess(processes, tmp_path / f"run{number}", name="keeper", plugin_dir=str(plugin_dir),
                               module_file="keeper.py", class_name="Keeper", prefix=f"IOCHTYPED{number}",
                               autosave_file=str(save))
        worker.wait_event(messages.Initialized)
        return worker

    first = run(0, BEFORE)
    for name, value in WRITTEN.items():
        ca.caput(f"IOCHTYPED0:KEEPER:{name}", value, wait=True, timeout=5)
    wait_for(lambda: autosave.load(save).values == WRITTEN, timeout=10, what="the puts saved", sleep=time.sleep)
    assert first.terminate() == 0

    second = run(1, AFTER)  # config.yaml changed every input's type
    for name, value in RESTORED.items():
        got = ca.caget(f"IOCHTYPED1:KEEPER:{name}", format=ca.FORMAT_TIME, timeout=5)
        assert (got.tolist() if hasattr(got, "tolist") else got) == value, name
        assert got.severity == NO_ALARM, name
    log = second.log()
    assert "saved value 7 of D no longer fits it (cannot convert 7 (int) to enum (x, y): index 7 is not one of 0..1)" \
        in log
    assert "saved value 'abc' of G no longer fits it (cannot convert 'abc' (str) to int: not a number)" in log
    assert "saved value 2.7 of A converted to 2, its type now (int)" in log
    assert second.terminate() == 0


# -- links: a device PV of each type into an input of each type ----------------------------------
# Last in this module: link_env points this process's EPICS_CA_ADDR_LIST at its own ports until
# the module ends, and libca reads the list when it creates its first channel (the tests above
# use libca, the session's ``ca``; these use link_env's own caproto client).
# source: the device record's type (tests/fixtures/device_ioc.py) and the values written to it
SOURCES = {
    "f": ("float", 1.7, 1e10),
    "i": ("int", 2, 7),
    "s": ("string", "1.5", "abc"),
    "b": ("bool", 1, 0),                  # On, Off
    "e": ("enum", 2, 1),                  # z, y
    "wf": ("floats", [1.5, 2.5, 3.5], [1e10, 1.0]),
    "wi": ("ints", [2, 4], [5, 6, 7, 8]),
}
TARGETS = {
    "float": "{type: float}",
    "int": "{type: int}",
    "string": "{type: string}",
    "bool": "{type: bool}",
    "enum": "{type: enum, choices: [a, b, c]}",
    "floats": "{type: float, length: 4}",
    "ints": "{type: int, length: 4}",
}
R = None  # refused: the input keeps the value it had, in INVALID/LINK alarm
# what each input holds after the first values, then after the second (R: refused)
EXPECTED: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "f": ({"float": 1.7, "int": 1, "string": "1.7", "bool": 1, "enum": 1, "floats": [1.7], "ints": [1]},
          {"float": 1e10, "int": R, "string": "10000000000.0", "bool": 1, "enum": R, "floats": [1e10], "ints": R}),
    "i": ({"float": 2.0, "int": 2, "string": "2", "bool": 1, "enum": 2, "floats": [2.0], "ints": [2]},
          {"float": 7.0, "int": 7, "string": "7", "bool": 1, "enum": R, "floats": [7.0], "ints": [7]}),
    "s": ({"float": 1.5, "int": 1, "string": "1.5", "bool": 1, "enum": 1, "floats": [1.5], "ints": [1]},
          {"float": R, "int": R, "string": "abc", "bool": R, "enum": R, "floats": R, "ints": R}),
    "b": ({"float": 1.0, "int": 1, "string": "On", "bool": 1, "enum": 1, "floats": [1.0], "ints": [1]},
          {"float": 0.0, "int": 0, "string": "Off", "bool": 0, "enum": 0, "floats": [0.0], "ints": [0]}),
    "e": ({"float": 2.0, "int": 2, "string": "z", "bool": 1, "enum": 2, "floats": [2.0], "ints": [2]},
          {"float": 1.0, "int": 1, "string": "y", "bool": 1, "enum": 1, "floats": [1.0], "ints": [1]}),
    "wf": ({"float": 1.5, "int": 1, "string": "1.5", "bool": 1, "enum": 1, "floats": [1.5, 2.5, 3.5],
            "ints": [1, 2, 3]},
           {"float": 1e10, "int": R, "string": "10000000000.0", "bool": 1, "enum": R, "floats": [1e10, 1.0],
            "ints": R}),
    "wi": ({"float": 2.0, "int": 2, "string": "2", "bool": 1, "enum": 2, "floats": [2.0, 4.0], "ints": [2, 4]},
           {"float": 5.0, "int": 5, "string": "5", "bool": 1, "enum": R, "floats": [5.0, 6.0, 7.0, 8.0],
            "ints": [5, 6, 7, 8]}),
}
# outputs the engine computes into another type: converted, or refused as INVALID/CALC
TRANSFORMS = {
    "tr_int": ("{type: int}", "float_f * 2", 3, 2e10),          # 3.4 -> 3; then 2e10: refused
    "tr_string": ("{type: string}", "float_i + 0.5", "2.5", "7.5"),
}


def _matrix_config(dev: str, pva: bool) -> str:
    inputs = "".join(f'    {target}_{source}: {{{TARGETS[target][1:-1]}, link: "{dev}:{source.upper()}", '
                     f"link_mode: monitor}}\n" for source in SOURCES for target in TARGETS)
    outputs = "".join(f"    {name}: {pv}\n" for name, (pv, *_) in TRANSFORMS.items())
    transforms = "".join(f'  - output: {name}\n    expression: "{expression}"\n'
                         for name, (_, expression, *_) in TRANSFORMS.items())
    return (f"parameters: {{mode: continuous, interval: 0.2, pva: {str(pva).lower()}, timeout: 1.0}}\n"
            f"arguments:\n  inputs:\n{inputs}  outputs:\n{outputs}transforms:\n{transforms}")


def _read(ca: Any, name: str) -> tuple[Any, int, int]:
    """(value, severity, status) of a PV over CA: a waveform as a list, a string as text."""
    reading = ca._pv(name).read(data_type="time", timeout=2)
    data = reading.data
    if len(data) and isinstance(data[0], (bytes, numpy.bytes_)):
        value: Any = data[0].decode()
    elif len(data) == 1:
        value = data[0].item()
    else:
        value = data.tolist()
    return value, int(reading.metadata.severity), int(reading.metadata.status)


def _holds(actual: Any, expected: Any) -> bool:
    """A waveform input of one element reads as a scalar over CA: compare as lists."""
    if isinstance(expected, list) or isinstance(actual, list):
        return numpy.atleast_1d(actual).tolist() == pytest.approx(expected)
    if isinstance(expected, float):
        return actual == pytest.approx(expected)
    return actual == expected


def _put_device(ca: Any, dev: str, phase: int) -> None:
    for source, (_, *values) in SOURCES.items():
        value = values[phase]
        ca._pv(f"{dev}:{source.upper()}").write(value if isinstance(value, list) else [value], wait=True,
                                                 timeout=5)


def _device_and_plugin_env(env: dict[str, str], ports: dict[str, int],
                           protocol: str) -> tuple[dict[str, str], dict[str, str]]:
    """The device IOC's and the plugin's environments. Over PVA the device's PVA server
    is searched by the plugin only, and the plugin's CA cannot see the device: a link that
    arrives came over PVA."""
    device_env, plugin_env = dict(env), dict(env)
    if protocol == "pva":
        pva_server, pva_udp = free_port(), free_port(socket.SOCK_DGRAM)
        own_server, own_udp = free_port(), free_port(socket.SOCK_DGRAM)
        device_env.update({"EPICS_PVAS_SERVER_PORT": str(pva_server), "EPICS_PVA_SERVER_PORT": str(pva_server),
                           "EPICS_PVAS_BROADCAST_PORT": str(pva_udp), "EPICS_PVA_BROADCAST_PORT": str(pva_udp)})
        plugin_env.update({"EPICS_CA_ADDR_LIST": f"127.0.0.1:{ports['plugin']}",
                           "EPICS_PVA_ADDR_LIST": f"127.0.0.1:{pva_udp}",
                           "EPICS_PVAS_SERVER_PORT": str(own_server), "EPICS_PVA_SERVER_PORT": str(own_server),
                           "EPICS_PVAS_BROADCAST_PORT": str(own_udp), "EPICS_PVA_BROADCAST_PORT": str(own_udp)})
    return device_env, plugin_env


@pytest.mark.parametrize("protocol", ["ca", "pva"])
def test_link_values_of_every_type_reach_inputs_of_every_type(tmp_path: Path, processes: Processes,
                                                             link_env: dict[str, Any], protocol: str) -> None:
    env, ports, ca = link_env["env"], link_env["ports"], link_env["ca"]
    dev = f"TYDEV{protocol.upper()}{ports['dev']}"
    device_env, plugin_env = _device_and_plugin_env(env, ports, protocol)
    _ioc(processes, device_env, ports["dev"], dev, *(f"{s.upper()}={kind}" for s, (kind, *_) in SOURCES.items()))
    _put_device(ca, dev, 0)
    plugin = _plugin(tmp_path / "types", _matrix_config(dev, protocol == "pva"))
    _run_plugin(processes, plugin_env, ports["plugin"], plugin, "ty")
    worker = processes.procs[-1]
    pv = "DT:TY:"

    def mismatches(phase: int) -> dict[str, Any]:
        """Every input (and transform output) not yet as expected: refused ones INVALID/LINK
        (CALC) holding the first phase's value, the others that value and no alarm."""
        wrong = {}
        for source, rows in EXPECTED.items():
            for target, expected in rows[phase].items():
                want, alarm = (rows[0][target], (INVALID, LINK)) if expected is R else (expected, (NO_ALARM, NO_ALARM))
                value, *got = _read(ca, f"{pv}{target}_{source}")
                if not _holds(value, want) or tuple(got) != alarm:
                    wrong[f"{target}_{source}"] = (value, *got)
        for name, (_, _, first, second) in TRANSFORMS.items():
            value, *got = _read(ca, pv + name)
            refused = phase == 1 and name == "tr_int"
            if not _holds(value, first if refused else (first, second)[phase]) or \
                    tuple(got) != ((INVALID, CALC) if refused else (NO_ALARM, NO_ALARM)):
                wrong[name] = (value, *got)
        return wrong

    def settle(phase: int, timeout: float, what: str) -> None:
        wrong: dict[str, Any] = {}

        def done() -> bool:
            wrong.clear()
            wrong.update(mismatches(phase))
            return not wrong

        try:
            wait_for(done, timeout=timeout, what=what, sleep=time.sleep)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; not as expected: {wrong}\n{(plugin / 'run.log').read_text()}") from None

    settle(0, 30, "every input converted, no alarm")
    assert f"over {protocol.upper()}" in (plugin / "run.log").read_text()

    _put_device(ca, dev, 1)  # values some inputs cannot hold
    settle(1, 15, "converted or INVALID/LINK")
    cycles = _read(ca, pv + "CYCLE_COUNT")[0]
    wait_for(lambda: _read(ca, pv + "CYCLE_COUNT")[0] > cycles + 2, timeout=10, what="cycles go on",
             sleep=time.sleep)
    assert worker.poll() is None, "the plugin is still running"
    assert _read(ca, pv + "STATUS")[0] == 1  # RUN
    log = (plugin / "run.log").read_text()
    for source, rows in EXPECTED.items():
        value = SOURCES[source][2]
        for target, expected in rows[1].items():
            if expected is R:  # one line names the PV, the value and both types
                line = next((line for line in log.splitlines() if f"{pv}{target}_{source}: cannot convert" in line),
                            None)
                assert line is not None, f"{target}_{source} not logged:\n{log}"
                shown = repr(value) if not isinstance(value, list) else repr(value)[:5]
                assert shown in line and "INVALID/LINK" in line, line
                assert f"to {target.rstrip('s')}" in line or "to enum (a, b, c)" in line, line
    assert "DT:TY:tr_int: cannot convert 20000000000.0 (float) to int" in log
    assert "Traceback" not in log

    _put_device(ca, dev, 0)  # the first values again: every refusal is over
    settle(0, 15, "the alarms cleared")
    assert "its values convert again" in (plugin / "run.log").read_text()


def _text_read(name: str) -> tuple[bytes, int, int]:
    """(bytes, severity, status) of a string PV, read by a new caproto connection: the bytes
    the record holds (``_read`` decodes them, cothread would replace those not UTF-8)."""
    from caproto.sync.client import read

    reading = read(name, data_type="time", timeout=5, repeater=False)
    data = reading.data
    raw = data.tobytes() if isinstance(data, numpy.ndarray) else data[0]  # a char array, or DBR_STRING
    return raw.split(b"\0", 1)[0], int(reading.metadata.severity), int(reading.metadata.status)


LATIN1 = [b"caf\xe9", b"\xe9" * 39]  # a CA client's Latin-1 (39 bytes: a whole stringout)
CHANGES_PY = """\
from iocmng import DeclarativeTask

class Changes(DeclarativeTask):
    def on_input_changed(self, key, value, old_value):
        self.logger.info("changed %s %r from %r", key, value, old_value)
"""
TEXT_INPUTS = ("monitored", "polled", "long")


@pytest.mark.parametrize("protocol", ["ca", "pva"])
def test_a_strings_bytes_cross_a_link_as_they_are(tmp_path: Path, processes: Processes,
                                                 link_env: dict[str, Any], protocol: str) -> None:
    """Issue 29: a device's string written over CA in Latin-1 reaches a wired input, a
    transform's output and, through its link, the device again, byte for byte over CA
    (cothread decoded it as UTF-8, U+FFFD for each byte that is not). PVA carries text as
    UTF-8 and p4p decodes it strictly: that value is refused (INVALID/LINK, the input keeps
    its value, one line), never a traceback per update nor a monitor p4p closes for good."""
    from caproto.sync.client import write

    env, ports = link_env["env"], link_env["ports"]
    dev = f"TXDEV{protocol.upper()}{ports['dev']}"
    device_env, plugin_env = _device_and_plugin_env(env, ports, protocol)
    _ioc(processes, device_env, ports["dev"], dev, "TEXT=string", "ECHO=string")
    pv = "DT:TX:"
    # over CA, a long string too (the plugin's own, which PVA here cannot reach): the text
    # written to its char array, and from it, 50 bytes, into a 39-byte input
    long_inputs = (f'    kept: {{type: string, length: 60, value: k}}\n'
                   f'    fromlong: {{type: string, link: "{pv}kept", link_mode: monitor}}\n') if protocol == "ca" else ""
    long_output = f'    copy: {{type: string, value: none, link: "{pv}kept"}}\n' if protocol == "ca" else ""
    long_transform = '  - output: copy\n    expression: "monitored"\n' if protocol == "ca" else ""
    config = (f"parameters: {{mode: continuous, interval: 0.2, pva: {str(protocol == 'pva').lower()}, timeout: 1.0}}\n"
              f"arguments:\n  inputs:\n"
              f'    monitored: {{type: string, link: "{dev}:TEXT", link_mode: monitor, trigger: true}}\n'
              f'    polled: {{type: string, link: "{dev}:TEXT", link_mode: poll}}\n'
              f'    long: {{type: string, length: 60, link: "{dev}:TEXT", link_mode: monitor}}\n'
              f"{long_inputs}  outputs:\n"
              f'    echo: {{type: string, value: none, link: "{dev}:ECHO"}}\n{long_output}'
              f'transforms:\n  - output: echo\n    expression: "monitored"\n{long_transform}')
    plugin = _plugin(tmp_path / "texts", config, CHANGES_PY, "changes.py")
    _run_plugin(processes, plugin_env, ports["plugin"], plugin, "tx")
    worker = processes.procs[-1]
    copies = ("kept", "fromlong") if protocol == "ca" else ()

    def settle(sent: bytes, held: bytes, alarm: tuple[int, int], what: str) -> None:
        write(f"{dev}:TEXT", [sent], notify=True, timeout=5, repeater=False)
        wanted = {**{name: (held, *alarm) for name in TEXT_INPUTS}, "echo": (held, *alarm), "device": (held, 0, 0),
                  **{name: (held, 0, 0) for name in copies}}
        seen: dict[str, Any] = {}

        def done() -> bool:
            seen.update({name: _text_read(pv + name) for name in (*TEXT_INPUTS, "echo", *copies)})
            seen["device"] = _text_read(f"{dev}:ECHO")
            return seen == wanted

        try:
            wait_for(done, timeout=30, what=what, sleep=time.sleep)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; held {seen}\n{(plugin / 'run.log').read_text()}") from None

    settle(b"first", b"first", (NO_ALARM, NO_ALARM), "the first text everywhere")
    for latin1 in LATIN1:
        if protocol == "ca":
            settle(latin1, latin1, (NO_ALARM, NO_ALARM), f"{latin1!r} everywhere, byte for byte")
        else:  # the inputs keep their value, INVALID/LINK (and the output computed from them)
            settle(latin1, b"first", (INVALID, LINK), f"{latin1!r} refused")
    utf8 = "é".encode() * 19 + b"!"  # 39 bytes of UTF-8: PVA carries it too
    settle(utf8, utf8, (NO_ALARM, NO_ALARM), "UTF-8 text everywhere")
    if protocol == "ca":  # 50 bytes of UTF-8 through a link into 39 bytes: cut between characters
        write(pv + "kept", "é".encode() * 25 + b"\0", notify=True, timeout=5, repeater=False)
        wait_for(lambda: _text_read(pv + "fromlong") == ("é".encode() * 19, NO_ALARM, NO_ALARM), timeout=30,
                 what="19 whole é of 25", sleep=time.sleep)
    assert worker.poll() is None, "the plugin is still running"
    log = (plugin / "run.log").read_text()
    assert "Traceback" not in log, log
    if protocol == "ca":  # the plugin is shown text as UTF-8, U+FFFD for a byte that is not: old and new
        assert "changed monitored '" + "\ufffd" * 39 + "' from 'caf\ufffd'" in log, log
        assert "\\udc" not in log, log  # no surrogate escape reached plugin code
    if protocol == "pva":
        assert "link monitored (" + dev + ":TEXT): " in log and "PVA carries text as UTF-8" in log, log
