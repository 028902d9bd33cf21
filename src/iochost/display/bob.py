"""Render a pvi ``Device`` to Phoebus .bob bytes, with the finishing pvi leaves to us.

pvi (epics-containers' generator) lays out labels, groups and widgets from its own
template. Three things of its .bob output are fixed here, on the XML, never on pvi's
internals: waveform plots, which pvi always moves into a second file (a sub-screen), are
drawn in the same display below the form, so one plugin is one self-contained file; an
action button's own ``pv_name`` (pvi's template leaves the placeholder "SignalX") names
the PV its action writes, so Phoebus shows that PV's connection on the button; and an
xyplot's duplicate ``y_axes`` (template + pvi's addition) keeps only pvi's autoscaled one.

Sizes come from the texts (``text_width``): labels as wide as their longest text, table
columns and text widgets as wide as what they show; every widget with a PV keeps its alarm
border (drawn ``ALARM_BORDER`` px around it) inside the display; LEDs get Phoebus's colours.
"""

from __future__ import annotations

import copy
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pvi._format import DLSFormatter  # pvi's own CLI imports it from here too
from pvi.device import ArrayTrace, Device, SignalR

from iochost.display.text_width import text_width, typical_width

SPACING = 5
PLOT_WIDTH = 600
PLOT_HEIGHT = 260
PLACEHOLDER_PV = "SignalX"  # what pvi's template leaves in a write-PV button's own pv_name
# The fonts pvi's template names (size, bold): measured as DejaVu Sans (see text_width).
TITLE_FONT = (22.0, True)
LABEL_FONT = (14.0, False)
VALUE_FONT = (14.0, True)  # text updates
HEADING_FONT = (16.0, True)  # a table's column titles
GROUP_FONT = (16.0, False)  # a group's name, on its border
LABEL_PAD = 4  # a label draws its text from its left edge
TEXT_PAD = 12  # a text update's insets and border, both sides
GROUP_PAD = 24  # a group's border and the gap before its name
GROUP_INSET = 36  # pvi's: a group is this much wider and taller than its widgets
ALARM_BORDER = 2  # Phoebus's alarm border, drawn around a widget with a PV
MARGIN = ALARM_BORDER + 1  # kept between a display's edge and any widget with a PV
MAX_TEXT_CHARS = 60  # a longer string PV (a log) shows its start; the tooltip has the PV
LED_OFF = (0, 60, 0)  # Phoebus's LED: dark green off, bright green on, the alarm on the border
LED_ON = (0, 255, 0)


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


def label_width(texts: Iterable[str], least: int = 0) -> int:
    """pvi's label width that shows each of ``texts`` whole (at least ``least``)."""
    return max([least, *(text_width(t, *LABEL_FONT) + LABEL_PAD for t in texts)])


def value_width(texts: Iterable[str] = (), characters: int = 0) -> int:
    """A text update's width that shows each of ``texts`` (enum choices, states), or any text
    of up to ``characters`` characters of ordinary prose (``typical_width``: a string PV's
    whole length, capped at ``MAX_TEXT_CHARS``). Prose is sized, not its widest case (39
    capital W's), so a form stays on a screen: an engineer reads a whole message at a glance
    and hovers for the PV."""
    known = [text_width(t, *VALUE_FONT) for t in texts]
    return max([typical_width(min(characters, MAX_TEXT_CHARS), *VALUE_FONT), *known]) + TEXT_PAD


def render(device: Device, plots: Sequence[Plot] = (), *, layout: Layout = Layout(),
           more: Sequence[tuple[Device, Layout]] = (), title_pv: str | None = None,
           widths: Mapping[str, int] | None = None, columns: Mapping[str, int] | None = None) -> bytes:
    """The .bob XML (UTF-8, with declaration) of ``device``; under it the widgets of the
    ``more`` devices (each laid out with its own widths, their titles dropped), then ``plots``;
    ``title_pv``: a PV the device shows in a text update, shown again at the title's right;
    ``widths``: the least width of the widgets of a PV (the last of their grid row);
    ``columns``: of a table's column (cells and heading) by its heading."""
    with tempfile.TemporaryDirectory(prefix="iochost-bob-") as tmp:
        root = _format(device, layout, Path(tmp, "display.bob"))
        below: list[list[ET.Element]] = []
        for i, (part, part_layout) in enumerate(more):
            widgets = _format(part, part_layout, Path(tmp, f"part{i}.bob")).findall("widget")
            below.append([w for w in widgets if w.findtext("name") != "Title"])
        below += [[_plot_widget(plot, Path(tmp, f"plot{i}.bob"))] for i, plot in enumerate(plots)]
        for block in below:
            _widen_columns(block, columns or {})
    _append_below(root, below)
    _fix_action_pvs(root)
    _widen(root, widths or {})
    _fit(root)
    _fix_leds(root)
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
    for trace in widget.findall("traces/trace"):
        _set(trace, "y_pv", waveform_pv(plot.pv))
        _set(trace, "name", plot.title)  # pvi's "$(traces[0].y_pv)" would show the protocol
    axes = widget.findall("y_axes")
    for extra in axes[:-1]:  # the template's fixed 0..100 axis; pvi appends the autoscaled one
        widget.remove(extra)
    _set(widget, "name", plot.title)
    _set(widget, "title", plot.title)
    if plot.tooltip:
        _set(widget, "tooltip", plot.tooltip)
    return widget


