"""The generated panels as Phoebus draws them: every text fits its widget in the font the
file names (measured as DejaVu Sans, JavaFX's fallback and the widest), every alarm border
lies inside the display, LEDs are Phoebus's green ones, and a history plot reads NORD
elements."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import EXAMPLES
from iochost.config import load_config
from iochost.display.bob import ALARM_BORDER
from iochost.display.catalog import IndexRow
from iochost.display.index import daemon_labels, index_display
from iochost.display.plugin import plugin_display, plugin_display_from_dir
from iochost.display.text_width import FONT_DIR, FONT_FILES, text_width, typical_width
from iochost.record_sizes import STRING_LENGTH
from iochost.settings import Settings

LONG = "Measured outlet temperature of stage two"  # descriptions: 40 bytes (DESC) at most
WIDE = "WARM MODE MAXIMUM OUTLET TEMPERATURE SET"  # and of wide glyphs
MESSAGE_TEXT = "Ready for the next trigger from timing."  # a whole MESSAGE: 39 characters
PLUGIN_PV = "BL07I-EA-CRYO-01:A-PLUGIN-WITH-A-RATHER-LONG-NAME"
ROWS = [IndexRow("over-temperature-interlock", "task", 1), IndexRow("n" * 40, "job", 2),
        IndexRow("beam-shutter", "task", None)]


def long_plugin(tmp_path: Path) -> bytes:
    (tmp_path / "config.yaml").write_text(textwrap.dedent(f"""\
        pvs:
          inputs:
            GAIN: {{type: float, description: "{WIDE}"}}
            MODE: {{type: enum, choices: [Continuous acquisition, Single shot]}}
          outputs:
            TEMP: {{type: float, unit: K, description: "{LONG}"}}
            NOTE: {{type: string, description: "Operator note"}}
            OK: {{type: bool, description: "Interlock healthy"}}
            HISTORY: {{type: float, length: 60, description: "Last 60 readings"}}
        """))
    return plugin_display("a-plugin-with-a-rather-long-name", "BL07I-EA-CRYO-01", "task", "continuous",
                          load_config(tmp_path))  # its PVs: BL07I-EA-CRYO-01:A-PLUGIN-...:*


def panels(tmp_path: Path) -> Iterator[tuple[str, ET.Element]]:
    yield "index", ET.fromstring(index_display("IOCHOST", ROWS, True, daemon_labels(Settings())))
    yield "long", ET.fromstring(long_plugin(tmp_path))
    for example in sorted(p.name for p in EXAMPLES.iterdir() if (p / "config.yaml").is_file()):
        kind = "job" if example == "diagnostics" else "task"
        yield example, ET.fromstring(plugin_display_from_dir(EXAMPLES / example, example, "DEMO", kind))


def font(widget: ET.Element) -> tuple[float, bool]:
    """The size and boldness of the font the widget's XML names."""
    named = widget.find("font/font")
    assert named is not None, widget.findtext("name")
    return float(named.get("size") or 0), named.get("style") == "BOLD"


def absolute(root: ET.Element) -> Iterator[tuple[ET.Element, int, int]]:
    """Every widget with its x and y in the display (a group's widgets are inside it)."""
    def walk(parent: ET.Element, dx: int, dy: int) -> Iterator[tuple[ET.Element, int, int]]:
        for widget in parent.findall("widget"):
            x, y = dx + int(widget.findtext("x") or 0), dy + int(widget.findtext("y") or 0)
            yield widget, x, y
            yield from walk(widget, x, y)
    return walk(root, 0, 0)


def size(widget: ET.Element) -> tuple[int, int]:
    return int(widget.findtext("width") or 0), int(widget.findtext("height") or 0)


def test_every_label_is_as_wide_as_its_text(tmp_path: Path) -> None:
    for name, root in panels(tmp_path):
        for widget in root.iter("widget"):
            if widget.get("type") == "label":
                text = widget.findtext("text") or ""
                assert size(widget)[0] >= text_width(text, *font(widget)), (name, text, size(widget))


