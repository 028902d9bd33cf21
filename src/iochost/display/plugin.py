"""A plugin's Phoebus display, from its config.yaml, kind and mode (see docs/explanation/architecture.md).

The same facts name the records (``config.pvnames``, ``worker/records.py``), so every widget
is bound to a PV the plugin's worker serves: inputs get write widgets suited to their type,
outputs read widgets (waveforms a plot), and the default PVs their own group.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pvi.device import (
    LED,
    ComboBox,
    Device,
    Grid,
    Group,
    SignalR,
    SignalW,
    SignalX,
    TextFormat,
    TextRead,
    TextWrite,
    ToggleButton,
)

from iochost.config import PluginConfig, PVDef, load_config, plugin_mode
from iochost.config.pvnames import DEFAULT_PV, default_pv_names, plugin_pv_prefix
from iochost.display.bob import Layout, Plot, label_width, render, value_width
from iochost.display.catalog import default_pv_labels, status_names
from iochost.kinds import Kind
from iochost.record_sizes import STRING_LENGTH


class _Names:
    """pvi wants unique PascalCase component names; ours are labels, so number them."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        return f"Pv{self.count:03d}"


def _tooltip(full: str, pv: PVDef) -> str:
    parts = [full]
    if pv.description:
        parts.append(pv.description)
    if pv.low is not None or pv.high is not None:
        low = "" if pv.low is None else f"{pv.low:g}"
        high = "" if pv.high is None else f"{pv.high:g}"
        parts.append(f"range {low}..{high}{' ' + pv.unit if pv.unit else ''}")
    if pv.type == "enum" and pv.choices:
        parts.append("choices: " + " / ".join(pv.choices))
    if pv.type == "bool":
        parts.append(f"0 = {pv.znam}, 1 = {pv.onam}")
    return " - ".join(parts)


def _write_widget(pv: PVDef) -> Any:
    if pv.type == "enum":
        return ComboBox()  # items from the PV: the record's own choices
    if pv.type == "bool":
        return ToggleButton()
    if pv.type == "string":
        return TextWrite(format=TextFormat.string)
    return TextWrite()  # numbers and waveforms ("1, 2, 3"); precision and units from the PV


def _read_widget(pv: PVDef) -> Any:
    if pv.type == "bool":
        return LED()
    if pv.type == "string":
        return TextRead(format=TextFormat.string)
    return TextRead()  # precision (PREC) and units (EGU) come from the PV


def plugin_device(name: str, prefix: str, kind: Kind, mode: str | None,
                  config: PluginConfig) -> tuple[Device, list[Plot]]:
    """The pvi ``Device`` of one plugin, and the waveform outputs to plot under it."""
    base = plugin_pv_prefix(prefix, name, config.prefix)
    names = _Names()
    labels = default_pv_labels(kind)
    defaults: list[SignalR | SignalW | SignalX] = []
    for default in default_pv_names(kind, mode, config.pvs):
        label, tip = labels[default]
        full = f"{base}:{default}"
        name_, description = names(), f"{full} - {tip}"
        shape = DEFAULT_PV[default].shape
        if shape == "switch":
            defaults.append(SignalW(name=name_, label=label, description=description, write_pv=full,
                                    write_widget=ToggleButton()))
        elif shape == "command":  # write 1; the worker sets it back to 0
            defaults.append(SignalX(name=name_, label=label, description=description, write_pv=full, value="1"))
        else:
            widget = TextRead(format=TextFormat.string) if shape == "text" else TextRead()
            defaults.append(SignalR(name=name_, label=label, description=description, read_pv=full,
                                    read_widget=widget))
    inputs: list[SignalR | SignalW] = []
    for short, pv in config.pvs.inputs.items():
        full = f"{base}:{short}"
        if pv.wired:  # its value comes from the link: operators read it, the record is an input
            inputs.append(SignalR(name=names(), label=pv.description or short,
                                  description=f"{_tooltip(full, pv)} - from {pv.link}",
                                  read_pv=full, read_widget=_read_widget(pv)))
            continue
        inputs.append(SignalW(name=names(), label=pv.description or short, description=_tooltip(full, pv),
                              write_pv=full, write_widget=_write_widget(pv)))
    outputs: list[SignalR] = []
    plots: list[Plot] = []
    for short, pv in config.pvs.outputs.items():
        full = f"{base}:{short}"
        label = pv.description or short
        if pv.is_waveform:
            plots.append(Plot(pv=full, title=f"{label} ({pv.unit})" if pv.unit else label,
                              tooltip=_tooltip(full, pv)))
            continue
        outputs.append(SignalR(name=names(), label=label, description=_tooltip(full, pv),
                               read_pv=full, read_widget=_read_widget(pv)))
    groups = [Group(name="Plugin", label="Job" if kind == "job" else "Task", layout=Grid(), children=defaults)]
    if inputs:
        groups.append(Group(name="Inputs", layout=Grid(), children=inputs))
    if outputs:
        groups.append(Group(name="Outputs", layout=Grid(), children=outputs))
    what = kind if kind == "job" else f"{mode or 'continuous'} task"
    return Device(label=f"{name} - {what}", children=groups), plots


def value_widths(name: str, prefix: str, kind: Kind, config: PluginConfig) -> dict[str, int]:
    """The width of each text PV's widget that shows its whole value: the status names, an
    enum's choices, a string's length (MESSAGE: its 39 characters, see ``bob.value_width``)."""
    base = plugin_pv_prefix(prefix, name, config.prefix)
    widths = {f"{base}:STATUS": value_width(status_names(kind))}
    widths |= {f"{base}:{short}": value_width(characters=STRING_LENGTH) for short, spec in DEFAULT_PV.items()
               if spec.shape == "text"}
    for short, pv in {**config.pvs.inputs, **config.pvs.outputs}.items():
        if pv.type == "string" and not pv.is_waveform:
            widths[f"{base}:{short}"] = value_width(characters=pv.text_size)
        elif pv.type == "enum":
            widths[f"{base}:{short}"] = value_width(pv.choices or [])
    return widths


def _labels(device: Device) -> list[str]:
    return [child.label or "" for group in device.children if isinstance(group, Group)
            for child in group.children if isinstance(child, (SignalR, SignalW, SignalX))]


def plugin_display(name: str, prefix: str, kind: Kind, mode: str | None, config: PluginConfig) -> bytes:
    """The .bob XML of one plugin's display; STATUS also sits in its title bar."""
    device, plots = plugin_device(name, prefix, kind, mode, config)
    return render(device, plots, layout=Layout(label_width=label_width(_labels(device), least=Layout.label_width)),
                  title_pv=f"{plugin_pv_prefix(prefix, name, config.prefix)}:STATUS",
                  widths=value_widths(name, prefix, kind, config))


def plugin_display_from_dir(plugin_dir: Path, name: str, prefix: str, kind: Kind,
                            parameters: dict[str, Any] | None = None) -> bytes:
    """The display of a plugin checkout, with the parameter overrides it runs with (its mode)."""
    config = load_config(plugin_dir)
    if parameters:
        config = config.with_parameters(parameters)
    return plugin_display(name, prefix, kind, plugin_mode(kind, config.parameters), config)
