"""Generated Phoebus displays (pvi): the plugin and index .bob files, where operators get
them (REST, DATA_DIR/displays/, `iochost display`), and that every widget is bound to a
live PV of the right kind on a running daemon."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urljoin

import httpx
import pytest

from conftest import EXAMPLES, wait_for
from daemon_harness import Daemon, add, delete, wait_until
from gitrepos import Repo
from iochost.config import load_config
from iochost.config.pvnames import PLUGIN_NAME_LENGTH
from iochost.display.catalog import IndexRow
from iochost.display.index import index_display
from iochost.display.plugin import plugin_display, plugin_display_from_dir
from iochost.display.writer import DisplayFiles
from iochost.settings import Settings
from iochost.supervisor.daemon_ioc import system_config

# Phoebus widget types: those that show a PV's value, those that write one, and the rest.
READ_TYPES = {"textupdate", "led", "xyplot", "byte_monitor", "progressbar", "multi_state_led"}
WRITE_TYPES = {"textentry", "combo", "checkbox", "slide_button", "bool_button", "choice", "spinner",
               "action_button"}
OTHER_TYPES = {"label", "group", "rectangle"}
# The served daemon's PV prefix, its own: this process's libca keeps a channel per name for
# the session, and other modules' daemons (IOCHT) serve the same names after this one stopped.
PREFIX = "IOCHD"
EXAMPLE_KINDS = {"temperature-monitor": ("task", "continuous"), "beam-shutter": ("task", "triggered"),
                 "diagnostics": ("job", None), "over-temperature-interlock": ("task", "continuous")}


# -- reading .bob files ------------------------------------------------------------------------
def parse(data: bytes) -> ET.Element:
    """The display element; fails unless the bytes are a Phoebus display of known widgets."""
    root = ET.fromstring(data)
    assert root.tag == "display" and root.get("version"), root.tag
    for widget in root.iter("widget"):
        assert widget.get("type") in READ_TYPES | WRITE_TYPES | OTHER_TYPES, widget.get("type")
        for size in ("x", "y", "width", "height"):
            text = widget.findtext(size)
            assert text is None or int(text) >= 0, (widget.findtext("name"), size, text)
    return root


def bindings(root: ET.Element) -> list[tuple[str, str]]:
    """(widget type, PV) of every PV a widget reads or writes: its pv_name, a plot's traces,
    an action button's write_pv actions."""
    found = []
    for widget in root.iter("widget"):
        kind = widget.get("type")
        own = widget.findtext("pv_name")
        if own:
            found.append((kind, own))
        for y_pv in widget.findall("traces/trace/y_pv"):  # a plot reads its waveform over PVA
            found.append((kind, (y_pv.text or "").removeprefix("pva://")))
        for action in widget.findall("actions/action[@type='write_pv']"):
            found.append((kind, action.findtext("pv_name") or ""))
    return found


def opened_files(root: ET.Element) -> list[str]:
    return [a.findtext("file") or "" for a in root.iter("action") if a.get("type") == "open_display"]


def texts(root: ET.Element) -> set[str]:
    return {w.findtext("text") or "" for w in root.iter("widget")}


def write_actions(root: ET.Element) -> list[tuple[str, str]]:
    """(PV, value) of every write-PV button."""
    return [(a.findtext("pv_name") or "", a.findtext("value") or "")
            for a in root.iter("action") if a.get("type") == "write_pv"]


def check_kinds(root: ET.Element, pv_prefix: str, inputs: set[str], outputs: set[str]) -> None:
    """Each input (and ENABLE / RUN) is in a write widget, each output in a read widget."""
    bound = bindings(root)
    for short in inputs:
        kinds = {kind for kind, pv in bound if pv == f"{pv_prefix}:{short}"}
        assert kinds and kinds <= WRITE_TYPES, (short, kinds)
    for short in outputs:
        kinds = {kind for kind, pv in bound if pv == f"{pv_prefix}:{short}"}
        assert kinds and kinds <= READ_TYPES, (short, kinds)


