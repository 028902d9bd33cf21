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
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterator

import httpx
import numpy
import pytest

from conftest import DAEMON_CA_PORTS, IOC_CA_PORT, Processes, ca_search, wait_for
from daemon_harness import Daemon, wait_until
from gitrepos import Repo
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


@pytest.fixture(scope="module")
def device() -> Iterator[None]:
    """DOCDEV:<name> for every DEVICE_PVS entry, on the lone IOCs' CA port, for the module."""
    procs = Processes()
    try:
        _ioc(procs, {**os.environ}, IOC_CA_PORT, "DOCDEV", *DEVICE_PVS)
        yield
    finally:
        procs.stop_all()


def copy_fixture(fixture: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(DOCS / fixture, tmp_path / fixture))


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
@pytest.mark.parametrize("fixture", FIXTURES)
def test_fixture_validates(fixture: str, tmp_path: Path) -> None:
    """``iochost validate`` passes each fixture as written; what iocmng accepts but ignores
    passes with a warning naming it (the issue's rule: no refusal, a word at validation)."""
    report = subprocess.run([sys.executable, "-m", "iochost", "validate", "--json", str(copy_fixture(fixture, tmp_path))],
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


def test_howto_03_link_values_in_python(tmp_path: Path, processes: Processes, ca: Any, device: None) -> None:
    """HOWTO §3 "In Python code", MANUAL §6/§9: self.link_values holds each wired input's
    latest value by name."""
    put(ca, "DOCDEV:LV_CUR", 2.25)
    run_fixture("howto-03-link-values", tmp_path, processes, ca, "DOCH3:LV")
    until(ca, "DOCH3:LV:COPY", 2.25)
    until(ca, "DOCH3:LV:KEYS", "current")
    put(ca, "DOCDEV:LV_CUR", 4.5)
    until(ca, "DOCH3:LV:COPY", 4.5)


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


def test_howto_04_link_buffers_in_python(tmp_path: Path, processes: Processes, ca: Any, device: None) -> None:
    """HOWTO §4 "In Python code (TaskBase)": self._link_buffers[name] is the input's ring
    buffer (polled each cycle, so it fills with the device's value)."""
    put(ca, "DOCDEV:LB_SIG", 3.0)
    run_fixture("howto-04-link-buffers", tmp_path, processes, ca, "DOCH4:PYBUF")
    until(ca, "DOCH4:PYBUF:PY_LEN", 4)
    until(ca, "DOCH4:PYBUF:PY_MEAN", 3.0)
    put(ca, "DOCDEV:LB_SIG", 5.0)
    until(ca, "DOCH4:PYBUF:PY_MEAN", 5.0)


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


def test_howto_07_actuator_writes_the_device(tmp_path: Path, processes: Processes, ca: Any, device: None) -> None:
    """HOWTO §7: the rule's actuator writes 0 to the device PV of the wired input rf_on."""
    put(ca, "DOCDEV:RF", 1)
    put(ca, "DOCDEV:CHILLER", 1)
    run_fixture("howto-07-actuators", tmp_path, processes, ca, "DOCH7:RF")
    until(ca, "DOCH7:RF:rf_on", 1)
    assert ca.caget("DOCH7:RF:ACTED") == 0
    put(ca, "DOCDEV:CHILLER", 0)
    until(ca, "DOCDEV:RF", 0)
    until(ca, "DOCH7:RF:ACTED", 0)  # rf_on read back as 0: the condition is gone


def test_howto_08_wired_output_follows_rules(tmp_path: Path, processes: Processes, ca: Any, device: None) -> None:
    """HOWTO §8: any_of() over polled trigger inputs; the wired output's values (its default 1,
    the rule's 0) are forwarded to the device PV."""
    for axis in ("AX_A", "AX_B", "AX_C"):
        put(ca, f"DOCDEV:{axis}", 0)
    put(ca, "DOCDEV:GATE", 5)
    run_fixture("howto-08-motion-interlock", tmp_path, processes, ca, "DOCH8:GATE")
    until(ca, "DOCDEV:GATE", 1)
    put(ca, "DOCDEV:AX_B", 1)
    until(ca, "DOCH8:GATE:IN_MOTION", 1)
    until(ca, "DOCDEV:GATE", 0)
    put(ca, "DOCDEV:AX_B", 0)
    until(ca, "DOCH8:GATE:IN_MOTION", 0)
    until(ca, "DOCDEV:GATE", 1)


def test_howto_09_noise_against_a_parameter(tmp_path: Path, processes: Processes, ca: Any, device: None) -> None:
    """HOWTO §9: rms/std/mean of a buffer, a rule comparing std() with a parameter. The input
    polls each 0.2 s cycle into 25 samples: a new value shares the buffer with the old one for
    24 cycles (std over 0.5 for 2s and 5s mixed from 1 to 24 fives), then fills it."""
    put(ca, "DOCDEV:NOISE", 2.0)
    run_fixture("howto-09-noise", tmp_path, processes, ca, "DOCH9:NOISE")
    until(ca, "DOCH9:NOISE:adc_std", 0.0)
    until(ca, "DOCH9:NOISE:adc_rms", 2.0)
    until(ca, "DOCH9:NOISE:adc_mean", 2.0)
    assert ca.caget("DOCH9:NOISE:noisy") == 0
    put(ca, "DOCDEV:NOISE", 5.0)
    until(ca, "DOCH9:NOISE:noisy", 1)
    until(ca, "DOCH9:NOISE:adc_mean", 5.0, timeout=30)
    until(ca, "DOCH9:NOISE:noisy", 0)


def test_howto_10_registered_functions(tmp_path: Path, processes: Processes, ca: Any, device: None) -> None:
    """HOWTO §10, MANUAL §15: functions registered at import and in initialize() used in
    transforms, inside length()."""
    put(ca, "DOCDEV:FSIG", 0.5)
    run_fixture("howto-10-custom-functions", tmp_path, processes, ca, "DOCH10:FN")
    until(ca, "DOCH10:FN:inside", 4, timeout=30)
    until(ca, "DOCH10:FN:width", 0.0)
    until(ca, "DOCH10:FN:half", 0.25)
    put(ca, "DOCDEV:FSIG", 1.5)
    until(ca, "DOCH10:FN:inside", 0, timeout=30)
    until(ca, "DOCH10:FN:half", 0.75)


def test_howto_16_triggered_task(tmp_path: Path, processes: Processes, ca: Any) -> None:
    """HOWTO §16: RUN=1 calls triggered(), whose set_pv lands. Its set_message() texts do not
    stay: iocmng 2.7.9 itself writes its own MESSAGE after triggered() returns, and after 2 s
    "Ready for trigger" with STATUS INIT (iocmng/base/task.py, _trigger_wrapper), where both
    end up; that is asserted."""
    run_fixture("howto-16-triggered", tmp_path, processes, ca, "DOCH16:CAL")
    put(ca, "DOCH16:CAL:RUN", 1)
    until(ca, "DOCH16:CAL:GAIN", 2.5)
    until(ca, "DOCH16:CAL:MESSAGE", "Ready for trigger")
    until(ca, "DOCH16:CAL:STATUS", 0)  # INIT
    put(ca, "DOCH16:CAL:RUN", 1)
    until(ca, "DOCH16:CAL:GAIN", 5.0)


# -- MANUAL --------------------------------------------------------------------------------------
def test_manual_05_legacy_pvs_key(tmp_path: Path, processes: Processes, ca: Any) -> None:
    """MANUAL §5: ``pvs:`` in place of ``arguments:``."""
    run_fixture("manual-05-legacy-pvs", tmp_path, processes, ca, "DOCM5:OLD")
    until(ca, "DOCM5:OLD:ECHO", 1.25)


def test_manual_06_taskbase_api(tmp_path: Path, processes: Processes, ca: Any, device: None) -> None:
    """MANUAL §6/§9/§12: the aliases, attributes, set_message's 39 characters, set_pv on a
    wired output forwarded, link_put to a wired output's device PV, CONN_INP and CONN_OUT."""
    put(ca, "DOCDEV:API_SRC", 8.0)
    put(ca, "DOCDEV:API_PUSH", 0)
    run_fixture("manual-06-taskbase-api", tmp_path, processes, ca, "DOCM6:TOUR")
    until(ca, "DOCM6:TOUR:IDENT", "TOUR continuous constructed")  # the --name given
    until(ca, "DOCM6:TOUR:PREFIX_SEEN", "DOCM6:TOUR")
    until(ca, "DOCM6:TOUR:DOUBLE_KNOB", 6.0)
    until(ca, "DOCM6:TOUR:READBACK", 6.0)
    until(ca, "DOCM6:TOUR:KNOB_SHADOW", 3.0)
    until(ca, "DOCM6:TOUR:FLAGS", "11 True")
    until(ca, "DOCDEV:API_FWD", 3)
    until(ca, "DOCM6:TOUR:MESSAGE", "a status message that is much longer than forty characters"[:39])
    put(ca, "DOCM6:TOUR:KNOB", 4.0)
    until(ca, "DOCDEV:API_FWD", 4)
    put(ca, "DOCM6:TOUR:PUSH", 1)
    until(ca, "DOCDEV:API_PUSH", 7)
    assert [int(x) for x in numpy.atleast_1d(ca.caget("DOCM6:TOUR:CONN_INP"))] == [1]
    assert [int(x) for x in numpy.atleast_1d(ca.caget("DOCM6:TOUR:CONN_OUT"))] == [1, 1]


def test_manual_10_rules(tmp_path: Path, processes: Processes, ca: Any, device: None) -> None:
    """MANUAL §10: or/and/not, any_of/all_of/count_true, a buffer's mean against a parameter,
    message_pv, actuators on a wired input."""
    for pv, value in (("R_TEMP", 0.0), ("R_PRESS", 0.0), ("HEATER", 3.0)):
        put(ca, f"DOCDEV:{pv}", value)
    run_fixture("manual-10-rules", tmp_path, processes, ca, "DOCM10:RULES")
    until(ca, "DOCM10:RULES:DEAD", 1)
    put(ca, "DOCDEV:R_TEMP", 60.0)
    put(ca, "DOCDEV:R_PRESS", 1.5)
    until(ca, "DOCM10:RULES:DEAD", 0)
    until(ca, "DOCM10:RULES:VOTES", 1)  # 60 > 10, 1.5 > 1, heater 3 > 0
    until(ca, "DOCM10:RULES:MIXED", 0)  # all three non-zero
    put(ca, "DOCDEV:R_PRESS", 3.0)  # OVER: pressure > 2 -> heater actuated to 0
    until(ca, "DOCM10:RULES:ALARM", 1)
    until(ca, "DOCDEV:HEATER", 0.0)
    wait_for(lambda: ca.caget("DOCM10:RULES:NOTE").endswith(" - limit hit"), timeout=10, what="OVER's message")
    until(ca, "DOCM10:RULES:MIXED", 1)  # heater 0 now, and the mean of core_t over 50


def test_manual_11_latch(tmp_path: Path, processes: Processes, ca: Any, device: None) -> None:
    """MANUAL §11: rise (with alarm_on MAJOR), fall, any on a float, the "0->1" alias; CLEAR
    releases them to rule_defaults."""
    put(ca, "DOCDEV:LT_LEVEL", 0.0)
    run_fixture("manual-11-latch", tmp_path, processes, ca, "DOCM11:LATCH")
    until(ca, "DOCM11:LATCH:HEALTHY", 1)
    put(ca, "DOCDEV:LT_LEVEL", 20.0)
    until(ca, "DOCM11:LATCH:TRIPPED", 1)
    put(ca, "DOCDEV:LT_LEVEL", 0.0)
    until(ca, "DOCM11:LATCH:level", 0.0)
    cycles = ca.caget("DOCM11:LATCH:CYCLE_COUNT")
    wait_for(lambda: ca.caget("DOCM11:LATCH:CYCLE_COUNT") > cycles + 2, timeout=10, what="cycles without the rule")
    tripped = ca.caget("DOCM11:LATCH:TRIPPED", format=ca.FORMAT_TIME)
    assert (tripped, tripped.severity) == (1, 2)
    assert ca.caget("DOCM11:LATCH:HEALTHY") == 0 and ca.caget("DOCM11:LATCH:WARNED") == 1
    assert ca.caget("DOCM11:LATCH:PEAK") == pytest.approx(99.5)
    put(ca, "DOCM11:LATCH:CLEAR", 1)
    until(ca, "DOCM11:LATCH:TRIPPED", 0)
    until(ca, "DOCM11:LATCH:HEALTHY", 1)
    until(ca, "DOCM11:LATCH:PEAK", 0.0)
    until(ca, "DOCM11:LATCH:WARNED", 0)


def test_manual_11_latched_outputs_inspected(tmp_path: Path, processes: Processes, ca: Any, device: None) -> None:
    """MANUAL §11 "Inspecting Latch State": self._latched_outputs names the latched outputs
    and is empty again after CLEAR."""
    put(ca, "DOCDEV:LS_LEVEL", 0.0)
    run_fixture("manual-11-latch-state", tmp_path, processes, ca, "DOCM11:SEEN")
    until(ca, "DOCM11:SEEN:LOW_SEEN", 1)
    put(ca, "DOCDEV:LS_LEVEL", 20.0)
    until(ca, "DOCM11:SEEN:LATCHED", "HIGH LOW_SEEN")
    put(ca, "DOCDEV:LS_LEVEL", 0.0)
    until(ca, "DOCM11:SEEN:level", 0.0)
    put(ca, "DOCM11:SEEN:CLEAR", 1)
    until(ca, "DOCM11:SEEN:LATCHED", "")


def test_manual_16_safe_eval_api(tmp_path: Path, processes: Processes, ca: Any) -> None:
    """MANUAL §16 "Python API": the three calls it shows, and attribute access refused."""
    run_fixture("manual-16-safe-eval", tmp_path, processes, ca, "DOCM16:EVAL")
    until(ca, "DOCM16:EVAL:REFUSED", 1)
    assert (ca.caget("DOCM16:EVAL:PLAIN"), ca.caget("DOCM16:EVAL:EXTRA")) == (0, 0)
    put(ca, "DOCM16:EVAL:X", 10.0)
    until(ca, "DOCM16:EVAL:PLAIN", 1)
    until(ca, "DOCM16:EVAL:WITH_FN", 1)  # mean(10, 0) = 5 > 0.5
    until(ca, "DOCM16:EVAL:EXTRA", 1)  # 30 > 8


# -- the REST scripts (HOWTO §11, §12, §20; MANUAL §7, §18) against one real daemon ---------------
@pytest.fixture(scope="module")
def rest_daemon(tmp_path_factory: pytest.TempPathFactory, device: None) -> Iterator[Daemon]:
    """A daemon whose PV gateway may write the device's PVs (iochost's own rule: writes only to
    --pv-gateway-allow patterns; iocmng has no such limit)."""
    root = tmp_path_factory.mktemp("docs-daemon")
    with Daemon(root / "data", "--pv-gateway-allow", "DOCDEV:*").serving() as daemon:
        yield daemon


def curl(daemon: Daemon, command: str) -> httpx.Response:
    """One of the documents' curl lines, sent to ``daemon`` as the same request: method (-X),
    path (the documents' host is localhost:8080), JSON body (-d)."""
    import shlex

    words = shlex.split(command.replace("\\\n", " "))
    method = words[words.index("-X") + 1] if "-X" in words else "GET"
    url = httpx.URL(next(w for w in words if w.startswith("http")))
    body = json.loads(words[words.index("-d") + 1]) if "-d" in words else None
    return httpx.request(method, daemon.url + url.raw_path.decode(), json=body, timeout=120)


def _interlock_repo(root: Path) -> Repo:
    """A repository holding HOWTO §2's interlock fixture at plugins/interlock/ (§12's path)."""
    repo = Repo(root / "beamline-tasks")
    repo.copy_dir(DOCS / "howto-02-interlock", "plugins/interlock")
    repo.commit("interlock")
    return repo


def test_howto_12_and_20_rest_scripts(rest_daemon: Daemon, tmp_path: Path, ca: Any) -> None:
    """HOWTO §12 (add from git with every field it shows, from a local directory, restart,
    remove, list, list by type) and §20 (plugin details, startup metadata, health)."""
    for pv, value in (("IL_HEAT", 20.0), ("IL_PRESS", 1.0), ("IL_FLOW", 1.0)):
        put(ca, f"DOCDEV:{pv}", value)
    repo = _interlock_repo(tmp_path)
    local = copy_fixture("howto-01-monitor", tmp_path)
    body = {"name": "my-interlock", "git_url": repo.url, "path": "plugins/interlock/", "branch": "main",
            "pat": "ghp_not-a-real-token", "auto_start": True, "auto_start_on_boot": True,
            "autostart_order": 5, "parameters": {"interval": 0.5}}
    added = curl(rest_daemon, f"curl -X POST http://localhost:8080/api/v1/plugins -H 'Content-Type: "
                              f"application/json' -d '{json.dumps(body)}'")
    assert added.status_code in (200, 201), added.text
    assert added.json()["ok"] is True and added.json()["message"]
    wait_for(lambda: ca.caget("IOCHT:MY-INTERLOCK:TRIP", timeout=2) == 0, timeout=60, what="the interlock serving")
    local_body = {"name": "my-monitor", "local_path": str(local), "auto_start": True}
    added = curl(rest_daemon, f"curl -X POST http://localhost:8080/api/v1/plugins -d '{json.dumps(local_body)}'")
    assert added.status_code in (200, 201), added.text
    assert added.json()["ok"] is True
    wait_for(lambda: ca.caget("IOCHT:MY-MONITOR:HIGH", timeout=2) == 0, timeout=60, what="the monitor serving")

    listed = curl(rest_daemon, "curl http://localhost:8080/api/v1/plugins").json()
    assert listed["count"] == len(listed["plugins"]) >= 2
    assert {"my-interlock", "my-monitor"} <= {p["name"] for p in listed["plugins"]}
    tasks = curl(rest_daemon, 'curl "http://localhost:8080/api/v1/plugins?type=task"').json()
    assert tasks["count"] >= 2
    details = curl(rest_daemon, "curl http://localhost:8080/api/v1/plugins/my-interlock").json()
    startup = curl(rest_daemon, "curl http://localhost:8080/api/v1/tasks/my-interlock/startup").json()
    expected = {"name": "my-interlock", "plugin_type": "task", "auto_start": True, "auto_start_on_boot": True,
                "autostart_order": 5, "pv_prefix": "IOCHT:MY-INTERLOCK", "mode": "continuous"}
    assert {key: startup.get(key) for key in expected} == expected
    assert startup["start_parameters"]["interval"] == 0.5
    assert set(startup["arguments"]) == {"inputs", "outputs"} and "TRIP" in startup["built_pvs"]
    health = curl(rest_daemon, "curl http://localhost:8080/api/v1/health").json()

    restarted = curl(rest_daemon, "curl -X POST http://localhost:8080/api/v1/plugins/my-interlock/restart")
    assert restarted.status_code == 200, restarted.text
    assert restarted.json()["ok"] is True
    wait_for(lambda: ca.caget("IOCHT:MY-INTERLOCK:TRIP", timeout=2) == 0, timeout=60, what="serving again")
    for name in ("my-interlock", "my-monitor"):
        removed = curl(rest_daemon, f"curl -X DELETE http://localhost:8080/api/v1/plugins/{name}")
        assert removed.status_code == 200 and removed.json()["ok"] is True, removed.text
    wait_until(lambda: not ca_search(["IOCHT:MY-INTERLOCK:TRIP"]), timeout=30, what="its PVs gone")

    # iocmng 2.7.9's fields in the answers taken above (its PluginInfo.to_dict and HealthResponse)
    assert all(p.get("plugin_type") == "task" for p in tasks["plugins"]), tasks
    expected = {"name": "my-interlock", "plugin_type": "task", "class_name": "CoolantInterlock",
                "path": "plugins/interlock/"}
    assert {key: details.get(key) for key in expected} == expected
    assert details.get("running") is True and isinstance(details.get("cycle_count"), int), details
    assert health["status"] and health["version"], health
    assert health.get("tasks_count", 0) >= 2 and isinstance(health.get("jobs_count"), int), health


def test_howto_11_job_over_rest(rest_daemon: Daemon, tmp_path: Path, ca: Any) -> None:
    """HOWTO §11, MANUAL §7/§18: the job added, run through /jobs/{name}/run and
    /plugins/{name}/run. iocmng 2.7.9 answers ``{ok, result: {success, data, message,
    timestamp}}`` (its JobRunResponse); HOWTO's "Response" shows result's fields alone."""
    put(ca, "DOCDEV:PVC_SRC", 2.0)
    job = copy_fixture("howto-11-job", tmp_path)
    with rest_daemon.client() as api:
        response = api.post("/jobs", json={"name": "diagnostics", "local_path": str(job)})
        assert response.status_code in (200, 201) and response.json()["ok"] is True, response.text
        for path in ("/jobs/diagnostics/run", "/plugins/diagnostics/run"):
            ran = curl(rest_daemon, f"curl -X POST http://localhost:8080/api/v1{path}")
            assert ran.status_code == 200, ran.text
            answer = ran.json()
            assert answer["ok"] is True, answer
            result = answer["result"]
            assert result["success"] is True and result["message"] == "checks passed"
            assert result["data"]["device_reachable"] is True and result["data"]["ghost_reachable"] is False
            assert result["data"]["rss_kib"] > 0 and result["timestamp"]
            assert result["data"]["result_fields"] == ["data", "message", "success", "timestamp"]
        assert api.get("/jobs/diagnostics").json()["plugin_type"] == "job"
        assert api.get("/jobs/diagnostics/startup").json()["plugin_type"] == "job"
        assert "diagnostics" in {p["name"] for p in api.get("/jobs").json()["plugins"]}
        assert "diagnostics" not in {p["name"] for p in api.get("/plugins", params={"type": "task"}).json()["plugins"]}
        assert api.delete("/jobs/diagnostics").json()["ok"] is True


def test_manual_05_complete_example_prefix_under_the_daemon(rest_daemon: Daemon, tmp_path: Path, ca: Any) -> None:
    """MANUAL §5's complete config under a daemon: its ``prefix:`` is the plugin's PV segment
    (§21: CONTROLLER_PREFIX:PLUGIN_PREFIX:PV); poll_rate on a monitor link is accepted; the
    rule on an unwired input's actuator fires its outputs, and the actuator (no device PV to
    write, as under iocmng, which logs the failed link_put) leaves the input as it was."""
    put(ca, "DOCDEV:PROBE", 0.0)
    full = copy_fixture("manual-05-complete", tmp_path)
    with rest_daemon.client() as api:
        response = api.post("/tasks", json={"name": "doc-full", "local_path": str(full)})
        assert response.status_code in (200, 201), response.text
        wait_for(lambda: ca.caget("IOCHT:DOC_FULL:DEMAND", timeout=2) == 25.0, timeout=60, what="DOC_FULL serving")
        assert api.get("/tasks/doc-full/startup").json()["plugin_prefix"] == "DOC_FULL"
        for value in (45.0, 50.0, 55.0):
            put(ca, "DOCDEV:PROBE", value)
            until(ca, "IOCHT:DOC_FULL:PROBE", value)
        until(ca, "IOCHT:DOC_FULL:PROBE_AVG", 50.0)
        until(ca, "IOCHT:DOC_FULL:OVER", 1)
        wait_for(lambda: ca.caget("IOCHT:DOC_FULL:NOTE").endswith(" - probe high"), timeout=10, what="message_pv")
        for value in (0.0, 0.0, -1.0):
            put(ca, "DOCDEV:PROBE", value)
        until(ca, "IOCHT:DOC_FULL:PROBE", -1.0)
        until(ca, "IOCHT:DOC_FULL:OVER", 1)
        assert ca.caget("IOCHT:DOC_FULL:DEMAND") == 25.0
        assert api.delete("/tasks/doc-full").json()["ok"] is True


def test_manual_18_pv_gateway_routes(rest_daemon: Daemon, ca: Any) -> None:
    """MANUAL §18 "PV Access", on the paths iocmng 2.7.9 serves (/pvs/..., where the Manual
    writes /pv/...), with iocmng's request and response fields; /devices answers."""
    put(ca, "DOCDEV:PVC_SRC", 6.5)
    with rest_daemon.client() as api:
        assert api.get("/pvs/provider").json()["provider"] in ("pva", "ca")
        got = api.post("/pvs/get", json={"pv_name": "DOCDEV:PVC_SRC", "timeout": 5.0}).json()
        assert (got["ok"], got["pv_name"], got["value"]) == (True, "DOCDEV:PVC_SRC", 6.5)
        written = api.post("/pvs/put", json={"pv_name": "DOCDEV:PVC_DST", "value": 42, "timeout": 5.0}).json()
        assert (written["ok"], written["pv_name"]) == (True, "DOCDEV:PVC_DST")
        until(ca, "DOCDEV:PVC_DST", 42.0)
        started = api.post("/pvs/monitor", json={"pv_name": "DOCDEV:PVC_HB", "name": "doc-hb"}).json()
        assert started["ok"] is True and started["key"] and "message" in started
        monitors = api.get("/pvs/monitors").json()
        assert monitors["monitors"].get(started["key"]) == "DOCDEV:PVC_HB" and monitors["count"] >= 1
        stopped = api.delete(f"/pvs/monitor/{started['key']}").json()
        assert stopped["ok"] is True and stopped["key"] == started["key"]
        assert started["key"] not in api.get("/pvs/monitors").json()["monitors"]
        assert api.get("/devices").status_code == 200


# -- plugins.yaml (HOWTO §17, MANUAL §3) -----------------------------------------------------------
PLUGINS_YAML = """\
# iocmng 2.7.9 HOWTO.md §17 / MANUAL.md §3 "Pre-loading Plugins on Startup", in iochost's words:
# git entries with path, branch, pat, parameters, auto_start_on_boot and autostart_order; local
# entries with and without an order; one that cannot load (its failure must not stop the rest).
plugins:
  - name: zulu-first
    git_url: {url}
    path: plugins/interlock/
    branch: main
    pat: ghp_not-a-real-token
    auto_start: true
    auto_start_on_boot: true
    autostart_order: 1
    parameters:
      interval: 0.5
  - name: alpha-second
    git_url: {url}
    path: plugins/interlock/
    branch: main
    auto_start: true
    auto_start_on_boot: true
    autostart_order: 2
  - name: mike-tenth
    local_path: {local}
    auto_start: true
    autostart_order: 10
  - name: bravo-unordered
    local_path: {local}
    auto_start: true
  - name: broken-one
    local_path: {missing}
    auto_start: true
    autostart_order: 3
"""


def test_howto_17_plugins_yaml_startup(tmp_path: Path, device: None, ca: Any) -> None:
    """HOWTO §17 / MANUAL §3: the file given by iocmng's IOCMNG_PLUGINS_CONFIG (and IOCMNG_PVA
    false, HOWTO §19 "Via environment variable"); every loadable entry runs, the failing one
    does not stop the others, and /tasks/{name}/startup reports the order fields. Start-up order
    itself: autostart_order, then name (zulu-first, alpha-second, mike-tenth)."""
    repo = _interlock_repo(tmp_path)
    local = copy_fixture("howto-01-monitor", tmp_path)
    plugins = tmp_path / "plugins.yaml"
    plugins.write_text(PLUGINS_YAML.format(url=repo.url, local=local, missing=tmp_path / "nowhere"))
    with Daemon(tmp_path / "data", env={"IOCMNG_PLUGINS_CONFIG": str(plugins), "IOCMNG_PVA": "false"}).serving() as d:
        with d.client() as api:
            names = ("zulu-first", "alpha-second", "mike-tenth", "bravo-unordered")

            def all_running() -> bool:
                return all(api.get(f"/plugins/{n}").json().get("state") == "running" for n in names)

            wait_until(all_running, timeout=120, what="the four loadable entries running")
            for name, order, on_boot in (("zulu-first", 1, True), ("alpha-second", 2, True), ("mike-tenth", 10, None)):
                startup = api.get(f"/tasks/{name}/startup").json()
                assert startup["autostart_order"] == order, startup
                if on_boot is not None:
                    assert startup["auto_start_on_boot"] is on_boot
            assert api.get("/tasks/zulu-first/startup").json()["start_parameters"]["interval"] == 0.5
            assert api.get("/pvs/provider").json()["provider"] == "ca"
            assert "nowhere" in d.log()  # the failing entry is logged
        wait_for(lambda: ca.caget("IOCHT:ZULU-FIRST:STATUS", timeout=2) is not None, timeout=30,
                 what="a file-loaded plugin's PVs over CA")
        log = d.log()
        assert all(f"added task {n} (" in log for n in names[:3]), log[-3000:]
        started = sorted(names[:3], key=lambda n: log.find(f"added task {n} ("))
        assert started == ["zulu-first", "alpha-second", "mike-tenth"], textwrap.shorten(log, 2000)
