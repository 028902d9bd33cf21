"""iocmng 2.7.9's QUICKSTART, HOWTO and MANUAL, as an iocmng user follows them, under iochost.

Those documents are in iocmng's git repository only (not in the sdist), so the project holds
fixtures of its own that use every form, key, import and command they show:
tests/fixtures/iocmng-docs/<doc>-<section>/ (each file names the section it covers;
INVENTORY.md there lists every code block of the three documents and where it is covered).
Each fixture is validated, then run in a real soft IOC (``iochost run``, with iocmng-run's flags
where the document runs it so) or added to a real daemon over REST, against a standalone device
IOC, and its PVs are read and written over CA. The documents' curl lines are sent as the same
HTTP requests with httpx.

Where a document and iocmng 2.7.9 itself disagree, the test asserts what iocmng 2.7.9 does
(measured by running it: bench/iocmng_compat.py, /tmp runs noted in the comments) and says so.

Here: the fixtures validated, QUICKSTART, HOWTO 01-06, 15 and MANUAL 17; HOWTO 07-10, 16 and
the MANUAL's sections are in test_iocmng_docs_manual.py, the REST and startup parts in
test_iocmng_docs_rest.py; both use the helpers here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import DAEMON_CA_PORTS, IOC_CA_PORT, Processes, wait_for
from iochost.discovery.holders import port_taken
from test_declarative import _ioc

DOCS = Path(__file__).parent / "fixtures" / "iocmng-docs"
FIXTURES = sorted(p.name for p in DOCS.iterdir() if p.is_dir())
# The device PVs the fixtures link to (tests/fixtures/device_ioc.py specs): one device IOC for
# the module, each fixture with PVs of its own.
DEVICE_PVS = [
    "PVC_SRC", "PVC_DST", "PVC_HB", "IL_HEAT", "IL_PRESS", "IL_FLOW", "W_POLL", "W_QUICK", "W_MON",
    "RB_SIG", "PS_V", "PS_I", "BUSY=int", "RF=int", "CHILLER=int", "AX_A=int", "AX_B=int", "AX_C=int",
    "GATE=int", "NOISE", "FSIG", "PROBE", "API_SRC", "API_FWD=int", "API_PUSH=int", "R_TEMP", "R_PRESS",
    "HEATER", "LT_LEVEL", "LV_CUR", "LB_SIG", "LS_LEVEL",
]
# Fixtures whose validation must carry a warning: what iocmng 2.7.9 accepts and ignores
# (MANUAL §5's poll_rate on a monitor link), and a function only initialize() registers (HOWTO §10).
WARNED = {"manual-05-complete", "howto-10-custom-functions"}


# The device's PV prefix, as the fixtures write it. A module that uses the device PVs another
# module uses sets a DEV of its own: the test process's CA client keeps the channels of every
# name it has used, and finds a name again on a new IOC only after libca's search back-off, so
# two modules that xdist runs one after the other in one process must not reuse the names.
DEV = "DOCDEV"


@pytest.fixture(scope="module")
def device(request: pytest.FixtureRequest) -> Iterator[None]:
    """<DEV>:<name> for every DEVICE_PVS entry, on the lone IOCs' CA port, for the module
    (``DEV`` of the requesting module)."""
    procs = Processes()
    try:
        _ioc(procs, {**os.environ}, IOC_CA_PORT, getattr(request.module, "DEV", DEV), *DEVICE_PVS)
        yield
    finally:
        procs.stop_all()


def copy_fixture(fixture: str, tmp_path: Path, dev: str = DEV) -> Path:
    """A copy of ``fixture`` in ``tmp_path``, its device PVs under ``dev``."""
    copy = Path(shutil.copytree(DOCS / fixture, tmp_path / fixture))
    if dev != DEV:
        for file in copy.rglob("*"):
            if file.is_file() and file.suffix in (".py", ".yaml", ".yml"):
                file.write_text(file.read_text().replace(f"{DEV}:", f"{dev}:"))
    return copy


def start_run(processes: Processes, plugin: Path, argv: list[str], env: dict[str, str] | None = None,
              ) -> subprocess.Popen[bytes]:
    """``iochost run`` + ``argv`` from the plugin's directory (as a user runs iocmng-run), on a
    searched CA port no daemon holds (the device IOC has the lone IOCs' port)."""
    port = next(p for p in DAEMON_CA_PORTS if not port_taken("127.0.0.1", p))
    log = open(plugin.parent / f"{plugin.name}-run.log", "wb")
    return processes.start([sys.executable, "-m", "iochost", "run", *argv], cwd=plugin,
                           env={**os.environ, "EPICS_CAS_SERVER_PORT": str(port), **(env or {})},
                           stdout=log, stderr=subprocess.STDOUT)


def serving(ca: Any, proc: subprocess.Popen[bytes], plugin: Path, pv: str, timeout: float = 60) -> None:
    """Wait until ``pv`` answers over CA; the run's log if the process ends first."""
    log = plugin.parent / f"{plugin.name}-run.log"

    def up() -> bool:
        assert proc.poll() is None, f"iochost run exited {proc.returncode}:\n{log.read_text()[-4000:]}"
        ca.caget(pv, timeout=1)
        return True

    wait_for(up, timeout=timeout, what=f"{pv} served")


def run_fixture(fixture: str, tmp_path: Path, processes: Processes, ca: Any, prefix: str,
                env: dict[str, str] | None = None) -> Path:
    """The fixture under ``iochost run DIR`` (iochost's own form) as ``prefix``:X; returns its copy."""
    plugin = copy_fixture(fixture, tmp_path)
    group, name = prefix.split(":")
    proc = start_run(processes, plugin, [str(plugin), "--prefix", group, "--name", name], env)
    serving(ca, proc, plugin, f"{prefix}:STATUS")
    return plugin


def until(ca: Any, pv: str, expected: Any, timeout: float = 20) -> None:
    """Wait for ``pv`` to read ``expected`` (floats compared approximately)."""
    def check() -> bool:
        value = ca.caget(pv, timeout=2)
        if isinstance(expected, float):
            return value == pytest.approx(expected, abs=1e-6)
        if isinstance(expected, str):
            return str(value) == expected
        return value == expected

    wait_for(check, timeout=timeout, what=f"{pv} == {expected!r} (now {_read(ca, pv)!r})")


def _read(ca: Any, pv: str) -> Any:
    try:
        return ca.caget(pv, timeout=2)
    except Exception as exc:  # noqa: BLE001 - only for the failure message
        return exc


def put(ca: Any, pv: str, value: Any) -> None:
    ca.caput(pv, value, wait=True, timeout=5)


# -- every fixture validates ---------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("fixture", FIXTURES)
def test_fixture_validates(fixture: str, tmp_path: Path) -> None:
    """``iochost validate`` passes each fixture as written; what iocmng accepts but ignores
    passes with a warning naming it (the issue's rule: no refusal, a word at validation)."""
    plugin_dir = str(copy_fixture(fixture, tmp_path))
    report = subprocess.run([sys.executable, "-m", "iochost", "validate", "--json", plugin_dir],
                            capture_output=True, text=True)
    assert report.returncode == 0, report.stdout + report.stderr
    result = json.loads(report.stdout)
    assert result["issues"] == []
    if fixture in WARNED:
        assert result["warnings"], f"{fixture}: iocmng ignores part of it; validation should say which"


def test_manual_11_list_of_outputs_builds_them(tmp_path: Path) -> None:
    """MANUAL §11 writes outputs as a list of entries with name:. iochost builds those outputs,
    as the Manual describes; iocmng 2.7.9 drops a list section without a word (a deliberate
    difference: the documented form works instead of silently serving no outputs)."""
    report = subprocess.run([sys.executable, "-m", "iochost", "validate", "--json", "--prefix", "DOC", "--name",
                             "list", str(copy_fixture("manual-11-latch-list-form", tmp_path))],
                            capture_output=True, text=True)
    assert report.returncode == 0, report.stdout + report.stderr
    pvs = json.loads(report.stdout)["plugin"]["pvs"]
    assert {"DOC:LIST:TRIPPED", "DOC:LIST:HEALTHY", "DOC:LIST:SWING"} <= set(pvs)


def test_inventory_names_every_fixture() -> None:
    """INVENTORY.md (every code block of the three documents, and what covers it) names each
    fixture directory, and each one it names exists."""
    named = set(re.findall(r"`((?:quickstart|howto|manual)-[a-z0-9-]+)", (DOCS / "INVENTORY.md").read_text()))
    assert named == set(FIXTURES)


# -- QUICKSTART ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_quickstart_first_task_with_iocmng_run_flags(tmp_path: Path, processes: Processes, ca: Any) -> None:
    """QUICKSTART "Creating Your First Task", step 3: iocmng-run's long flags (--module,
    --class-name, --config, --prefix, --name) given to ``iochost run``. iocmng-run 2.7.9 takes
    --prefix as the whole PV prefix (measured: ``--prefix MY:IOC --name my-task`` serves
    MY:IOC:INPUT), so that is asserted, though QUICKSTART's caput lines name MY:IOC:MY-TASK:INPUT."""
    plugin = copy_fixture("quickstart-first-task", tmp_path)
    proc = start_run(processes, plugin, ["--module", "doubler_task", "--class-name", "DoublerTask",
                                         "--config", "config.yaml", "--prefix", "DOCQ:IOC", "--name", "my-task"])
    serving(ca, proc, plugin, "DOCQ:IOC:SAMPLE")
    put(ca, "DOCQ:IOC:SAMPLE", 5.0)
    until(ca, "DOCQ:IOC:DOUBLED", 10.0)
    until(ca, "DOCQ:IOC:LAST_WRITE", 5.0)  # handle_pv_write saw the operator's write
    first = ca.caget("DOCQ:IOC:TICKS")
    wait_for(lambda: ca.caget("DOCQ:IOC:TICKS") > first, timeout=10, what="the counter going on")
    until(ca, "DOCQ:IOC:MEAN", 5.0)  # window of the last window_len samples, all 5 now
    put(ca, "DOCQ:IOC:ENABLE", 0)  # "Disable a task" / "Re-enable"
    put(ca, "DOCQ:IOC:SAMPLE", 7.0)
    put(ca, "DOCQ:IOC:ENABLE", 1)
    until(ca, "DOCQ:IOC:DOUBLED", 14.0)


@pytest.mark.slow
def test_quickstart_ophyd_create_device(tmp_path: Path, processes: Processes, ca: Any) -> None:
    """QUICKSTART "Using Ophyd Devices", HOWTO §14, MANUAL §19: create_device() gives the
    factory's class (the TML and DO records are absent here, so None, as iocmng gives), caches by
    name (the prefix's last segment when no name is given), and the sim motor moves."""
    run_fixture("quickstart-ophyd", tmp_path, processes, ca, "DOCOP:STAGE")
    until(ca, "DOCOP:STAGE:KINDS", "OphydMotorSim OphydAsynMotor None None")
    until(ca, "DOCOP:STAGE:CACHED", 1)
    until(ca, "DOCOP:STAGE:DEVICES", "AXIS7 AXIS8 STAGE")
    put(ca, "DOCOP:STAGE:TARGET", 3.0)
    put(ca, "DOCOP:STAGE:GO", 1)
    until(ca, "DOCOP:STAGE:POSITION", 3.0)


@pytest.mark.slow
def test_quickstart_beamline_config_and_devices(tmp_path: Path, processes: Processes, ca: Any) -> None:
    """QUICKSTART "Accessing Beamline Configuration", "Checking Available Devices", "Device
    Types from values.yaml": the values.yaml given as iocmng's IOCMNG_BEAMLINE_CONFIG; an IOC
    with a devices: list gives one device per entry. QUICKSTART names those <ioc>_<device>;
    iocmng 2.7.9 (iocmng/ophyd/factory.py) uses the device's own name and adds the IOC's only
    when the name is taken, as iochost does: that is asserted."""
    plugin = copy_fixture("quickstart-devices", tmp_path)
    proc = start_run(processes, plugin, [str(plugin), "--prefix", "DOCBL", "--name", "inv"],
                     env={"IOCMNG_BEAMLINE_CONFIG": str(plugin / "beamline-values.yaml")})
    serving(ca, proc, plugin, "DOCBL:INV:STATUS")
    until(ca, "DOCBL:INV:BEAMLINE", "docline")
    until(ca, "DOCBL:INV:IOC_COUNT", 2)
    until(ca, "DOCBL:INV:KNOWN", "BPM01 BPM02 doc-table")
    until(ca, "DOCBL:INV:TABLE", "OphydMotorSim")
    until(ca, "DOCBL:INV:MISSING", 1)
    until(ca, "DOCBL:INV:POSITION", 0.0)


@pytest.mark.slow
def test_howto_15_pv_client_from_the_package(tmp_path: Path, processes: Processes, ca: Any, device: None) -> None:
    """QUICKSTART "Reading/Writing External PVs", HOWTO §15: get, put, monitor(callback=),
    unmonitor, with ``from iocmng import TaskBase, pv_client``."""
    put(ca, "DOCDEV:PVC_SRC", 4.0)
    run_fixture("howto-15-pv-client", tmp_path, processes, ca, "DOCPV:RELAY")
    until(ca, "DOCPV:RELAY:SEEN", 4.0)
    until(ca, "DOCDEV:PVC_DST", 5.0)
    before = ca.caget("DOCPV:RELAY:BEATS")
    for beat in (1, 2, 3):  # one at a time: CA may merge updates that come faster than they are sent on
        put(ca, "DOCDEV:PVC_HB", beat + before)
        wait_for(lambda: ca.caget("DOCPV:RELAY:BEATS") >= before + beat, timeout=15, what=f"heartbeat {beat} seen")


@pytest.mark.slow
def test_manual_17_pv_client_api(tmp_path: Path, processes: Processes, ca: Any, device: None) -> None:
    """MANUAL §17: init(pva=False), get_provider() "ca", active_monitors() {key: pv}, a named
    monitor's updates, unmonitor() of one; unmonitor_all() and close() in cleanup()."""
    put(ca, "DOCDEV:PVC_SRC", 1.5)
    run_fixture("manual-17-pv-client", tmp_path, processes, ca, "DOCPV:API")
    until(ca, "DOCPV:API:PROVIDER", "ca")
    until(ca, "DOCPV:API:RESULT", 1.5)
    until(ca, "DOCDEV:PVC_DST", 15.0)
    until(ca, "DOCPV:API:WATCHED", "DOCDEV:PVC_HB,DOCDEV:PVC_SRC")
    start = ca.caget("DOCPV:API:UPDATES")
    put(ca, "DOCDEV:PVC_HB", 100.0 + start)
    wait_for(lambda: ca.caget("DOCPV:API:UPDATES") > start, timeout=15, what="the named monitor's update")
    put(ca, "DOCPV:API:DROP_SPARE", 1)
    until(ca, "DOCPV:API:WATCHED", "DOCDEV:PVC_HB")


# -- HOWTO ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_howto_01_monitor_with_its_run_command(tmp_path: Path, processes: Processes, ca: Any) -> None:
    """HOWTO §1's "Run": ``-m`` and no --class-name (the class is found), --prefix as the whole
    prefix (iocmng-run 2.7.9's naming)."""
    plugin = copy_fixture("howto-01-monitor", tmp_path)
    proc = start_run(processes, plugin, ["-m", "gauge_monitor", "--config", "config.yaml",
                                         "--prefix", "DOCH1:IOC", "--name", "monitor"])
    serving(ca, proc, plugin, "DOCH1:IOC:LEVEL")
    assert ca.caget("DOCH1:IOC:LEVEL", format=ca.FORMAT_CTRL).units == "V"
    put(ca, "DOCH1:IOC:LEVEL", 30.0)
    until(ca, "DOCH1:IOC:SCALED", 45.0)
    until(ca, "DOCH1:IOC:HIGH", 1)
    put(ca, "DOCH1:IOC:LEVEL", 10.0)
    until(ca, "DOCH1:IOC:HIGH", 0)


@pytest.mark.slow
def test_howto_02_and_13_interlock_with_pva_false_and_log_level(tmp_path: Path, processes: Processes, ca: Any,
                                                                device: None) -> None:
    """HOWTO §2's interlock, run as §13 runs it (``--pva false --log-level DEBUG``): poll links,
    rule_defaults for a bool and a string, message_pv set to "<time> - <message>" by the rule
    that fires. (§13's caget lines name TEST:IOC:MY-INTERLOCK:STATUS; iocmng-run 2.7.9 serves
    TEST:IOC:STATUS, asserted here.)"""
    for pv, value in (("IL_HEAT", 20.0), ("IL_PRESS", 1.0), ("IL_FLOW", 0.0)):
        put(ca, f"DOCDEV:{pv}", value)
    plugin = copy_fixture("howto-02-interlock", tmp_path)
    proc = start_run(processes, plugin, ["-m", "coolant_interlock", "--config", "config.yaml", "--prefix",
                                         "DOCH2:IOC", "--name", "my-interlock", "--pva", "false",
                                         "--log-level", "DEBUG"])
    serving(ca, proc, plugin, "DOCH2:IOC:STATUS")
    until(ca, "DOCH2:IOC:TRIP", 1)  # no flow
    wait_for(lambda: ca.caget("DOCH2:IOC:NOTE").endswith(" - no coolant"), timeout=10, what="DRY's message")
    put(ca, "DOCDEV:IL_FLOW", 1.0)
    until(ca, "DOCH2:IOC:TRIP", 0)
    until(ca, "DOCH2:IOC:NOTE", "OK")  # rule_defaults
    put(ca, "DOCDEV:IL_HEAT", 90.0)
    until(ca, "DOCH2:IOC:TRIP", 1)
    wait_for(lambda: ca.caget("DOCH2:IOC:NOTE").endswith(" - too hot"), timeout=10, what="HOT's message")


@pytest.mark.slow
def test_howto_03_wiring_options(tmp_path: Path, processes: Processes, ca: Any, device: None) -> None:
    """HOWTO §3: a polled link, poll_rate, a monitor link with trigger calling
    on_input_changed once per change, a rule with a flow-style outputs mapping."""
    put(ca, "DOCDEV:W_POLL", 3.0)
    put(ca, "DOCDEV:W_QUICK", 0.0)
    run_fixture("howto-03-wiring", tmp_path, processes, ca, "DOCH3:WIRE")
    until(ca, "DOCH3:WIRE:polled", 3.0)
    until(ca, "DOCH3:WIRE:low", 1)
    put(ca, "DOCDEV:W_QUICK", 1.0)
    until(ca, "DOCH3:WIRE:low", 0)
    until(ca, "DOCH3:WIRE:quick", 1.0)
    for value in (1.0, 2.0):
        put(ca, "DOCDEV:W_MON", value)
        until(ca, "DOCH3:WIRE:watched", value)
    until(ca, "DOCH3:WIRE:CHANGES", 2)


@pytest.mark.slow
def test_howto_03_link_values_in_python(tmp_path: Path, processes: Processes, ca: Any, device: None) -> None:
    """HOWTO §3 "In Python code", MANUAL §6/§9: self.link_values holds each wired input's
    latest value by name."""
    put(ca, "DOCDEV:LV_CUR", 2.25)
    run_fixture("howto-03-link-values", tmp_path, processes, ca, "DOCH3:LV")
    until(ca, "DOCH3:LV:COPY", 2.25)
    until(ca, "DOCH3:LV:KEYS", "current")
    put(ca, "DOCDEV:LV_CUR", 4.5)
    until(ca, "DOCH3:LV:COPY", 4.5)


@pytest.mark.slow
def test_howto_04_ring_buffer_in_config_and_python(tmp_path: Path, processes: Processes, ca: Any,
                                                   device: None) -> None:
    """HOWTO §4: mean/std over <name>_buf (a config with no parameters: section: iocmng's
    defaults, PVA links)."""
    put(ca, "DOCDEV:RB_SIG", 4.0)
    run_fixture("howto-04-ring-buffer", tmp_path, processes, ca, "DOCH4:RING")
    until(ca, "DOCH4:RING:avg", 4.0, timeout=30)
    until(ca, "DOCH4:RING:spread", 0.0)
    put(ca, "DOCDEV:RB_SIG", 6.0)
    until(ca, "DOCH4:RING:avg", 6.0, timeout=30)


@pytest.mark.slow
def test_howto_04_link_buffers_in_python(tmp_path: Path, processes: Processes, ca: Any, device: None) -> None:
    """HOWTO §4 "In Python code (TaskBase)": self._link_buffers[name] is the input's ring
    buffer (polled each cycle, so it fills with the device's value)."""
    put(ca, "DOCDEV:LB_SIG", 3.0)
    run_fixture("howto-04-link-buffers", tmp_path, processes, ca, "DOCH4:PYBUF")
    until(ca, "DOCH4:PYBUF:PY_LEN", 4)
    until(ca, "DOCH4:PYBUF:PY_MEAN", 3.0)
    put(ca, "DOCDEV:LB_SIG", 5.0)
    until(ca, "DOCH4:PYBUF:PY_MEAN", 5.0)


@pytest.mark.slow
def test_howto_05_transforms_chained(tmp_path: Path, processes: Processes, ca: Any, device: None) -> None:
    """HOWTO §5/§18, MANUAL §13/§14: products, a guarded division, a chain through a parameter
    and clamp(), derivative() and moving_avg() over a buffer."""
    put(ca, "DOCDEV:PS_V", 10.0)
    put(ca, "DOCDEV:PS_I", 2.0)
    run_fixture("howto-05-transforms", tmp_path, processes, ca, "DOCH5:CALC")
    until(ca, "DOCH5:CALC:watts", 20.0)
    until(ca, "DOCH5:CALC:ohms", 5.0)
    until(ca, "DOCH5:CALC:doubled", 40.0)
    until(ca, "DOCH5:CALC:shifted", 35.0)
    until(ca, "DOCH5:CALC:bounded", 35.0)
    until(ca, "DOCH5:CALC:smooth", 10.0)  # the buffer's last two, both 10 after two cycles
    until(ca, "DOCH5:CALC:slope", 0.0)
    put(ca, "DOCDEV:PS_I", 0.0)
    until(ca, "DOCH5:CALC:ohms", 0.0)
    put(ca, "DOCDEV:PS_I", 20.0)
    until(ca, "DOCH5:CALC:bounded", 100.0)  # 400 - 5, clamped


@pytest.mark.slow
def test_howto_06_reactive_task(tmp_path: Path, processes: Processes, ca: Any, device: None) -> None:
    """HOWTO §6: reactive mode; each change of the monitored input calls on_input_changed with
    the old value and runs the rules (no rule_defaults: the output stays set)."""
    put(ca, "DOCDEV:BUSY", 0)
    run_fixture("howto-06-reactive", tmp_path, processes, ca, "DOCH6:REACT")
    put(ca, "DOCDEV:BUSY", 1)
    until(ca, "DOCH6:REACT:guard", 1)
    until(ca, "DOCH6:REACT:PREVIOUS", 0)
    put(ca, "DOCDEV:BUSY", 0)
    until(ca, "DOCH6:REACT:PREVIOUS", 1)
    assert ca.caget("DOCH6:REACT:guard") == 1

