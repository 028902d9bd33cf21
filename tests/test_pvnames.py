"""PV names: the default PVs (one table the worker, the display and the validator read) and the
legality rules of every name (``config.pvnames``)."""

from __future__ import annotations

import pytest

from iochost.config import PluginConfig
from iochost.config.pvnames import DEFAULT_PV, check_pv_names, default_pv_names, full_pv_name, plugin_pv_prefix
from iochost.report import Stage


def test_pv_names_and_defaults():
    assert plugin_pv_prefix("BL", "my-plugin") == "BL:MY-PLUGIN"
    assert full_pv_name("BL", "x", "SP") == "BL:X:SP"
    assert default_pv_names("task", "continuous") == ["ENABLE", "STATUS", "MESSAGE", "CYCLE_COUNT", "VERSION",
                                                      "CLEAR", "RESET"]
    assert default_pv_names("task", "triggered")[-3:] == ["RUN", "CLEAR", "RESET"]
    assert default_pv_names("job", None) == ["STATUS", "MESSAGE", "RUN"]


WIRED = {"pvs": {"inputs": {"IN": {"type": "float", "link": "OTHER:IN"}},
                 "outputs": {"OUT": {"type": "float", "link": "OTHER:OUT"}}}}
DEFAULT_PV_CASES = [("task", "continuous", {}), ("task", "triggered", WIRED), ("job", None, {})]


def _present_defaults(kind: str, mode: str | None, config: PluginConfig) -> tuple[set[str], set[str]]:
    """The table's writable and text default PVs of a plugin of ``kind`` and ``mode``."""
    names = default_pv_names(kind, mode, config.pvs)
    return ({name for name in names if DEFAULT_PV[name].writable},
            {name for name in names if DEFAULT_PV[name].shape == "text"})


@pytest.mark.parametrize("kind, mode, data", DEFAULT_PV_CASES)
def test_the_display_reads_the_default_pvs_from_the_one_table(kind, mode, data):
    """The display's write widgets are the table's writable PVs, its text widgets its text PVs."""
    from pvi.device import SignalR, SignalW, SignalX, TextFormat

    from iochost.display.plugin import plugin_device

    config = PluginConfig.model_validate(data)
    device, _ = plugin_device("p", "T", kind, mode, config)
    group = next(child for child in device.children if child.name == "Plugin")
    written = {signal.write_pv.rsplit(":", 1)[1] for signal in group.children
               if isinstance(signal, (SignalW, SignalX))}
    texts = {signal.read_pv.rsplit(":", 1)[1] for signal in group.children if isinstance(signal, SignalR)
             and getattr(signal.read_widget, "format", None) == TextFormat.string}
    assert (written, texts) == _present_defaults(kind, mode, config)
    assert written and texts


@pytest.mark.parametrize("kind, mode, data", DEFAULT_PV_CASES)
def test_the_worker_reads_the_default_pvs_from_the_one_table(kind, mode, data, monkeypatch):
    """The worker's writable and text default records are the table's: the records an
    operator can write (built with on_update) and the stringin records whose values it cuts."""
    from iochost.worker import records

    built: dict[str, tuple[str, dict]] = {}

    class Builder:  # records what build_records asks softioc's builder for, without an IOC
        def __getattr__(self, method: str):
            def make(name: str, *args, **fields) -> str:  # SetDeviceName(prefix) lands here too
                built[name] = (method, fields)
                return name
            return make

    monkeypatch.setattr(records, "builder", Builder())
    config = PluginConfig.model_validate(data)
    table = records.build_records("T:P", kind, mode, config.pvs, "v1", lambda name, value: None)
    defaults = set(default_pv_names(kind, mode, config.pvs))
    writable, texts = _present_defaults(kind, mode, config)
    assert table.writable & defaults == writable
    assert table.short_strings & defaults == texts
    assert {name for name in defaults if "on_update" in built[name][1]} == writable
    assert {name for name in defaults if built[name][0] == "stringIn"} == texts


def test_check_pv_names_reports_each_problem():
    config = PluginConfig.model_validate({"pvs": {
        "inputs": {"BAD NAME": {"type": "int"}, "gain": {"type": "float"}, "RUN": {"type": "int"}},
        "outputs": {"GAIN": {"type": "float"}, "A.B": {"type": "int"}, "L" * 50: {"type": "int"}},
    }})
    lines = {("pvs", "inputs", "BAD NAME"): 7}
    issues = check_pv_names("IOCHOST", "demo", "task", "triggered", config.pvs, lines=lines)
    text = "\n".join(str(i) for i in issues)
    assert all(i.stage is Stage.PVS for i in issues)
    assert issues[0].line == 7 and "'BAD NAME' is not a legal PV name" in issues[0].message
    assert "pvs.inputs.RUN: RUN collides with the default PV RUN" in text
    assert "pvs.outputs.GAIN: GAIN differs only in case from gain" in text
    assert "'A.B' is not a legal PV name" in text
    assert "more than 60" in text
    assert len(issues) == 5
    assert check_pv_names("IOCHOST", "demo", "task", "continuous", PluginConfig().pvs) == []
    assert "plugin name" in check_pv_names("IOCHOST", "bad name", "job", None, PluginConfig().pvs)[0].message


def test_a_name_with_a_trailing_newline_is_refused():
    """``$`` in a pattern also matches before a final newline: every name check matches the
    whole text, so a YAML key ``"X\\n"``, a plugin ``demo\\n`` or a prefix ``IOC\\n`` never
    validates (they would name records no client can reach)."""
    from iochost.config.pvnames import pv_prefix_problem
    from iochost.scaffold.plugin_names import ScaffoldError, plugin_names

    pvs = PluginConfig.model_validate({"pvs": {"outputs": {"X\n": {"type": "int"}}}}).pvs
    (issue,) = check_pv_names("IOCHOST", "demo", "task", "continuous", pvs)
    assert "pvs.outputs.'X\\n'" in issue.message and "not a legal PV name" in issue.message
    assert "\n" not in issue.message
    assert "plugin name" in check_pv_names("IOCHOST", "demo\n", "job", None, PluginConfig().pvs)[0].message
    assert pv_prefix_problem("IOC\n") is not None
    with pytest.raises(ScaffoldError):
        plugin_names("demo\n")
