"""config.yaml forms iocmng 2.7.9 documents or accepts, each accepted with iocmng's meaning.

iocmng reads a PV's keys leniently (its ``PvArgumentSpec.from_config``): ``mode:`` is another
name of ``link_mode``, ``buffer_size: 0`` keeps no buffer, ``alarm_on`` on a float without
``high:`` alarms above its default high of 100, a rule may latch any output, and a key a PV
has no use for (``poll_rate`` of a monitored link, ``trigger`` of an unwired PV) is silently
ignored. iochost accepts each of these with that meaning; what iocmng ignores is reported as
a warning (``iochost validate``, the REST record of an add, the worker's log) instead of
refused. Misspelt keys stay errors.

The configs here are written for these tests; each comment names the iocmng 2.7.9 document
and section whose form it uses. Here at validation; on a real daemon in
test_iocmng_config_forms_run.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from iochost.config import ConfigError, load_config
from iochost.config.iocmng_forms import ALARM_ON_HIGH
from iochost.report import Severity
from sample_plugins import make_plugin

TASK = """
    from iochost import TaskBase

    class Forms(TaskBase):
        def initialize(self):
            pass

        def execute(self):
            pass

        def cleanup(self):
            pass
"""


def _config(tmp_path: Path, text: str) -> Any:
    (tmp_path / "config.yaml").write_text(textwrap.dedent(text))
    return load_config(tmp_path)


def _warned(config: Any) -> dict[str, tuple[int | None, str]]:
    """Each warning by its key path: (line, message)."""
    found = {}
    for issue in config.warnings:
        assert issue.severity is Severity.WARNING and issue.file == "config.yaml", issue
        path, _, message = issue.message.partition(": ")
        found[path] = (issue.line, message)
    return found


# -- the forms, one by one (each refused before) ----------------------------------------------------
def test_mode_is_link_modes_other_name(tmp_path: Path) -> None:
    # MANUAL section 9 "Wired Inputs and Outputs" with the `mode:` spelling iocmng's
    # plugin_spec also reads (link_mode wins when both are given)
    config = _config(tmp_path, """
        arguments:
          inputs:
            A: {type: float, link: "DEV:A", mode: monitor}
            B: {type: float, link: "DEV:B", mode: Monitor, link_mode: poll}
            C: {type: float, link: "DEV:C", mode: poll, link_mode: poll}
    """)
    inputs = config.pvs.inputs
    assert [inputs[name].link_mode for name in "ABC"] == ["monitor", "poll", "poll"]
    assert "mode" not in inputs["A"].model_dump()  # held once, as link_mode
    assert _warned(config) == {"arguments.inputs.B.mode": (5, "ignored: link_mode: poll is given too and wins")}


def test_poll_rate_of_a_monitored_link_is_ignored_with_a_warning(tmp_path: Path) -> None:
    # MANUAL section 5 "Complete Example": SENSOR has link_mode: monitor and poll_rate: 2.0
    config = _config(tmp_path, """
        arguments:
          inputs:
            SENSOR:
              type: float
              link: "EXTERNAL:IOC:SENSOR"
              link_mode: monitor
              poll_rate: 2.0
              trigger: true
              buffer_size: 100
            POLLED: {type: float, link: "EXTERNAL:IOC:OTHER", poll_rate: 0}
    """)
    sensor, polled = config.pvs.inputs["SENSOR"], config.pvs.inputs["POLLED"]
    assert (sensor.link_mode, sensor.poll_rate, sensor.buffer_size) == ("monitor", None, 100)
    assert polled.poll_rate is None  # 0: no wait between polls, every cycle (iocmng's gating)
    (line, message), = _warned(config).values()
    assert line == 8 and message.startswith("ignored: a link_mode: monitor link")
    assert list(_warned(config)) == ["arguments.inputs.SENSOR.poll_rate"]


def test_buffer_size_zero_keeps_no_buffer(tmp_path: Path) -> None:
    # MANUAL section 14 "Ring Buffers": a positive size keeps a buffer; iocmng keeps none for 0
    # (and for a negative size, which is worth a warning)
    config = _config(tmp_path, """
        arguments:
          inputs:
            S: {type: float, link: "DEV:S", buffer_size: 0}
            N: {type: float, link: "DEV:N", buffer_size: -2}
            T: {type: string, link: "DEV:T", buffer_size: 3}
    """)
    assert config.pvs.inputs["S"].buffer_size is None and config.pvs.inputs["N"].buffer_size is None
    assert "S_buf" not in config.expression_names() and "T_buf" in config.expression_names()
    assert _warned(config) == {"arguments.inputs.N.buffer_size": (5, "-2 keeps no buffer, as 0 does")}
    with pytest.raises(ConfigError) as caught:  # no buffer: an expression cannot read one
        _config(tmp_path, """
            arguments:
              inputs:
                S: {type: float, link: "DEV:S", buffer_size: 0}
              outputs:
                M: {type: float}
            transforms:
              - {output: M, expression: "mean(S_buf)"}
        """)
    assert "unknown name 'S_buf'" in caught.value.issues[0].message


def test_alarm_on_without_high_alarms_at_iocmngs_default_high(tmp_path: Path) -> None:
    # MANUAL section 5 "PV Types" / "Output-only Properties": alarm_on on a float or int sets
    # HSV, with high: as HIGH; iocmng's high: defaults to 100
    config = _config(tmp_path, """
        arguments:
          outputs:
            F: {type: float, alarm_on: MAJOR}
            I: {type: int, alarm_on: minor}
            H: {type: float, high: 5, alarm_on: MAJOR}
            Q: {type: bool, alarm_on: ""}
    """)
    outputs = config.pvs.outputs
    assert (outputs["F"].alarm.high, outputs["F"].alarm.hsv, outputs["F"].high) == (ALARM_ON_HIGH, "MAJOR", None)
    assert (outputs["I"].alarm.high, outputs["I"].alarm.hsv) == (ALARM_ON_HIGH, "MINOR")
    assert (outputs["H"].alarm.high, outputs["H"].alarm.hsv) == (5, "MAJOR")
    assert outputs["Q"].alarm is None  # "": iocmng's documented default, no alarm
    warned = _warned(config)
    assert list(warned) == ["arguments.outputs.F.alarm_on", "arguments.outputs.I.alarm_on"]
    assert warned["arguments.outputs.F.alarm_on"] == (
        4, f"without high: it alarms at {ALARM_ON_HIGH} and above (iocmng's default high); give high: to "
           "choose the limit")


def test_latch_on_any_output_and_the_list_form_of_manual_section_11(tmp_path: Path) -> None:
    # MANUAL section 11 "Output Latch": outputs given as a list of named PVs, a float output
    # latched with latch_dir: any
    config = _config(tmp_path, """
        arguments:
          outputs:
            - name: ALARM
              type: bool
              latch: true
              latch_dir: rise
              alarm_on: MAJOR
            - name: WARN
              type: bool
              latch: true
              latch_dir: 1->0
            - name: DEVIATION
              type: float
              latch: true
              latch_dir: any
            - name: NOTE
              type: string
              latch: true
    """)
    outputs = config.pvs.outputs
    assert list(outputs) == ["ALARM", "WARN", "DEVIATION", "NOTE"]
    assert [(pv.type, pv.latch, pv.latch_dir) for pv in outputs.values()] == [
        ("bool", True, "rise"), ("bool", True, "fall"), ("float", True, "any"), ("string", True, "rise")]
    assert outputs["ALARM"].alarm.osv == "MAJOR" and config.warnings == []


def test_a_list_of_pvs_needs_a_name_each(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(tmp_path, """
            arguments:
              outputs:
                - {name: A, type: bool}
                - {type: bool}
                - {name: A, type: int}
        """)
    messages = sorted(issue.message for issue in caught.value.issues)
    assert messages[0].startswith("arguments.outputs[1]: a PV in a list is a mapping with its name:"), messages
    assert messages[1] == "arguments.outputs[2].name: 'A' appears twice", messages


def test_keys_iocmng_ignores_are_accepted_with_a_warning_each(tmp_path: Path) -> None:
    # iocmng's plugin_spec reads these and its record builder never uses them here
    config = _config(tmp_path, """
        arguments:
          inputs:
            U: {type: float, trigger: true, link_mode: monitor, poll_rate: 1}
            E: {type: float, link: ""}
            L: {type: bool, latch: true}
            NOTYPE: {value: 1.5}
            M: {type: float, mode: monitor}
          outputs:
            B: {type: bool, unit: V, low: 0, prec: 2, latch_dir: fall}
            S: {type: string, alarm_on: MAJOR, unit: mm}
            I: {type: int, prec: 2, znam: Z}
            F: {type: float, onam: Y}
        rules:
          - condition: "U > 1"
            actuators: {U: 0}
    """)
    warned = _warned(config)
    assert {path: line for path, (line, _) in warned.items()} == {
        "arguments.inputs.U.link_mode": 4, "arguments.inputs.U.poll_rate": 4, "arguments.inputs.U.trigger": 4,
        "arguments.inputs.E.link": 5, "arguments.inputs.L.latch": 6, "arguments.inputs.NOTYPE.type": 7,
        "arguments.inputs.M.mode": 8,
        "arguments.outputs.B.unit": 10, "arguments.outputs.B.low": 10, "arguments.outputs.B.prec": 10,
        "arguments.outputs.B.latch_dir": 10, "arguments.outputs.S.alarm_on": 11, "arguments.outputs.S.unit": 11,
        "arguments.outputs.I.prec": 12, "arguments.outputs.I.znam": 12, "arguments.outputs.F.onam": 13,
        "rules[0].actuators.U": 16,
    }
    assert all(message.startswith("ignored: ") for path, (_, message) in warned.items()
               if not path.endswith("NOTYPE.type"))
    inputs, outputs = config.pvs.inputs, config.pvs.outputs
    assert (inputs["U"].link_mode, inputs["U"].poll_rate, inputs["U"].trigger) == ("poll", None, False)
    assert inputs["E"].link is None and not inputs["E"].wired and inputs["L"].latch is False
    assert inputs["M"].link_mode == "poll"
    assert (inputs["NOTYPE"].type, inputs["NOTYPE"].value) == ("float", 1.5)
    assert (outputs["B"].unit, outputs["B"].low, outputs["B"].latch_dir) == (None, None, "rise")
    assert outputs["S"].alarm is None and outputs["I"].prec is None and outputs["F"].onam is None
    assert config.rules[0].actuators == {}


@pytest.mark.parametrize("pv, path, words", [
    ("{type: float, link: 'DEV:X', buffr_size: 3}", "buffr_size", "did you mean 'buffer_size'?"),
    ("{type: float, link: 'DEV:X', link_mod: monitor}", "link_mod", "did you mean 'link_mode'?"),
    ("{type: float, alarm_onn: MAJOR}", "alarm_onn", "did you mean 'alarm_on'?"),
    ("{type: float, link: 'DEV:X', mode: monitr}", "mode", "should be 'monitor' or 'poll'"),
    ("{type: flaot}", "type", "unknown PV type 'flaot'"),
    ("{type: float, link: 'DEV:X', poll_rate: -1}", "poll_rate", "greater than or equal to 0"),
])
def test_typos_stay_errors(tmp_path: Path, pv: str, path: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(tmp_path, f"arguments:\n  inputs:\n    X: {pv}\n")
    issue, = caught.value.issues
    assert issue.severity is Severity.ERROR and issue.line == 3
    assert issue.message.startswith(f"arguments.inputs.X.{path}: ") and words in issue.message, issue.message


def test_actuators_of_an_undeclared_pv_stay_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(tmp_path, "arguments:\n  outputs:\n    A: {type: bool}\nrules:\n"
                          "  - {condition: 'A == 1', actuators: {heater: 0}}\n")
    assert "rules[0].actuators.heater: 'heater' is not a declared PV" in caught.value.issues[0].message


# -- `iochost validate` -------------------------------------------------------------------------------
# MANUAL section 5 "Complete Example", in our words: a monitored SENSOR with a poll_rate, and a
# rule whose actuator is an input without a link
COMPLETE = """
    prefix: FORMS_TASK
    parameters:
      mode: continuous
      interval: 1.0
      timeout: 5.0
      pva: false
      threshold: 75.0
    arguments:
      inputs:
        SETPOINT: {type: float, value: 50.0, unit: "%", prec: 2, low: 0, high: 100}
        SENSOR:
          type: float
          link: "FORMS:DEV:SENSOR"
          link_mode: monitor
          poll_rate: 2.0
          trigger: true
          buffer_size: 100
      outputs:
        ALARM: {type: bool, value: 0, znam: OK, onam: ALARM}
        AVG: {type: float, value: 0.0}
        MSG: {type: string, value: Initializing}
    transforms:
      - output: AVG
        expression: "mean(SENSOR_buf)"
    rule_defaults:
      ALARM: 0
    rules:
      - id: OVER_TEMP
        condition: "mean(SENSOR_buf) > threshold"
        message: Too hot
        message_pv: MSG
        outputs: {ALARM: 1}
      - id: SENSOR_OFFLINE
        condition: "SENSOR == 0"
        actuators: {SETPOINT: 0}
        outputs: {ALARM: 1}
