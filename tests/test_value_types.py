"""Values cross every boundary in the receiving PV's type, end to end: an operator's PVA puts
of other types, ``set_pv`` with numpy values, and autosave files written while an input had
another type. Links (a device soft IOC serving a PV of each type wired to inputs of each type)
are in test_value_types_links.py; the rules alone are in test_convert.py."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import Processes, wait_for
from iochost.contract import messages
from iochost.worker import autosave
from sample_plugins import make_plugin
from worker_harness import StandaloneWorker

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
    worker = StandaloneWorker(processes, tmp_path, name="echo", plugin_dir=str(make_plugin(tmp_path, "echo", ECHO,
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
    worker = StandaloneWorker(processes, tmp_path, name="numeric", plugin_dir=str(make_plugin(
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


@pytest.mark.slow
def test_autosaved_values_follow_an_input_type_change(processes: Processes, tmp_path: Path, ca: Any) -> None:
    plugin_dir = tmp_path / "keeper"
    plugin_dir.mkdir()
    (plugin_dir / "keeper.py").write_text(textwrap.dedent(KEEPER))
    save = tmp_path / "autosave" / "keeper.json"

    def run(number: int, inputs: dict[str, str]) -> StandaloneWorker:
        (plugin_dir / "config.yaml").write_text("parameters: {interval: 3600}\npvs:\n  inputs:\n" +
                                                "".join(f"    {n}: {pv}\n" for n, pv in inputs.items()))
        (tmp_path / f"run{number}").mkdir()
        worker = StandaloneWorker(processes, tmp_path / f"run{number}", name="keeper", plugin_dir=str(plugin_dir),
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

