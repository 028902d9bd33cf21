"""Render a pvi ``Device`` to Phoebus .bob bytes, with the finishing pvi leaves to us.

pvi (epics-containers' generator) lays out labels, groups and widgets from its own
template. Three things of its .bob output are fixed here, on the XML, never on pvi's
internals: waveform plots, which pvi always moves into a second file (a sub-screen), are
drawn in the same display below the form, so one plugin is one self-contained file; an
action button's own ``pv_name`` (pvi's template leaves the placeholder "SignalX") names
the PV its action writes, so Phoebus shows that PV's connection on the button; and an
xyplot's duplicate ``y_axes`` (template + pvi's addition) keeps only pvi's autoscaled one.
"""

from __future__ import annotations

import copy
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pvi._format import DLSFormatter  # pvi's own CLI imports it from here too
from pvi.device import ArrayTrace, Device, SignalR

SPACING = 5
PLOT_WIDTH = 600
PLOT_HEIGHT = 260
TITLE_CHAR_WIDTH = 13  # of pvi's title font (22 pt bold), generously
PLACEHOLDER_PV = "SignalX"  # what pvi's template leaves in a write-PV button's own pv_name


@dataclass(frozen=True)
class Layout:
    """pvi's widths for one part of a display: its labels and its widgets."""

    label_width: int = 200
    widget_width: int = 200


@dataclass(frozen=True)
class Plot:
    """A waveform drawn under the form: its PV, the y-axis title, the tooltip."""

    pv: str
    title: str
    tooltip: str = ""


def render(device: Device, plots: Sequence[Plot] = (), *, layout: Layout = Layout(),
           more: Sequence[tuple[Device, Layout]] = (), title_pv: str | None = None) -> bytes:
    """The .bob XML (UTF-8, with declaration) of ``device``; under it the widgets of the
    ``more`` devices (each laid out with its own widths, their titles dropped), then ``plots``;
    ``title_pv``: a PV the device shows in a text update, shown again at the title's right."""
    with tempfile.TemporaryDirectory(prefix="iochost-bob-") as tmp:
        root = _format(device, layout, Path(tmp, "display.bob"))
        below: list[list[ET.Element]] = []
        for i, (part, part_layout) in enumerate(more):
            widgets = _format(part, part_layout, Path(tmp, f"part{i}.bob")).findall("widget")
            below.append([w for w in widgets if w.findtext("name") != "Title"])
        below += [[_plot_widget(plot, Path(tmp, f"plot{i}.bob"))] for i, plot in enumerate(plots)]
    _append_below(root, below)
    _fix_action_pvs(root)
    if title_pv is not None:
        _show_in_title(root, title_pv)
    ET.indent(root, space="  ")
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def _format(device: Device, layout: Layout, path: Path) -> ET.Element:
    DLSFormatter(label_width=layout.label_width, widget_width=layout.widget_width).format(device, path)
    return ET.parse(path).getroot()


def _plot_widget(plot: Plot, path: Path) -> ET.Element:
    """pvi's xyplot for one waveform: a device of that one signal keeps it inline."""
    signal = SignalR(name="Plot", read_pv=plot.pv,
                     read_widget=ArrayTrace(axis=plot.title, width=PLOT_WIDTH, height=PLOT_HEIGHT))
    DLSFormatter().format(Device(label="", children=[signal]), path)
    widget = ET.parse(path).getroot().find("widget[@type='xyplot']")
    if widget is None:
        raise RuntimeError(f"pvi drew no xyplot for {plot.pv}")
    axes = widget.findall("y_axes")
    for extra in axes[:-1]:  # the template's fixed 0..100 axis; pvi appends the autoscaled one
        widget.remove(extra)
    _set(widget, "name", plot.title)
    _set(widget, "title", plot.title)
    if plot.tooltip:
        _set(widget, "tooltip", plot.tooltip)
    return widget


def _fix_action_pvs(root: ET.Element) -> None:
    for button in root.iter("widget"):
        if button.get("type") != "action_button":
            continue
        own = button.find("pv_name")
        target = button.find("actions/action[@type='write_pv']/pv_name")
        if own is not None and own.text == PLACEHOLDER_PV:
            if target is not None and target.text:
                own.text = target.text
            else:
                button.remove(own)


def _append_below(root: ET.Element, blocks: list[list[ET.Element]]) -> None:
    """Move each block of widgets (kept as laid out) under what the display holds, and grow
    the display (and its title) to hold them."""
    if not blocks:
        return
    bottom = max((_int(w, "y") + _int(w, "height") for w in root.findall("widget")), default=0)
    width = _int(root, "width")
    for block in blocks:
        shift = bottom + SPACING - min(_int(w, "y") for w in block)
        for widget in block:
            x = max(_int(widget, "x"), SPACING)
            _set(widget, "x", str(x))
            _set(widget, "y", str(_int(widget, "y") + shift))
            root.append(widget)
            bottom = max(bottom, _int(widget, "y") + _int(widget, "height"))
            width = max(width, x + _int(widget, "width") + SPACING)
    _set(root, "height", str(bottom + SPACING))
    _set(root, "width", str(width))
    for title in root.findall("widget[@type='label']"):  # pvi's title spans the display
        if title.findtext("name") == "Title":
            _set(title, "width", str(width))


def _show_in_title(root: ET.Element, pv: str) -> None:
    """A copy of ``pv``'s text update at the right end of the title bar, the title shortened
    to leave it room."""
    source = next((w for w in root.iter("widget") if w.get("type") == "textupdate" and w.findtext("pv_name") == pv),
                  None)
    title = next((w for w in root.findall("widget[@type='label']") if w.findtext("name") == "Title"), None)
    if source is None or title is None:
        return
    widget = copy.deepcopy(source)
    width, height = min(_int(source, "width"), 160), _int(title, "height")
    needed = len(title.findtext("text") or "") * TITLE_CHAR_WIDTH + width + 3 * SPACING
    if needed > _int(root, "width"):
        _set(root, "width", str(needed))
    x = _int(root, "width") - width - SPACING
    for tag, value in (("name", "TitleStatus"), ("x", x), ("y", 0), ("width", width), ("height", height)):
        _set(widget, tag, str(value))
    _set(title, "width", str(max(x - SPACING, 0)))
    root.insert(list(root).index(title) + 1, widget)


def _int(element: ET.Element, tag: str) -> int:
    child = element.find(tag)
    try:
        return int(float(child.text or 0)) if child is not None else 0
    except ValueError:
        return 0


def _set(element: ET.Element, tag: str, text: str) -> None:
    child = element.find(tag)
    if child is None:
        child = ET.SubElement(element, tag)
    child.text = text
