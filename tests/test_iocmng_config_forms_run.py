"""config.yaml forms iocmng 2.7.9 documents, run on a real daemon: latches on a float, alarm_on without high alarms and
the list form of outputs behave as under iocmng; mode: monitor follows the device and ignores poll_rate.

The same forms at validation are in test_iocmng_config_forms.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy
import pytest

from conftest import wait_for
from iochost.config.iocmng_forms import ALARM_ON_HIGH
from sample_plugins import make_plugin
from test_iocmng_config_forms import TASK

# -- real daemon, real workers, read over CA ------------------------------------------------------
# MANUAL section 11 "Output Latch" (list form, a float latched with latch_dir: any), section 14
# "Ring Buffers" (a buffer of a string input), section 5
# "Output-only Properties" (alarm_on on a float without high:, on a string), section 5
# "Complete Example" (a rule's actuator without a link), and a PV without type: (iocmng: float)
LATCHES = """
    parameters:
      interval: 0.2
    arguments:
      inputs:
        LEVEL: {type: float, value: 0}
        NOTYPE: {value: 1.5}
        LOOSE: {type: float, value: 3, link: ""}
        WORD: {type: string, buffer_size: 3}
      outputs:
        - name: DEVIATION
          type: float
          latch: true
          latch_dir: any
        - name: HOT
          type: float
          alarm_on: MAJOR
        - name: NOTE
          type: string
          alarm_on: MINOR
        - name: WORDS
          type: int
    transforms:
      - output: HOT
        expression: "LEVEL"
      - output: WORDS
        expression: "length(WORD_buf)"
    rule_defaults:
      DEVIATION: 0
    rules:
      - id: DEVIATE
        condition: "LEVEL > 10"
        outputs: {DEVIATION: 2.5}
        actuators: {LEVEL: 0}
"""

# MANUAL section 9 "Wired Inputs and Outputs" with iocmng's `mode:` spelling of link_mode, a
# poll_rate that monitor mode ignores, and buffer_size: 0. One cycle an hour: a device value
# that reaches SENSOR within seconds came by the monitor, not by a poll.
MONITORED = """
    parameters:
      interval: 3600
      pva: false
    arguments:
      inputs:
        SENSOR:
          type: float
          link: "{device}"
          mode: monitor
          poll_rate: 2.0
          buffer_size: 0