def waveform_pv(pv: str) -> str:
    """The name a plot reads a waveform by: over PV Access, which carries the array's NORD
    elements (a history not yet full is drawn as far as it goes). Over Channel Access, Phoebus
    asks for NELM elements unless ``org.phoebus.pv.ca/variable_length_array`` is true, and the
    server pads the rest with zeros; the worker's IOC serves both protocols."""
    return f"pva://{pv}"


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
    width, height = min(_int(source, "width"), 160), _int(source, "height")
    needed = text_width(title.findtext("text") or "", *TITLE_FONT) + width + 2 * SPACING + MARGIN
    if needed > _int(root, "width"):
        _set(root, "width", str(needed))
    x = _int(root, "width") - width - MARGIN
    y = max(MARGIN, (_int(title, "height") - height) // 2)  # its alarm border inside the display
    for tag, value in (("name", "TitleStatus"), ("x", x), ("y", y), ("width", width), ("height", height)):
        _set(widget, tag, str(value))
    _set(title, "width", str(max(x - SPACING, 0)))
    root.insert(list(root).index(title) + 1, widget)


def _widen_columns(block: list[ET.Element], least: Mapping[str, int]) -> None:
    """Widen each column of pvi's ``Row`` tables in ``block`` (one x per column, a heading on
    top) to hold its heading and ``least[heading]``, moving the columns right of it along."""
    for group in (w for w in block if w.get("type") == "group"):
        grows: dict[int, int] = {}  # pvi's x of a column: how much wider it gets
        for heading in group.findall("widget"):
            if heading.findtext("name") == "Heading":
                text = heading.findtext("text") or ""
                needed = max(least.get(text, 0), text_width(text, *HEADING_FONT) + TEXT_PAD)
                grows[_int(heading, "x")] = max(needed - _int(heading, "width"), 0)
        for cell in group.findall("widget"):
            x = _int(cell, "x")
            _set(cell, "x", str(x + sum(grow for column, grow in grows.items() if column < x)))
            if x in grows:
                _set(cell, "width", str(_int(cell, "width") + grows[x]))
        _set(group, "width", str(_int(group, "width") + sum(grows.values())))


def _widen(root: ET.Element, least: Mapping[str, int]) -> None:
    for widget in root.iter("widget"):
        pv = widget.findtext("pv_name")
        if pv is not None and pv in least and widget.get("type") != "action_button":
            _set(widget, "width", str(max(_int(widget, "width"), least[pv])))


def _fit(root: ET.Element) -> None:
    """Grow each group to hold its widgets and its name, then the display to hold every
    widget with its alarm border (and the title to span it)."""
    def grow(group: ET.Element) -> None:
        children = group.findall("widget")
        for child in children:
            if child.get("type") == "group":
                grow(child)
        right = max((_int(c, "x") + _int(c, "width") for c in children), default=0)
        bottom = max((_int(c, "y") + _int(c, "height") for c in children), default=0)
        name = text_width(group.findtext("name") or "", *GROUP_FONT) + GROUP_PAD
        _set(group, "width", str(max(_int(group, "width"), right + GROUP_INSET, name)))
        _set(group, "height", str(max(_int(group, "height"), bottom + GROUP_INSET)))

    tops = root.findall("widget")
    for widget in tops:
        if widget.get("type") == "group":
            grow(widget)
    right = max((_int(w, "x") + _int(w, "width") for w in tops if w.findtext("name") != "Title"), default=0)
    bottom = max((_int(w, "y") + _int(w, "height") for w in tops), default=0)
    width = max(_int(root, "width"), right + SPACING)
    _set(root, "width", str(width))
    _set(root, "height", str(max(_int(root, "height"), bottom + SPACING)))
    for title in root.findall("widget[@type='label']"):
        if title.findtext("name") == "Title":
            _set(title, "width", str(max(width, text_width(title.findtext("text") or "", *TITLE_FONT) + LABEL_PAD)))
            _set(root, "width", str(max(width, _int(title, "width"))))


def _fix_leds(root: ET.Element) -> None:
    """pvi's LED is hollow off and cyan on; operators read Phoebus's green one."""
    for led in root.iter("widget"):
        if led.get("type") != "led":
            continue
        for tag, (red, green, blue) in (("off_color", LED_OFF), ("on_color", LED_ON)):
            holder = led.find(tag)
            if holder is None:
                holder = ET.SubElement(led, tag)
            for old in list(holder):
                holder.remove(old)
            ET.SubElement(holder, "color", red=str(red), green=str(green), blue=str(blue))


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
