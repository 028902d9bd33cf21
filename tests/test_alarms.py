"""Alarms, display limits and deadbands end to end: real workers, real CA (libca) and PVA
(pvxs) clients; plus the pure limit check the worker applies to plugin writes of inputs."""

from __future__ import annotations

import os
from typing import Any, Iterator

import pytest

from client_harness import EpicsClient
from conftest import Processes, free_port, wait_for
from iochost.alarms import plugin_alarm, severity_number, status_number
from iochost.config import PVDef
from iochost.contract import messages
from iochost.sdk.runtime import MemoryRuntime
from iochost.worker.limit_alarm import LimitState, limit_alarm
from sample_plugins import make_plugin
from worker_harness import StandaloneWorker

PREFIX = "IOCHALARM"
NO_ALARM, MINOR, MAJOR, INVALID = range(4)
HIHI, HIGH, LOLO, LOW, STATE, SOFT, COMM = 3, 4, 5, 6, 7, 15, 9

# A task driven by one string input: "set NAME VALUE [SEVERITY [STATUS]]",
# "alarm NAME SEVERITY [STATUS]", "raise". Nothing runs on a timer.
DRIVEN_TASK = """
    from iochost import TaskBase

    def parse(text):
        for cast in (int, float):
            try:
                return cast(text)
            except ValueError:
                pass
        return text

    class Driven(TaskBase):
        def initialize(self):
            pass

        def execute(self):
            pass

        def cleanup(self):
            pass

        def on_input(self, name, value):
            if name != "CMD":
                return
            verb, *args = value.split()
            if verb == "set":
                self.set_pv(args[0], parse(args[1]), *args[2:])
            elif verb == "alarm":
                self.set_alarm(*args)
            elif verb == "raise":
                raise RuntimeError("sensor lost")
"""

DRIVEN_CONFIG = """
    parameters:
      interval: 3600
    pvs:
      inputs:
        CMD: {type: string, value: ""}
        SP:
          type: float
          low: 0
          high: 50
          alarm: {high: 5, hihi: 10}
      outputs:
        T:
          type: float
          unit: degC
          low: 0
          high: 100
          alarm:
            lolo: 1
            low: 2
            high: 8
            hihi: 10
            hsv: minor
        N: {type: int, alarm: {lolo: -10, low: 0, high: 10, hihi: 20}}
        FLAG: {type: bool, alarm: {zsv: MINOR, osv: MAJOR}}
        FLAG2: {type: bool, alarm_on: MAJOR}
        STATE: {type: enum, choices: [OK, WARN, FAULT], alarm: {WARN: MINOR, FAULT: MAJOR}}
        DB: {type: float, mdel: 1.0, adel: 5.0}
"""