# -- the generator, alone --------------------------------------------------------------------
@pytest.mark.parametrize("example", sorted(EXAMPLE_KINDS))
def test_example_displays_bind_every_pv_to_a_widget_of_its_kind(example: str) -> None:
    kind, mode = EXAMPLE_KINDS[example]
    config = load_config(EXAMPLES / example)
    root = parse(plugin_display_from_dir(EXAMPLES / example, example, "DEMO", kind))
    prefix = f"DEMO:{example.upper()}"
    wired = {name for name, pv in config.pvs.inputs.items() if pv.wired}  # shows its link's value
    writable = set(config.pvs.inputs) - wired | ({"ENABLE", "CLEAR", "RESET"} if kind == "task" else set())
    writable |= {"RUN"} if kind == "job" or mode == "triggered" else set()
    readable = set(config.pvs.outputs) | wired | {"STATUS", "MESSAGE"}
    readable |= {"CYCLE_COUNT", "VERSION"} if kind == "task" else set()
    readable |= {"CONN_INP", "CONN_INP_NAMES"} if wired else set()
    check_kinds(root, prefix, writable, readable)
    assert {pv for _, pv in bindings(root)} == {f"{prefix}:{pv}" for pv in writable | readable}
    title = root.findtext("widget[name='Title']/text") or ""
    assert example in title and kind in title and (mode is None or mode in title)
    in_title = root.find("widget[name='TitleStatus']")  # STATUS in the title bar, right of the title
    assert in_title is not None and in_title.findtext("pv_name") == f"{prefix}:STATUS"
    assert int(in_title.findtext("x") or 0) >= int(root.findtext("widget[name='Title']/width") or 0)
    assert int(in_title.findtext("x") or 0) + int(in_title.findtext("width") or 0) <= int(root.findtext("width") or 0)
    for short, pv in {**config.pvs.inputs, **config.pvs.outputs}.items():  # labels: description, else name
        if not pv.is_waveform:
            assert (pv.description or short) in texts(root), short
    assert "SignalX" not in {pv for _, pv in bindings(root)}  # pvi's placeholder never reaches a file
    if kind == "job":
        assert {"Last result", "Last message"} <= texts(root)
    assert ("RUN" in writable) == ((f"{prefix}:RUN", "1") in write_actions(root))