"""


def _add(api: httpx.Client, name: str, plugin: Path) -> dict[str, Any]:
    response = api.post("/plugins", json={"name": name, "local_path": str(plugin)})
    assert response.status_code == 201, response.text
    return response.json()


def _warnings_of(record: dict[str, Any]) -> dict[str, int]:
    assert all(w["severity"] == "warning" and w["stage"] == "config" for w in record["warnings"]), record
    return {w["message"].partition(": ")[0]: w["line"] for w in record["warnings"]}


@pytest.mark.slow
def test_latch_on_a_float_alarm_on_without_high_and_the_list_form_run(
        tmp_path: Path, daemon: Any, api: httpx.Client, ca: Any) -> None:
    plugin = make_plugin(tmp_path, "latches", TASK, LATCHES)
    record = _add(api, "latches", plugin)
    try:
        assert record["state"] == "running"
        assert _warnings_of(record) == {"arguments.inputs.NOTYPE.type": 7, "arguments.inputs.LOOSE.link": 8,
                                        "arguments.outputs.HOT.alarm_on": 17, "arguments.outputs.NOTE.alarm_on": 20,
                                        "rules[0].actuators.LEVEL": 34}
        assert _warnings_of(api.get("/plugins/latches").json()) == _warnings_of(record)
        # iocmng's validation block of the add answer carries them as text beside its errors
        assert record["validation"]["ok"] is True and record["validation"]["errors"] == []
        assert len(record["validation"]["warnings"]) == 5
        assert any("arguments.outputs.HOT.alarm_on" in w for w in record["validation"]["warnings"])
        # the worker logs them too
        logs = wait_for(lambda: "\n".join(api.get("/plugins/latches/logs").json()["lines"]), what="the worker log")
        assert "warning: arguments.outputs.HOT.alarm_on: without high:" in logs, logs

        pv = "IOCHT:LATCHES:"
        assert ca.caget(pv + "NOTYPE.RTYP", timeout=5) == "ao"  # no type: a float, as iocmng makes it
        assert ca.caget(pv + "NOTYPE", timeout=5) == 1.5
        assert ca.caget(pv + "NOTE", format=ca.FORMAT_TIME, timeout=5).severity == 0  # alarm_on ignored
        # link: "" is no link: an operator's input, and the plugin has no links to report
        ca.caput(pv + "LOOSE", 4.0, wait=True, timeout=5)
        assert ca.caget(pv + "LOOSE", timeout=5) == 4.0
        assert pv + "CONN_INP" not in record["pvs"] and pv + "LOOSE" in record["pvs"]
        # a ring buffer of a string input (iocmng buffers any value)
        for count, word in enumerate(("alpha", "beta", "gamma", "delta"), start=1):
            ca.caput(pv + "WORD", word, wait=True, timeout=5)
            buffered = min(count, 3)
            wait_for(lambda n=buffered: ca.caget(pv + "WORDS", timeout=5) == n, what=f"{count} words buffered")

        # alarm_on on a float without high: MAJOR at 100 and above
        ca.caput(pv + "LEVEL", 150.0, wait=True, timeout=5)
        wait_for(lambda: ca.caget(pv + "HOT", timeout=5) == 150.0, what="HOT follows LEVEL")
        hot = ca.caget(pv + "HOT", format=ca.FORMAT_CTRL, timeout=5)
        assert (hot.severity, hot.upper_warning_limit) == (2, ALARM_ON_HIGH)
        # the rule fires: DEVIATION (a float) takes 2.5 and, latched, keeps it
        wait_for(lambda: ca.caget(pv + "DEVIATION", timeout=5) == 2.5, what="the rule set DEVIATION")
        ca.caput(pv + "LEVEL", 50.0, wait=True, timeout=5)
        wait_for(lambda: ca.caget(pv + "HOT", format=ca.FORMAT_TIME, timeout=5).severity == 0,
                 what="HOT below 100: no alarm")
        assert ca.caget(pv + "LEVEL", timeout=5) == 50.0  # the actuator without a link wrote nothing
        ca.caput(pv + "LEVEL", 0.0, wait=True, timeout=5)
        wait_for(lambda: ca.caget(pv + "HOT", timeout=5) == 0.0, what="a cycle saw LEVEL 0")
        seen = ca.caget(pv + "CYCLE_COUNT", timeout=5)
        wait_for(lambda: ca.caget(pv + "CYCLE_COUNT", timeout=5) >= seen + 3, what="three more cycles")
        assert ca.caget(pv + "DEVIATION", timeout=5) == 2.5  # latched: rule_defaults does not reset it
        ca.caput(pv + "CLEAR", 1, wait=True, timeout=5)
        wait_for(lambda: ca.caget(pv + "DEVIATION", timeout=5) == 0.0, what="CLEAR released the latch")
    finally:
        assert api.delete("/plugins/latches").status_code == 200


@pytest.mark.slow
def test_mode_monitor_follows_the_device_and_ignores_poll_rate(
        tmp_path: Path, daemon: Any, api: httpx.Client, ca: Any, processes: Any) -> None:
    device = processes.start([sys.executable, str(Path(__file__).parent / "fixtures" / "device_ioc.py"),
                              "FORMSDEV", "SENS"], stdout=subprocess.PIPE, text=True)
    assert device.stdout is not None
    assert any(line.strip() == "READY" for line in device.stdout), "the device IOC exited before READY"
    plugin = make_plugin(tmp_path, "monitored", TASK, MONITORED.replace("{device}", "FORMSDEV:SENS"))
    record = _add(api, "monitored", plugin)
    try:
        assert _warnings_of(record) == {"arguments.inputs.SENSOR.poll_rate": 11}
        pv = "IOCHT:MONITORED:SENSOR"
        wait_for(lambda: list(numpy.atleast_1d(ca.caget("IOCHT:MONITORED:CONN_INP", timeout=5))) == [1], timeout=30,
                 what="SENSOR's link connected")
        for value in (42.0, 7.5):
            ca.caput("FORMSDEV:SENS", value, wait=True, timeout=5)
            wait_for(lambda v=value: ca.caget(pv, timeout=5) == v, timeout=20, what=f"SENSOR = {value} by monitor")
        assert ca.caget("IOCHT:MONITORED:CYCLE_COUNT", timeout=5) <= 1  # no second cycle polled it
    finally:
        assert api.delete("/plugins/monitored").status_code == 200