FAILING_JOB = """
    from iochost import JobBase

    class Failing(JobBase):
        def initialize(self):
            pass

        def execute(self):
            raise RuntimeError("detector not answering")

        def cleanup(self):
            pass
"""


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Both workers of this module, started together (each start costs ~1 s). The job's IOC
    serves CA on a port of its own (on one port a unicast search finds only one IOC), read
    by a client process searching that port; PVA servers share a port fine."""
    root = tmp_path_factory.mktemp("alarms")
    procs = Processes()
    job_port = str(free_port())
    try:
        started: dict[str, Any] = {
            name: StandaloneWorker(procs, root, env=env, name=name,
                                   plugin_dir=str(make_plugin(root, name, code, config)),
                                module_file=f"{name}.py", class_name=cls, prefix=PREFIX)
            for name, code, config, cls, env in (
                ("driven", DRIVEN_TASK, DRIVEN_CONFIG, "Driven", None),
                ("failing", FAILING_JOB, "", "Failing", {"EPICS_CAS_SERVER_PORT": job_port}))
        }
        started["job_ca"] = EpicsClient(procs, root, env={**os.environ, "EPICS_CA_SERVER_PORT": job_port})
        for name in ("driven", "failing"):
            started[name].wait_event(messages.Ready)
            started[name].wait_event(messages.Initialized)
        yield started
    finally:
        procs.stop_all()


PV = f"{PREFIX}:DRIVEN:"


def command(ca: Any, text: str) -> None:
    ca.caput(PV + "CMD", text, wait=True, timeout=5)


def alarm_of(ca: Any, name: str) -> tuple[Any, int, int]:
    value = ca.caget(PV + name, format=ca.FORMAT_TIME, timeout=5)
    return value, value.severity, value.status


def wait_alarm(ca: Any, name: str, severity: int, status: int) -> Any:
    return wait_for(lambda: (a := alarm_of(ca, name))[1:] == (severity, status) and a,
                    what=f"{name} severity {severity} status {status}")


def test_float_output_crosses_each_limit(workers, ca, pva):
    for value, severity, status in ((5, NO_ALARM, 0), (8, MINOR, HIGH), (10, MAJOR, HIHI), (9, MINOR, HIGH),
                                    (2, MINOR, LOW), (0.5, MAJOR, LOLO), (4, NO_ALARM, 0)):
        command(ca, f"set T {value}")
        reading = wait_alarm(ca, "T", severity, status)[0]
        assert reading == pytest.approx(value)
    command(ca, "set T 11")
    wait_alarm(ca, "T", MAJOR, HIHI)
    over_pva = pva.get(PV + "T", timeout=5)
    assert over_pva.alarm.severity == MAJOR and over_pva.value == pytest.approx(11)


def test_limits_are_published_over_ca_and_pva(workers, ca, pva):
    ctrl = ca.caget(PV + "T", format=ca.FORMAT_CTRL, timeout=5)
    limits = (ctrl.lower_alarm_limit, ctrl.lower_warning_limit, ctrl.upper_warning_limit, ctrl.upper_alarm_limit)
    assert limits == (1, 2, 8, 10)
    assert (ctrl.lower_disp_limit, ctrl.upper_disp_limit, ctrl.units) == (0, 100, "degC")
    sp = ca.caget(PV + "SP", format=ca.FORMAT_CTRL, timeout=5)
    assert (sp.lower_ctrl_limit, sp.upper_ctrl_limit, sp.upper_warning_limit, sp.upper_alarm_limit) == (0, 50, 5, 10)
    n = ca.caget(PV + "N", format=ca.FORMAT_CTRL, timeout=5)
    assert (n.lower_alarm_limit, n.lower_warning_limit, n.upper_warning_limit, n.upper_alarm_limit) == (-10, 0, 10, 20)
    t = pva.get(PV + "T", timeout=5)
    assert (t.display.limitLow, t.display.limitHigh) == (0, 100)


def test_int_output_alarms(workers, ca):
    for value, severity, status in ((5, NO_ALARM, 0), (15, MINOR, HIGH), (25, MAJOR, HIHI),
                                    (-5, MINOR, LOW), (-20, MAJOR, LOLO), (3, NO_ALARM, 0)):
        command(ca, f"set N {value}")
        assert wait_alarm(ca, "N", severity, status)[0] == value


def test_bool_and_enum_state_severities(workers, ca, pva):
    command(ca, "set FLAG 0")
    wait_alarm(ca, "FLAG", MINOR, STATE)
    command(ca, "set FLAG 1")
    wait_alarm(ca, "FLAG", MAJOR, STATE)
    command(ca, "set FLAG2 1")  # alarm_on: MAJOR, iocmng 2.7's spelling of osv
    wait_alarm(ca, "FLAG2", MAJOR, STATE)
    command(ca, "set FLAG2 0")
    wait_alarm(ca, "FLAG2", NO_ALARM, 0)
    for choice, severity in (("WARN", MINOR), ("FAULT", MAJOR), ("OK", NO_ALARM)):
        command(ca, f"set STATE {choice}")
        wait_alarm(ca, "STATE", severity, STATE if severity else 0)
    command(ca, "set STATE FAULT")
    wait_for(lambda: pva.get(PV + "STATE", timeout=5).alarm.severity == MAJOR, what="FAULT is MAJOR over PVA")


def test_plugin_severity_combines_with_limits(workers, ca):
    command(ca, "set T 5 MAJOR COMM")  # inside the limits: the plugin's alarm shows
    wait_alarm(ca, "T", MAJOR, COMM)
    command(ca, "set T 5 minor")  # no status given: SOFT
    wait_alarm(ca, "T", MINOR, SOFT)
    command(ca, "set T 10 MINOR")  # HIHI (MAJOR) beats the plugin's MINOR
    wait_alarm(ca, "T", MAJOR, HIHI)
    command(ca, "set T 8 INVALID")  # the plugin's INVALID beats HIGH (MINOR)
    wait_alarm(ca, "T", INVALID, SOFT)
    command(ca, "set T 5")  # a write without a severity clears the plugin's
    wait_alarm(ca, "T", NO_ALARM, 0)
    command(ca, "alarm T MAJOR TIMEOUT")  # set_alarm keeps the value
    assert wait_alarm(ca, "T", MAJOR, 10)[0] == 5


def test_operator_write_beyond_high_is_minor(workers, ca):
    ca.caput(PV + "SP", 7, wait=True, timeout=5)
    wait_alarm(ca, "SP", MINOR, HIGH)
    ca.caput(PV + "SP", 3, wait=True, timeout=5)
    wait_alarm(ca, "SP", NO_ALARM, 0)


def test_plugin_write_to_an_input_alarms_and_reaches_monitors(workers, ca):
    """An input set by the plugin is not processed (no on_input loop); its limit alarm is
    computed in Python, and monitors still get the value and the alarm."""
    updates: list[Any] = []
    monitor = ca.camonitor(PV + "SP", updates.append, format=ca.FORMAT_TIME, all_updates=True)
    try:
        wait_for(lambda: updates, what="first SP update")
        command(ca, "set SP 12")
        wait_for(lambda: any(u == 12 and u.severity == MAJOR and u.status == HIHI for u in updates),
                 what="SP=12 MAJOR/HIHI on the monitor")
        command(ca, "set SP 6 MAJOR STATE")
        wait_alarm(ca, "SP", MAJOR, STATE)
        command(ca, "set SP 6")
        wait_alarm(ca, "SP", MINOR, HIGH)
        command(ca, "alarm SP INVALID")
        wait_alarm(ca, "SP", INVALID, SOFT)
        command(ca, "set SP 1")
        wait_for(lambda: updates[-1] == 1 and updates[-1].severity == NO_ALARM, what="SP=1 NO_ALARM on the monitor")
    finally:
        monitor.close()
    ca.caput(PV + "SP", 7, wait=True, timeout=5)  # the operator's write is checked by the record again
    wait_alarm(ca, "SP", MINOR, HIGH)


def test_mdel_and_adel_deadbands(workers, ca):
    values: list[float] = []
    archived: list[float] = []
    # all_updates: cothread would otherwise merge updates that arrive before the callback runs
    monitors = [ca.camonitor(PV + "DB", values.append, all_updates=True),
                ca.camonitor(PV + "DB", archived.append, events=ca.DBE_LOG, all_updates=True)]
    try:
        wait_for(lambda: values and archived, what="first DB updates")
        for value in (0.5, 0.8, 2.0):
            command(ca, f"set DB {value}")
        # Each posted value is waited for before the next: a CA server whose client falls behind
        # keeps only the newest event of a subscription, so 2.0 sent straight on to 6.0 could be
        # replaced. Events arrive in order: had 0.5 or 0.8 been posted they would be before 2.0.
        wait_for(lambda: values[-1] == 2.0, what="DB=2 on the value monitor")
        command(ca, "set DB 6.0")
        wait_for(lambda: values[-1] == 6.0 and archived[-1] == 6.0, what="DB=6 on both monitors")
        assert values == [0.0, 2.0, 6.0]  # within MDEL (1.0) of the last posted value: suppressed
        assert archived == [0.0, 6.0]  # ADEL (5.0)
    finally:
        for monitor in monitors:
            monitor.close()


def test_bad_severity_from_the_plugin_is_an_error_naming_the_valid_ones(workers, ca):
    before = ca.caget(PV + "T", timeout=5)
    command(ca, f"set T {before + 1} SEVERE")
    message = wait_for(lambda: ca.caget(PV + "STATUS", datatype=ca.DBR_STRING, timeout=5) == "ERROR"
                       and ca.caget(PV + "MESSAGE", timeout=5), what="STATUS=ERROR")
    assert message.startswith("ValueError: unknown alarm severity")  # MESSAGE holds 39 characters
    log = wait_for(lambda: "SEVERE" in (text := workers["driven"].log()) and text, what="the traceback logged")
    assert "unknown alarm severity 'SEVERE' (valid: NO_ALARM, MINOR, MAJOR, INVALID, or 0..3)" in log
    assert ca.caget(PV + "T", timeout=5) == before  # nothing was written


def test_status_error_and_job_failed_are_major(workers, ca, pva):
    command(ca, "raise")
    wait_for(lambda: ca.caget(PV + "MESSAGE", timeout=5) == "RuntimeError: sensor lost", what="error message")
    status = ca.caget(PV + "STATUS", format=ca.FORMAT_TIME, datatype=ca.DBR_STRING, timeout=5)
    assert (status, status.severity, status.status) == ("ERROR", MAJOR, STATE)
    assert pva.get(PV + "STATUS", timeout=5).alarm.severity == MAJOR
    job, client = f"{PREFIX}:FAILING:", workers["job_ca"]
    assert client.put({job + "RUN": 1}) == {job + "RUN": True}
    wait_for(lambda: client.get([job + "STATUS"])[job + "STATUS"] == 3.0, what="job FAILED (state 3)")
    alarm = client.get([job + "STATUS.SEVR", job + "STATUS.STAT", job + "RUN.ASG"])
    assert alarm == {job + "STATUS.SEVR": MAJOR, job + "STATUS.STAT": STATE, job + "RUN.ASG": "IOCHOST_INPUTS"}
    assert pva.get(job + "STATUS", timeout=5).alarm.severity == MAJOR


def test_run_and_enable_are_in_the_inputs_access_group(workers, ca):
    for name in (PV + "CMD", PV + "SP", PV + "ENABLE"):
        assert ca.caget(name + ".ASG", timeout=5) == "IOCHOST_INPUTS"
    assert ca.caget(PV + "T.ASG", timeout=5) == ""


# -- the pure parts ---------------------------------------------------------------------

def test_limit_alarm_follows_the_record_check_with_hysteresis():
    pv = PVDef(type="float", alarm={"lolo": -10, "low": 0, "high": 10, "hihi": 20, "hyst": 2})
    state = LimitState()
    assert limit_alarm(pv, 5, state) == (NO_ALARM, 0)
    assert limit_alarm(pv, 10, state) == (MINOR, HIGH)
    assert limit_alarm(pv, 9, state) == (MINOR, HIGH)  # held: within HYST of HIGH
    assert limit_alarm(pv, 7.5, state) == (NO_ALARM, 0)
    assert limit_alarm(pv, 25, state) == (MAJOR, HIHI)
    assert limit_alarm(pv, 19, state) == (MAJOR, HIHI)
    assert limit_alarm(pv, 17, state) == (MINOR, HIGH)
    assert limit_alarm(pv, -1, state) == (MINOR, LOW)
    assert limit_alarm(pv, -11, state) == (MAJOR, LOLO)
    assert limit_alarm(PVDef(type="float", alarm={"high": 1}), 3) == (MINOR, HIGH)
    assert limit_alarm(PVDef(type="float", alarm={"high": 1, "hsv": "NO_ALARM"}), 3) == (NO_ALARM, 0)
    assert limit_alarm(PVDef(type="float"), 1e9) == (NO_ALARM, 0)
    assert limit_alarm(PVDef(type="bool", alarm_on="minor"), 1) == (MINOR, STATE)
    assert limit_alarm(PVDef(type="bool", alarm_on="minor"), 0) == (NO_ALARM, 0)
    enum = PVDef(type="enum", choices=["OK", "FAULT"], alarm={"FAULT": "MAJOR"})
    assert (limit_alarm(enum, 1), limit_alarm(enum, 0)) == ((MAJOR, STATE), (NO_ALARM, 0))


def test_severity_and_status_names():
    assert (severity_number("major"), severity_number(3), status_number("HIHI"), status_number(9)) == (2, 3, 3, 9)
    assert plugin_alarm() == (NO_ALARM, 0)
    assert plugin_alarm("MAJOR") == (MAJOR, SOFT)
    assert plugin_alarm(1, "comm") == (MINOR, COMM)
    with pytest.raises(ValueError, match="did you mean 'MAJOR'.*NO_ALARM, MINOR, MAJOR, INVALID"):
        severity_number("MAJR")
    with pytest.raises(ValueError, match="UDF"):
        status_number("BROKEN")
    with pytest.raises(ValueError):
        severity_number(4)
    with pytest.raises(ValueError):
        severity_number(True)


def test_memory_runtime_keeps_what_the_plugin_set():
    from iochost import TaskBase

    class Probe(TaskBase):
        def initialize(self) -> None:
            pass

        def execute(self) -> None:
            self.set_pv("T", 12.5, severity="MAJOR", alarm="HIGH")
            self.set_pv("N", 1)
            self.set_alarm("N", "minor")

        def cleanup(self) -> None:
            pass

    probe = Probe(name="probe")
    probe.execute()
    runtime = probe._runtime
    assert isinstance(runtime, MemoryRuntime)
    assert runtime.values == {"T": 12.5, "N": 1}
    assert runtime.alarms == {"T": ("MAJOR", "HIGH"), "N": ("MINOR", "SOFT")}
    with pytest.raises(ValueError, match="valid"):
        probe.set_pv("T", 1, severity="LOUD")
    with pytest.raises(KeyError):
        probe.set_alarm("MISSING", "MAJOR")
