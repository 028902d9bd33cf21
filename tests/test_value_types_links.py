"""Values cross links in the receiving PV's type, end to end: a device soft IOC serving a PV of each type, a
declarative plugin linking each to an input of each type over CA and PVA, every pair checked; a string's bytes cross
a link as they are.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy
import pytest

from conftest import Processes, free_port, wait_for
from test_declarative import _ioc, _plugin, _run_plugin, link_env  # noqa: F401 - link_env: a fixture
from test_value_types import CALC, INVALID, LINK, NO_ALARM

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
        pva_server, pva_udp = free_port(), free_port()
        own_server, own_udp = free_port(), free_port()
        device_env.update({"EPICS_PVAS_SERVER_PORT": str(pva_server), "EPICS_PVA_SERVER_PORT": str(pva_server),
                           "EPICS_PVAS_BROADCAST_PORT": str(pva_udp), "EPICS_PVA_BROADCAST_PORT": str(pva_udp)})
        plugin_env.update({"EPICS_CA_ADDR_LIST": f"127.0.0.1:{ports['plugin']}",
                           "EPICS_PVA_ADDR_LIST": f"127.0.0.1:{pva_udp}",
                           "EPICS_PVAS_SERVER_PORT": str(own_server), "EPICS_PVA_SERVER_PORT": str(own_server),
                           "EPICS_PVAS_BROADCAST_PORT": str(own_udp), "EPICS_PVA_BROADCAST_PORT": str(own_udp)})
    return device_env, plugin_env


@pytest.mark.slow
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


@pytest.mark.slow
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
    long_inputs = ('    kept: {type: string, length: 60, value: k}\n'
                   f'    fromlong: {{type: string, link: "{pv}kept", link_mode: monitor}}\n'
                   ) if protocol == "ca" else ""
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