def test_each_pv_type_gets_its_widget(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(textwrap.dedent("""\
        parameters: {mode: triggered}
        pvs:
          inputs:
            GAIN: {type: float, low: 0, high: 10, unit: V, description: "Amplifier gain"}
            COUNT: {type: int}
            MODE: {type: enum, choices: [Slow, Fast]}
            ARMED: {type: bool, znam: Safe, onam: Armed}
            NOTE: {type: string}
            PROFILE: {type: float, length: 8}
          outputs:
            LEVEL: {type: float, prec: 3, unit: mm}
            STEPS: {type: int}
            PHASE: {type: enum, choices: [A, B]}
            LIMIT: {type: bool}
            TEXT: {type: string}
            LOG: {type: string, length: 400}
            TRACE: {type: int, length: 100, unit: counts, description: "Raw trace"}
        """))
    root = parse(plugin_display("probe", "P", "task", "triggered", load_config(tmp_path)))
    widget_of = {pv.rsplit(":", 1)[1]: kind for kind, pv in bindings(root)}
    assert widget_of == {
        "ENABLE": "slide_button", "STATUS": "textupdate", "MESSAGE": "textupdate", "CYCLE_COUNT": "textupdate",
        "VERSION": "textupdate", "RUN": "action_button", "CLEAR": "action_button", "RESET": "action_button",
        "GAIN": "textentry", "COUNT": "textentry", "MODE": "combo", "ARMED": "slide_button", "NOTE": "textentry",
        "PROFILE": "textentry",
        "LEVEL": "textupdate", "STEPS": "textupdate", "PHASE": "textupdate", "LIMIT": "led", "TEXT": "textupdate",
        "LOG": "textupdate", "TRACE": "xyplot",
    }
    plot = root.find("widget[@type='xyplot']")
    assert plot is not None and plot.findtext("title") == "Raw trace (counts)"
    assert len(plot.findall("y_axes")) == 1  # pvi's template axis dropped, its autoscaled one kept
    form_bottom = max(int(w.findtext("y") or 0) + int(w.findtext("height") or 0)
                      for w in root.findall("widget") if w is not plot)
    assert int(plot.findtext("y") or 0) > form_bottom  # below the form, inside the display
    assert int(root.findtext("height") or 0) >= int(plot.findtext("y") or 0) + int(plot.findtext("height") or 0)
    gain_tip = [w.findtext("tooltip") for w in root.iter("widget") if w.findtext("text") == "Amplifier gain"]
    assert gain_tip and "range 0..10 V" in (gain_tip[0] or "")
    combo = next(w for w in root.iter("widget") if w.get("type") == "combo")
    assert combo.find("items_from_pv") is None or combo.findtext("items_from_pv") == "true"  # the record's choices


def test_index_rows_buttons_and_control() -> None:
    rows = [IndexRow("tm", "task", 2), IndexRow("job1", "job", 1), IndexRow("late", "task", None)]
    plain = parse(index_display("P", rows))
    bound = {pv for _, pv in bindings(plain)}
    for pv in ("PLUGINS", "RUNNING", "FAILED", "HEALTH", "UPTIME"):
        assert f"P:IOCHOST:{pv}" in bound
    assert {"P:IOCHOST:ROW002:STATE", "P:IOCHOST:ROW002:KIND", "P:IOCHOST:ROW001:STATE", "P:TM:STATUS",
            "P:TM:MESSAGE", "P:JOB1:STATUS", "P:LATE:STATUS", "P:LATE:MESSAGE"} <= bound
    assert not any(pv.startswith("P:IOCHOST:ROW") and "LATE" in pv for pv in bound)
    assert not any(pv.endswith((":START", ":STOP", ":RESTART", ":CONTROL_MSG")) for pv in bound)
    assert sorted(opened_files(plain)) == ["job1.bob", "late.bob", "tm.bob"]  # relative names
    assert {"tm", "job1", "late (task)"} <= texts(plain)

    control = parse(index_display("P", rows, control=True))
    assert "P:IOCHOST:CONTROL_MSG" in {pv for _, pv in bindings(control)}
    actions = write_actions(control)
    for name in ("tm", "job1", "late"):
        assert {(f"P:IOCHOST:{verb}", name) for verb in ("START", "STOP", "RESTART")} <= set(actions)
    # The longest name, written whole to a PV that holds it: a long string (a char array, to
    # which Phoebus's CA client writes a string's characters and a NUL; QSRV serves it over
    # PVA as a string), by its plain name (a waveform has no `.VAL$`).
    longest = "n" * PLUGIN_NAME_LENGTH
    inputs = system_config(Settings(epics_control=True))["pvs"]["inputs"]
    long_rows = parse(index_display("P", [IndexRow(longest, "task", 1), IndexRow(longest[:-1], "task", 2)],
                                    control=True))
    for verb in ("START", "STOP", "RESTART"):
        written = [value for pv, value in write_actions(long_rows) if pv == f"P:IOCHOST:{verb}"]
        assert sorted(written) == [longest[:-1], longest]
        assert inputs[verb]["type"] == "string" and inputs[verb]["length"] > PLUGIN_NAME_LENGTH
    # the row layout: names 200 wide, cells 120, nothing squeezed to nothing
    labels = [w for w in control.iter("widget") if w.findtext("text") == "job1"]
    assert labels and int(labels[0].findtext("width") or 0) == 200
    cells = [w for w in control.iter("widget") if w.findtext("pv_name") == "P:TM:STATUS"]
    assert cells and int(cells[0].findtext("width") or 0) == 120


def test_display_files_write_atomically_once_and_prune(tmp_path: Path) -> None:
    files = DisplayFiles(tmp_path / "displays")
    assert files.write("a.bob", b"<display/>") is True
    assert files.write("a.bob", b"<display/>") is False  # same bytes: untouched
    assert DisplayFiles(tmp_path / "displays").write("a.bob", b"<display/>") is False  # as a restart finds it
    assert files.write("a.bob", b"<display version='2'/>") is True
    files.write("b.bob", b"x")
    files.write("index.bob", b"i")
    (tmp_path / "displays" / ".c.bob.123.tmp").write_bytes(b"half")
    assert sorted(files.prune({"a.bob"})) == [".c.bob.123.tmp", "b.bob"]
    assert sorted(p.name for p in (tmp_path / "displays").iterdir()) == ["a.bob", "index.bob"]
    assert (tmp_path / "displays" / "a.bob").stat().st_mode & 0o044 == 0o044  # readable by a web server
    files.remove("a.bob")
    assert not (tmp_path / "displays" / "a.bob").exists()


# -- iochost display -------------------------------------------------------------------------
def iochost(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "iochost", *args], capture_output=True, timeout=120)