def test_the_texts_phoebus_clipped_now_fit(tmp_path: Path) -> None:
    index = ET.fromstring(index_display("IOCHOST", ROWS, True, daemon_labels(Settings())))
    label = next(w for w in index.iter("widget") if w.findtext("text") == "Seconds since the daemon started")
    assert size(label)[0] >= text_width("Seconds since the daemon started", *font(label))
    for root, pv in ((index, "IOCHOST:OVER-TEMPERATURE-INTERLOCK:MESSAGE"), (index, "IOCHOST:BEAM-SHUTTER:MESSAGE"),
                     (ET.fromstring(long_plugin(tmp_path)), f"{PLUGIN_PV}:MESSAGE")):
        group = next(g for g in root.iter("widget") if any(w.findtext("pv_name") == pv for w in g.findall("widget")))
        cell = next(w for w in group.findall("widget") if w.findtext("pv_name") == pv)
        assert len(MESSAGE_TEXT) == STRING_LENGTH
        assert size(cell)[0] >= text_width(MESSAGE_TEXT, *font(cell)), (pv, size(cell))
        assert size(cell)[0] >= typical_width(STRING_LENGTH, *font(cell))
        heading = [w for w in group.findall("widget")
                   if w.findtext("name") == "Heading" and w.findtext("text") == "Message"]
        assert all(h.findtext("x") == cell.findtext("x") and size(h) == size(cell) for h in heading)
    for group in (g for g in index.iter("widget") if g.get("type") == "group"):  # columns never overlap
        for row in {w.findtext("y") for w in group.findall("widget")}:
            spans = sorted((int(w.findtext("x") or 0), size(w)[0]) for w in group.findall("widget")
                           if w.findtext("y") == row)
            assert all(x + width <= nxt for (x, width), (nxt, _) in zip(spans, spans[1:], strict=False)), spans


def test_every_alarm_border_lies_inside_the_display(tmp_path: Path) -> None:
    for name, root in panels(tmp_path):
        width, height = size(root)
        for widget, x, y in absolute(root):
            if not widget.findtext("pv_name") and widget.get("type") != "xyplot":
                continue
            w, h = size(widget)
            assert x - ALARM_BORDER >= 0 and y - ALARM_BORDER >= 0, (name, widget.findtext("name"), x, y)
            assert x + w + ALARM_BORDER < width and y + h + ALARM_BORDER < height, (name, widget.findtext("name"))
        for group in root.iter("widget"):  # a group holds its widgets
            if group.get("type") == "group":
                for child in group.findall("widget"):
                    right = int(child.findtext("x") or 0) + size(child)[0]
                    assert right <= size(group)[0], (name, group.findtext("name"))
        status = root.find("widget[name='TitleStatus']")
        if status is not None:
            assert int(status.findtext("y") or 0) >= ALARM_BORDER + 1


def test_leds_are_phoebus_green(tmp_path: Path) -> None:
    leds = [w for _, root in panels(tmp_path) for w in root.iter("widget") if w.get("type") == "led"]
    assert leds
    for led in leds:
        for tag, rgb in (("off_color", ("0", "60", "0")), ("on_color", ("0", "255", "0"))):
            color = led.find(f"{tag}/color")
            assert color is not None and (color.get("red"), color.get("green"), color.get("blue")) == rgb
            assert color.get("alpha") in (None, "255")


def test_a_history_plot_reads_the_waveform_over_pva(tmp_path: Path) -> None:
    """PV Access carries NORD elements whatever Phoebus's CA variable_length_array says."""
    root = ET.fromstring(long_plugin(tmp_path))
    traces = root.findall("widget[@type='xyplot']/traces/trace")
    assert [t.findtext("y_pv") for t in traces] == [f"pva://{PLUGIN_PV}:HISTORY"]
    assert traces[0].findtext("name") == "Last 60 readings" and not traces[0].findtext("x_pv")


def test_text_width_measures_dejavu_sans() -> None:
    assert text_width("", 14) == 0
    assert text_width("iii", 14) < text_width("WWW", 14) < text_width("WWW", 14, bold=True)
    assert text_width("ab", 28) >= 2 * text_width("ab", 14) - 1
    assert text_width("\u00e9\u4e2d", 14) >= text_width("WW", 14)  # beyond the table: the widest glyph
    assert text_width("short\na much longer line", 14) == text_width("a much longer line", 14)


@pytest.mark.skipif(not all((FONT_DIR / f).is_file() for f in FONT_FILES.values()), reason="DejaVu fonts missing")
def test_the_width_table_matches_the_installed_fonts() -> None:
    pytest.importorskip("fontTools")
    done = subprocess.run([sys.executable, "-m", "iochost.display.text_width", "--check"], capture_output=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr.decode()