"""


def test_validate_prints_each_warning_at_its_line_and_passes(tmp_path: Path) -> None:
    plugin = make_plugin(tmp_path, "complete", TASK, COMPLETE)
    result = subprocess.run([sys.executable, "-m", "iochost", "validate", str(plugin)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == [
        "[config] config.yaml:16: warning: arguments.inputs.SENSOR.poll_rate: ignored: a link_mode: monitor "
        "link is updated on every change, not polled",
        "[config] config.yaml:36: warning: rules[1].actuators.SETPOINT: ignored: 'SETPOINT' has no link: "
        "to write to",
    ], result.stdout
    assert lines[2].startswith("OK: complete is a continuous task (Forms in complete.py)")
    assert lines[2].endswith(", 2 warnings") and len(lines) == 3


def test_validate_lists_warnings_beside_errors(tmp_path: Path) -> None:
    """A config that validates shows its warnings beside the errors of another stage."""
    plugin = make_plugin(tmp_path, "mixed", "x = (\n", "arguments:\n  inputs:\n    A: {type: float, trigger: true}\n")
    result = subprocess.run([sys.executable, "-m", "iochost", "validate", str(plugin), "--json"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    body = json.loads(result.stdout)
    assert [(i["stage"], i["line"], i["severity"]) for i in body["issues"]] == [("syntax", 1, "error")]
    assert [(i["line"], i["severity"], i["message"]) for i in body["warnings"]] == [
        (3, "warning", "arguments.inputs.A.trigger: ignored: only a wired PV (one with link:) has a link to read")]
    text = subprocess.run([sys.executable, "-m", "iochost", "validate", str(plugin)],
                          capture_output=True, text=True, timeout=120).stdout.splitlines()
    assert text[0].startswith("[syntax] mixed.py:1: SyntaxError")
    assert text[1] == ("[config] config.yaml:3: warning: arguments.inputs.A.trigger: ignored: only a wired PV "
                       "(one with link:) has a link to read")
    assert text[2] == "FAILED: mixed: 1 error (syntax)"


@pytest.mark.parametrize("pv, path, line, words", [
    # MANUAL section 5: alarm_on without high: takes iocmng's default high, beside an alarm:
    # whose hihi lies below it: the problem is alarm_on's limit, not a high: nobody wrote
    ("\n      alarm_on: MAJOR\n      alarm: {hihi: 50}", "alarm_on", 4,
     f"alarm_on's high ({ALARM_ON_HIGH}, iocmng's default without high:) is above hihi (50)"),
    ("\n      alarm_on: MAJOR\n      alarm: {low: 200}", "alarm.low", 5,
     f"low (200) is above alarm_on's high ({ALARM_ON_HIGH}, iocmng's default without high:)"),
    ("\n      alarm_on: MAJOR\n      high: 60\n      alarm: {low: 70}", "alarm.low", 6,
     "low (70) is above high (60)"),
])
def test_alarm_on_limits_out_of_order_are_refused_at_the_keys_written(
        tmp_path: Path, pv: str, path: str, line: int, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(tmp_path, f"arguments:\n  outputs:\n    X:{pv}\n")
    issue, = caught.value.issues
    assert issue.severity is Severity.ERROR and issue.line == line, issue
    assert issue.message.startswith(f"arguments.outputs.X.{path}: ") and words in issue.message, issue.message