@pytest.mark.slow
def test_cli_writes_a_plugin_repositorys_display(tmp_path: Path) -> None:
    out = tmp_path / "panels" / "shutter.bob"
    done = iochost("display", str(EXAMPLES / "beam-shutter"), "-o", str(out), "--name", "shutter",
                   "--prefix", "BL1")
    assert done.returncode == 0, done.stderr.decode()
    root = parse(out.read_bytes())
    assert ("BL1:SHUTTER:RUN", "1") in write_actions(root)  # the kind and mode came from validation
    check_kinds(root, "BL1:SHUTTER", {"COMMAND", "ENABLE", "RUN"}, {"STATE", "OPERATIONS", "LAST_ACTION"})
    to_stdout = iochost("display", str(EXAMPLES / "beam-shutter"), "--name", "shutter", "--prefix", "BL1")
    assert to_stdout.returncode == 0 and to_stdout.stdout == out.read_bytes()


@pytest.mark.slow
def test_cli_refuses_an_invalid_plugin_with_the_validate_report(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("pvs:\n  inputs:\n    X: {type: flot}\n")
    (tmp_path / "plugin.py").write_text("from iochost import TaskBase\n\nclass P(TaskBase):\n    pass\n")
    shown = iochost("display", str(tmp_path), "-o", str(tmp_path / "out.bob"))
    validated = iochost("validate", str(tmp_path))
    assert shown.returncode == 1 and validated.returncode == 1
    assert shown.stderr == validated.stdout and b"flot" in shown.stderr
    assert shown.stdout == b"" and not (tmp_path / "out.bob").exists()


# -- on a running daemon ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """`serve --examples --epics-control`, started over a displays folder holding a stale file."""
    data = tmp_path_factory.mktemp("displays") / "data"
    (data / "displays").mkdir(parents=True)
    (data / "displays" / "gone-plugin.bob").write_text("<display/>")
    daemon = Daemon(data, "--examples", str(EXAMPLES), "--epics-control", "--upgrade-probation", "0.5",
                    "--prefix", PREFIX)
    with daemon.serving() as d:
        with d.client() as api:
            wait_until(lambda: api.get("/health").json()["plugins"]["running"] == len(EXAMPLE_KINDS),
                       what="examples running")
        yield d


def displays(daemon: Daemon) -> Path:
    return daemon.data_dir / "displays"


def index_names(daemon: Daemon) -> set[str]:
    """The plugins the index file opens a display of."""
    root = parse((displays(daemon) / "index.bob").read_bytes())
    return {f.removesuffix(".bob") for f in opened_files(root)}


@pytest.mark.slow
def test_daemon_writes_displays_and_serves_them(served: Daemon) -> None:
    wait_until(lambda: index_names(served) == set(EXAMPLE_KINDS), what="index.bob listing the examples")
    for name in index_names(served):  # what the index opens is there
        assert (displays(served) / f"{name}.bob").is_file(), name
    assert sorted(p.name for p in displays(served).iterdir()) == sorted(
        ["index.bob"] + [f"{name}.bob" for name in EXAMPLE_KINDS])  # the stale file is gone
    with served.client() as api:
        for name in EXAMPLE_KINDS:
            response = api.get(f"/plugins/{name}/display.bob")
            assert response.status_code == 200 and response.headers["content-type"] == "application/xml"
            assert response.content == (displays(served) / f"{name}.bob").read_bytes()
        index = api.get("/displays/index.bob")
        assert index.status_code == 200 and index.headers["content-type"] == "application/xml"
        assert index.content == (displays(served) / "index.bob").read_bytes()
        missing = api.get("/plugins/no-such-plugin/display.bob")
        assert missing.status_code == 404 and missing.json()["code"] == "PLUGIN_NOT_FOUND"
        beside = api.get("/displays/no-such-plugin.bob")
        assert beside.status_code == 404 and beside.json() == missing.json()


def test_index_buttons_open_their_displays_from_the_index_url_and_the_folder(served: Daemon) -> None:
    """`phoebus -resource <index URL>` resolves each Open button's file against that URL;
    the same relative names are the files beside index.bob in DATA_DIR/displays/."""
    wait_until(lambda: index_names(served) == set(EXAMPLE_KINDS), what="index.bob listing the examples")
    index_url = f"{served.url}/api/v1/displays/index.bob"
    with httpx.Client(timeout=30) as http:
        index = http.get(index_url)
        assert index.status_code == 200, index.text
        files = opened_files(parse(index.content))
        assert sorted(f.removesuffix(".bob") for f in files) == sorted(EXAMPLE_KINDS)
        for file in files:
            url = urljoin(index_url, file)
            assert url == f"{served.url}/api/v1/displays/{file}"
            panel = http.get(url)
            assert panel.status_code == 200 and panel.headers["content-type"] == "application/xml", url
            name = file.removesuffix(".bob")
            assert name in (parse(panel.content).findtext("widget[name='Title']/text") or "")
            assert panel.content == http.get(f"{served.url}/api/v1/plugins/{name}/display.bob").content
            assert (displays(served) / file).read_bytes() == panel.content  # the folder: same name, same bytes


def test_every_widget_is_bound_to_a_live_pv_of_the_right_kind(served: Daemon, ca: Any) -> None:
    wait_until(lambda: index_names(served) == set(EXAMPLE_KINDS), what="index.bob listing the examples")
    files = {path.name: parse(path.read_bytes()) for path in displays(served).glob("*.bob")}
    pvs = sorted({pv for root in files.values() for _, pv in bindings(root)})
    assert any(":IOCHOST:ROW" in pv for pv in pvs) and any(pv.endswith(":IOCHOST:START") for pv in pvs)
    answers = wait_for(lambda: (a := ca.caget(pvs, timeout=5, throw=False)) and all(x.ok for x in a) and a,
                       timeout=30, what="every widget's PV to answer over CA")
    assert len(answers) == len(pvs)
    with served.client() as api:
        for record in api.get("/plugins").json()["plugins"]:
            name, prefix = record["name"], record["pv_prefix"]
            root = files[f"{name}.bob"]
            config = load_config(EXAMPLES / name)
            shorts = {pv.removeprefix(prefix + ":") for pv in record["pvs"]}
            wired = {short for short, pv in config.pvs.inputs.items() if pv.wired}
            writes = set(config.pvs.inputs) - wired | ({"ENABLE", "RUN", "CLEAR", "RESET"} & shorts)
            reads = shorts - writes
            check_kinds(root, prefix, writes, reads)
    index = files["index.bob"]
    for name in EXAMPLE_KINDS:  # START / STOP / RESTART per row, at the daemon's control PVs
        verbs = {(f"{PREFIX}:IOCHOST:{verb}", name) for verb in ("START", "STOP", "RESTART")}
        assert verbs <= set(write_actions(index))
    state_pvs = [pv for pv in pvs if ":IOCHOST:ROW" in pv and pv.endswith(":STATE")]
    states = ca.caget(state_pvs, datatype=ca.DBR_STRING, timeout=5)
    assert len(state_pvs) == len(EXAMPLE_KINDS), state_pvs
    assert set(states) == {"running"}, dict(zip(state_pvs, states, strict=True))


def test_add_and_delete_keep_the_files_in_step(served: Daemon) -> None:
    with served.client() as api:
        response = api.post("/plugins", json={"name": "second-shutter",
                                              "local_path": str(EXAMPLES / "beam-shutter")})
        assert response.status_code == 201, response.text
        wait_until(lambda: (displays(served) / "second-shutter.bob").exists()
                   and "second-shutter" in index_names(served), what="the new plugin's display and row")
        root = parse((displays(served) / "second-shutter.bob").read_bytes())
        assert (f"{PREFIX}:SECOND-SHUTTER:RUN", "1") in write_actions(root)
        # the index is rendered again only when its rows change, or when its file is gone
        (displays(served) / "index.bob").unlink()
        assert api.post("/plugins/second-shutter/restart").status_code == 200
        wait_until(lambda: (displays(served) / "index.bob").exists() and "second-shutter" in index_names(served),
                   what="index.bob written again after a restart found it gone")
        delete(api, "second-shutter")
        wait_until(lambda: not (displays(served) / "second-shutter.bob").exists()
                   and "second-shutter" not in index_names(served), what="the file and the row to go")
        assert api.get("/plugins/second-shutter/display.bob").status_code == 404
        assert index_names(served) == set(EXAMPLE_KINDS)


UPGRADED_CODE = """\
    from iochost import TaskBase


    class Gauge(TaskBase):
        def initialize(self):
            pass

        def execute(self):
            pass

        def cleanup(self):
            pass
"""
UPGRADED_CONFIG = """\
    pvs:
      outputs:
        {pv}: {{type: float, description: "{label}"}}
"""


@pytest.mark.slow
def test_upgrade_rewrites_the_display(served: Daemon, tmp_path: Path) -> None:
    repo = Repo(tmp_path / "gauge")
    repo.write({"gauge.py": UPGRADED_CODE, "config.yaml": UPGRADED_CONFIG.format(pv="OLD", label="Old reading")})
    repo.commit("v1")
    path = displays(served) / "gauge.bob"
    with served.client() as api:
        add(api, "gauge", repo)
        wait_until(lambda: path.exists() and f"{PREFIX}:GAUGE:OLD".encode() in path.read_bytes(),
                   what="gauge.bob at v1")
        repo.write({"config.yaml": UPGRADED_CONFIG.format(pv="NEW", label="New reading")})
        commit = repo.commit("v2")
        response = api.post("/plugins/gauge/upgrade", json={"commit": commit})
        assert response.status_code == 200, response.text
        wait_until(lambda: f"{PREFIX}:GAUGE:NEW".encode() in path.read_bytes(), what="gauge.bob at v2")
        root = parse(path.read_bytes())
        check_kinds(root, f"{PREFIX}:GAUGE", {"ENABLE"}, {"NEW", "STATUS"})
        assert f"{PREFIX}:GAUGE:OLD" not in {pv for _, pv in bindings(root)}
        assert api.get("/plugins/gauge/display.bob").content == path.read_bytes()
        delete(api, "gauge")


@pytest.mark.slow
def test_the_example_reading_over_its_high_limit_is_minor_to_a_ca_client(served: Daemon, ca: Any) -> None:
    """The Quick start's temperature monitor: an operator raises SETPOINT past the HIGH
    limit of READING (75 degC); READING shows MINOR (HIGH) and the bool ALARM MAJOR."""
    prefix = f"{PREFIX}:TEMPERATURE-MONITOR"
    ca.caput(f"{prefix}:SETPOINT", 82.0, wait=True, timeout=10)
    try:
        reading = wait_for(lambda: (r := ca.caget(f"{prefix}:READING", format=ca.FORMAT_TIME, timeout=5))
                           and r > 76 and r, timeout=30, interval=0.5, what="READING above 75 degC")
        assert (reading.severity, reading.status) == (1, 4), reading  # MINOR, HIGH
        alarm = wait_for(lambda: (a := ca.caget(f"{prefix}:ALARM", format=ca.FORMAT_TIME, timeout=5))
                         and a == 1 and a, timeout=10, what="ALARM set")
        assert alarm.severity == 2, alarm  # alarm_on: MAJOR
    finally:
        ca.caput(f"{prefix}:SETPOINT", 50.0, wait=True, timeout=10)
