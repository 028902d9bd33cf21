"""config.yaml schema: every mistake is an error naming the key path and its line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from iochost.config import ConfigError, Parameters, PluginConfig, PVDef, load_config
from iochost.report import Stage


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "config.yaml").write_text(textwrap.dedent(text).lstrip("\n"))
    return tmp_path


def errors(tmp_path: Path, text: str) -> list:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    issues = caught.value.issues
    assert issues and all(i.stage is Stage.CONFIG and i.file == "config.yaml" for i in issues)
    return issues


def only(issues: list, path: str):
    found = [i for i in issues if i.message.startswith(path + ":")]
    assert len(found) == 1, [str(i) for i in issues]
    return found[0]


def test_valid_config_with_every_type(tmp_path):
    config = load_config(write(tmp_path, """
        parameters:
          mode: Triggered
          interval: 2
          threshold: 75.5
        pvs:
          inputs:
            SP: {type: float, value: 1.5, unit: V, prec: 2, low: 0, high: 10, description: Setpoint}
            COUNT: {type: int, value: 3}
            NAME: {type: str, value: hello}
            POWER: {type: boolean, value: "Yes", znam: "No", onam: "Yes"}
            MODE: {type: enum, choices: [Slow, Fast], value: Fast}
          outputs:
            WAVE: {type: double, length: 5, value: [1, 2]}
            IWAVE: {type: integer, length: 3}
            TEXT: {type: string, length: 200}
            FLAG: {type: bool}
    """))
    params = config.parameters
    assert (params.mode, params.interval) == ("triggered", 2.0)
    assert params.model_dump()["threshold"] == 75.5  # free keys reach the plugin
    pvs = {**config.pvs.inputs, **config.pvs.outputs}
    assert pvs["SP"].initial_value() == 1.5 and pvs["SP"].prec == 2
    assert pvs["COUNT"].prec is None and pvs["NAME"].type == "string"
    assert pvs["POWER"].type == "bool" and pvs["POWER"].initial_value() == 1
    assert pvs["MODE"].initial_value() == 1
    assert pvs["WAVE"].is_waveform and pvs["WAVE"].initial_value() == [1.0, 2.0, 0.0, 0.0, 0.0]
    assert pvs["IWAVE"].initial_value() == [0, 0, 0] and pvs["IWAVE"].type == "int"
    assert pvs["TEXT"].is_long_string and not pvs["NAME"].is_long_string
    assert (pvs["FLAG"].znam, pvs["FLAG"].onam, pvs["FLAG"].initial_value()) == ("Off", "On", 0)
    assert PVDef(type="float").prec == 3


def test_empty_file_is_valid(tmp_path):
    config = load_config(write(tmp_path, ""))
    assert config.pvs.inputs == {} and config.pvs.outputs == {}
    assert config.parameters.mode == "continuous"


def test_missing_file_names_it(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    (issue,) = caught.value.issues
    assert issue.file == "config.yaml" and "config.yaml not found" in issue.message


def test_unknown_key_with_its_line_and_a_suggestion(tmp_path):
    issues = errors(tmp_path, """
        pvs:
          outputs:
            T:
              type: float
              unti: degC
    """)
    issue = only(issues, "pvs.outputs.T.unti")
    assert issue.line == 5 and "unknown key" in issue.message and "'unit'" in issue.message


def test_unknown_top_level_key(tmp_path):
    issue = only(errors(tmp_path, "parameters: {}\npv:\n  inputs: {}\n"), "pv")
    assert issue.line == 2 and "'pvs'" in issue.message


def test_string_where_a_number_belongs(tmp_path):
    issues = errors(tmp_path, """
        parameters:
          interval: "1.5"
        pvs:
          inputs:
            SP: {type: float, low: "0"}
    """)
    assert only(issues, "parameters.interval").line == 2
    assert only(issues, "pvs.inputs.SP.low").line == 5


def test_all_problems_reported_not_only_the_first(tmp_path):
    issues = errors(tmp_path, """
        parameters:
          interval: 0
          mode: sometimes
        pvs:
          inputs:
            A: {type: float, unti: V}
          outputs:
            B: {type: int, value: 1.5}
            C: {type: bool, onam: ON}
    """)
    paths = [i.message.split(":")[0] for i in issues]
    assert paths == ["parameters.interval", "parameters.mode", "pvs.inputs.A.unti",
                     "pvs.outputs.B.value", "pvs.outputs.C.onam"]
    assert [i.line for i in issues] == [2, 3, 6, 8, 9]
    assert "quote" in issues[-1].message  # YAML's ON is a boolean


def test_unknown_pv_type_lists_valid_types(tmp_path):
    issue = only(errors(tmp_path, "pvs:\n  outputs:\n    X:\n      type: double_array\n"), "pvs.outputs.X.type")
    assert issue.line == 4
    assert "float, int, string, bool, enum" in issue.message


def test_enum_with_more_than_16_choices(tmp_path):
    choices = ", ".join(f"S{i}" for i in range(17))
    issue = only(errors(tmp_path, f"pvs:\n  inputs:\n    E:\n      type: enum\n      choices: [{choices}]\n"),
                 "pvs.inputs.E.choices")
    assert issue.line == 5 and "at most 16" in issue.message


def test_enum_choice_too_long_and_value_not_a_choice(tmp_path):
    issues = errors(tmp_path, """
        pvs:
          inputs:
            E: {type: enum, choices: [ok, "%s"]}
            F: {type: enum, choices: [a, b], value: c}
    """ % ("x" * 26))
    assert "25" in only(issues, "pvs.inputs.E.choices[1]").message
    assert "not one of the choices" in only(issues, "pvs.inputs.F.value").message


@pytest.mark.parametrize("pv, path, words", [
    ("{type: float, length: 3, value: [1, 2, 3, 4]}", "pvs.outputs.W.value", "more than length 3"),
    ("{type: int, length: 3, value: [1, 2.5]}", "pvs.outputs.W.value[1]", "integers"),
    ("{type: float, length: 0}", "pvs.outputs.W.length", "greater than or equal to 1"),
    ("{type: enum, choices: [a], length: 4}", "pvs.outputs.W.length", "not enum"),
    ("{type: float, value: [1, 2]}", "pvs.outputs.W.value", "should be a number"),
])
def test_bad_waveform(tmp_path, pv, path, words):
    issue = only(errors(tmp_path, f"pvs:\n  outputs:\n    W: {pv}\n"), path)
    assert issue.line == 3 and words in issue.message


@pytest.mark.parametrize("pv, path, words", [
    ("{type: string, choices: [a]}", "pvs.outputs.X.choices", "only for enum"),
    # iocmng ignores these keys on its own types (test_iocmng_config_forms: warnings); enum and
    # waveforms are iochost's, strict as ever
    ("{type: enum, choices: [a], znam: Z}", "pvs.outputs.X.znam", "only for bool"),
    ("{type: enum, choices: [a], unit: V}", "pvs.outputs.X.unit", "only for float and int"),
    ("{type: int, length: 2, prec: 2}", "pvs.outputs.X.prec", "only for float"),
    ("{type: float, low: 5, high: 1}", "pvs.outputs.X.low", "above high"),
    ("{type: float, value: 20, high: 10}", "pvs.outputs.X.value", "outside"),
    ("{type: string, value: %s}" % ("y" * 40), "pvs.outputs.X.value", "length: N"),
    ("{type: string, value: 12}", "pvs.outputs.X.value", "should be a string"),
    ("{type: int, value: 3000000000}", "pvs.outputs.X.value", "32-bit"),
    ("{type: bool, value: 2}", "pvs.outputs.X.value", "true/false"),
    ("{type: float, description: %s}" % ("d" * 41), "pvs.outputs.X.description", "the field holds 40 bytes"),
    ("{type: float, description: %s}" % ("é" * 21), "pvs.outputs.X.description", "42 bytes in UTF-8 (21 characters)"),
    ('{type: string, value: "a\\0b"}', "pvs.outputs.X.value", "NUL character"),
    ("{type: string, value: %s}" % ("ü" * 20), "pvs.outputs.X.value", "40 bytes in UTF-8 (20 characters)"),
    ("{type: int, low: 0.5}", "pvs.outputs.X.low", "32-bit integer on an int PV"),
    ("{type: int, mdel: 3.0e+16}", "pvs.outputs.X.mdel", "32-bit integer on an int PV"),
    ("{type: int, length: 35, high: 6.97568176613157e+16}", "pvs.outputs.X.high", "32-bit integer on an int PV"),
    ("{type: bool, onam: ''}", "pvs.outputs.X.onam", "empty state name"),
    ("{type: int, length: 23, value: -751173217971}", "pvs.outputs.X.value", "32-bit integers"),
    ("{type: int, length: 3, value: [1, 4294967296]}", "pvs.outputs.X.value[1]", "32-bit integers"),
    ("{type: float, low: -2.225073858507e-311}", "pvs.outputs.X.low", "too close to zero for an EPICS record"),
    ("{type: float, alarm: {hihi: 1.0e-320}}", "pvs.outputs.X.alarm.hihi", "too close to zero"),
])
def test_cross_field_rules(tmp_path, pv, path, words):
    issue = only(errors(tmp_path, f"pvs:\n  outputs:\n    X: {pv}\n"), path)
    assert words in issue.message and issue.line == 3


def test_name_in_inputs_and_outputs(tmp_path):
    issue = only(errors(tmp_path, """
        pvs:
          inputs:
            X: {type: int}
          outputs:
            X: {type: int}
    """), "pvs.outputs.X")
    assert issue.line == 5 and "inputs" in issue.message


def test_duplicate_key_is_an_error(tmp_path):
    issues = errors(tmp_path, """
        pvs:
          outputs:
            X: {type: int}
            X: {type: float}
    """)
    issue = only(issues, "pvs.outputs.X")
    assert issue.line == 4 and "duplicate key (first at line 3)" in issue.message


def test_yaml_syntax_error_has_a_line(tmp_path):
    issues = errors(tmp_path, "pvs:\n  outputs:\n    X: {type: int\n  inputs: {}\n")
    assert issues[0].line is not None and "invalid YAML" in issues[0].message


def test_pv_name_yaml_reads_as_boolean(tmp_path):
    issue = only(errors(tmp_path, "pvs:\n  inputs:\n    ON: {type: bool}\n"), "pvs.inputs")
    assert issue.line == 2 and "key True should be text" in issue.message and "quote" in issue.message


def test_top_level_must_be_a_mapping(tmp_path):
    assert "mapping" in errors(tmp_path, "- a\n- b\n")[0].message


def test_arguments_accepted_as_pvs(tmp_path):
    config = load_config(write(tmp_path, """
        arguments:
          inputs:
            GAIN: {type: float, value: 2}
          outputs:
            OUT: {type: float, unti: V}
    """.replace("unti: V", "unit: V")))
    assert list(config.pvs.inputs) == ["GAIN"] and config.pv_section == "arguments"
    assert config.key_lines[("pvs", "outputs", "OUT")] == 5
    issue = only(errors(tmp_path, "arguments:\n  outputs:\n    OUT: {type: float, unti: V}\n"),
                 "arguments.outputs.OUT.unti")
    assert issue.line == 3


def test_pvs_and_arguments_both_is_an_error(tmp_path):
    issues = errors(tmp_path, """
        pvs:
          outputs:
            A: {type: int}
        arguments:
          outputs:
            B: {type: int}
    """)
    assert only(issues, "arguments").line == 4
    with pytest.raises(Exception, match="not both"):
        PluginConfig.model_validate({"pvs": {}, "arguments": {}})


def test_mode_aliases_and_conflicts(tmp_path):
    assert Parameters.model_validate({"triggered": True}).mode == "triggered"
    assert Parameters.model_validate({"mode": "CONTINUOUS"}).mode == "continuous"
    assert "contradicts" in only(errors(tmp_path, "parameters: {mode: continuous, triggered: true}\n"),
                                 "parameters.triggered").message


def test_with_parameters_overrides_and_revalidates(tmp_path):
    config = load_config(write(tmp_path, "parameters:\n  interval: 1.0\n  threshold: 5\n  triggered: true\n"))
    assert config.parameters.mode == "triggered"
    merged = config.with_parameters({"interval": 0.25, "mode": "continuous", "extra": "x"})
    assert (merged.parameters.interval, merged.parameters.mode) == (0.25, "continuous")
    assert merged.parameters.model_dump()["threshold"] == 5 and merged.parameters.model_dump()["extra"] == "x"
    assert config.parameters.interval == 1.0  # the original is untouched
    assert merged.key_lines == config.key_lines
    with pytest.raises(ConfigError) as caught:
        config.with_parameters({"interval": -1, "retry_on_error": "yes"})
    messages = [i.message for i in caught.value.issues]
    assert len(messages) == 2
    assert messages[0].startswith("parameters.interval:") and "override" in messages[0]
    assert messages[1].startswith("parameters.retry_on_error:")


def test_alarm_config_for_every_pv_type(tmp_path):
    config = load_config(write(tmp_path, """
        pvs:
          inputs:
            SP: {type: float, low: 0, high: 50, alarm: {high: 40, hihi: 45, hyst: 0.5}, autosave: false}
          outputs:
            T:
              type: float
              mdel: 0.1
              adel: 1
              alarm:
                lolo: -5
                low: 0
                high: 30
                hihi: 40
                hsv: major
                llsv: Invalid
            N: {type: int, alarm: {high: 10}, mdel: 2}
            F: {type: bool, alarm: {zsv: MINOR}}
            G: {type: bool, alarm_on: major}
            E: {type: enum, choices: [OK, WARN, FAULT], alarm: {WARN: minor, FAULT: MAJOR}}
    """))
    pvs = {**config.pvs.inputs, **config.pvs.outputs}
    t = pvs["T"].alarm
    assert (t.lolo, t.low, t.high, t.hihi) == (-5, 0, 30, 40)
    assert (t.llsv, t.lsv, t.hsv, t.hhsv) == ("INVALID", "MINOR", "MAJOR", "MAJOR")  # defaults: MINOR, MAJOR
    assert (pvs["T"].mdel, pvs["T"].adel, pvs["T"].low) == (0.1, 1.0, None)  # PV-level low/high stay LOPR/HOPR
    sp = pvs["SP"]
    assert (sp.low, sp.high, sp.alarm.high, sp.alarm.hsv, sp.alarm.hhsv, sp.alarm.hyst) == (
        0, 50, 40, "MINOR", "MAJOR", 0.5)
    assert sp.autosave is False and pvs["T"].autosave is True
    assert (pvs["N"].alarm.high, pvs["N"].alarm.hsv, pvs["N"].alarm.hihi) == (10, "MINOR", None)
    assert (pvs["F"].alarm.zsv, pvs["F"].alarm.osv) == ("MINOR", None)
    assert (pvs["G"].alarm.osv, pvs["G"].alarm_on) == ("MAJOR", None)  # iocmng 2.7's alarm_on is osv
    assert pvs["E"].alarm == {"WARN": "MINOR", "FAULT": "MAJOR"}


def test_unknown_key_in_alarm_has_its_own_line_and_key_path(tmp_path):
    issues = errors(tmp_path, """
        pvs:
          outputs:
            T:
              type: float
              alarm:
                high: 5
                hihhi: 9
    """)
    issue = only(issues, "pvs.outputs.T.alarm.hihhi")
    assert issue.line == 7 and "unknown key; did you mean 'hihi'?" in issue.message
    assert "valid keys: hihi, high, low, lolo, hhsv, hsv, lsv, llsv, hyst" in issue.message
    issue = only(errors(tmp_path, "arguments:\n  outputs:\n    B:\n      type: bool\n      alarm:\n        hihi: 1\n"),
                 "arguments.outputs.B.alarm.hihi")
    assert issue.line == 6 and "only for float and int PVs, not bool" in issue.message
    issue = only(errors(tmp_path, "pvs:\n  outputs:\n    T:\n      type: float\n      alarm: {zsv: MAJOR}\n"),
                 "pvs.outputs.T.alarm.zsv")
    assert issue.line == 5 and "only for bool PVs, not float" in issue.message
    issue = only(errors(tmp_path, "pvs:\n  outputs:\n    B:\n      type: bool\n      alarm: {zsvv: MAJOR}\n"),
                 "pvs.outputs.B.alarm.zsvv")
    assert "did you mean 'zsv'? (valid keys: zsv, osv)" in issue.message


@pytest.mark.parametrize("pv, path, words", [
    ("{type: float, alarm: {high: '5'}}", "pvs.outputs.X.alarm.high",
     "should be a valid number, got '5' (a quoted string)"),
    ("{type: float, alarm: {hsv: MINRO, high: 1}}", "pvs.outputs.X.alarm.hsv", "did you mean 'MINOR'"),
    ("{type: float, alarm: {hsv: 1, high: 1}}", "pvs.outputs.X.alarm.hsv", "NO_ALARM, MINOR, MAJOR, INVALID"),
    ("{type: float, alarm: {hsv: MAJOR}}", "pvs.outputs.X.alarm.hsv", "high, which is not set"),
    ("{type: float, alarm: {low: 5, high: 3}}", "pvs.outputs.X.alarm.low", "low (5) is above high (3)"),
    ("{type: float, alarm: {hihi: 5, high: 7}}", "pvs.outputs.X.alarm.high", "high (7) is above hihi (5)"),
    ("{type: float, alarm: {lolo: 2, hihi: 1}}", "pvs.outputs.X.alarm.lolo", "lolo <= low <= high <= hihi"),
    ("{type: float, alarm: {hyst: -1, high: 1}}", "pvs.outputs.X.alarm.hyst", "greater than or equal to 0"),
    ("{type: float, alarm: 5}", "pvs.outputs.X.alarm", "should be a mapping"),
    ("{type: int, alarm: {high: 2.5}}", "pvs.outputs.X.alarm.high", "integer on an int PV"),
    ("{type: int, alarm: {hihi: 3000000000}}", "pvs.outputs.X.alarm.hihi", "32-bit"),
    ("{type: string, alarm: {high: 1}}", "pvs.outputs.X.alarm", "not string"),
    ("{type: float, length: 4, alarm: {high: 1}}", "pvs.outputs.X.alarm", "waveforms have no alarm"),
    ("{type: enum, choices: [A, B], alarm: {C: MAJOR}}", "pvs.outputs.X.alarm.C", "not one of the choices"),
    ("{type: enum, choices: [A, B], alarm: {hihi: 3}}", "pvs.outputs.X.alarm.hihi", "only for float and int PVs"),
    ("{type: enum, choices: [A, B], alarm: {B: LOUD}}", "pvs.outputs.X.alarm.B", "unknown alarm severity 'LOUD'"),
    ("{type: bool, alarm_on: MAJOR, alarm: {osv: MINOR}}", "pvs.outputs.X.alarm_on", "not both"),
    ("{type: enum, choices: [A], alarm_on: MAJOR}", "pvs.outputs.X.alarm_on", "only for bool, float and int"),
    ("{type: bool, alarm_on: yes}", "pvs.outputs.X.alarm_on", "unknown alarm severity True"),
    ("{type: bool, mdel: 1}", "pvs.outputs.X.mdel", "only for float and int"),
    ("{type: float, length: 3, adel: 1}", "pvs.outputs.X.adel", "not waveforms"),
    ("{type: float, mdel: -1}", "pvs.outputs.X.mdel", "greater than or equal to 0"),
    ("{type: int, mdel: 0.5}", "pvs.outputs.X.mdel", "integer on an int PV"),
    ("{type: float, autosave: false}", "pvs.outputs.X.autosave", "only for inputs"),
    ("{type: float, autosave: 'no'}", "pvs.outputs.X.autosave", "should be a valid boolean"),
])
def test_bad_alarm_config(tmp_path, pv, path, words):
    issue = only(errors(tmp_path, f"pvs:\n  outputs:\n    X: {pv}\n"), path)
    assert words in issue.message and issue.line == 3, issue.message
