"""The worker end to end: real soft IOC processes, real CA (libca) and PVA (pvxs) clients.

Tasks: PVs declared and served, inputs, enable, overrunning cycles, signals, heartbeats, errors,
iocmng plugins, the command line. Jobs are in test_worker_jobs.py (which uses ``start`` and the
per-test PREFIX from here)."""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import EXAMPLES, wait_for
from iochost.contract import messages
from sample_plugins import make_plugin
from worker_harness import StandaloneWorker

PREFIX = "IOCHTEST"
_test_numbers = itertools.count()


@pytest.fixture(autouse=True)
def _fresh_prefix():
    """A new PV prefix per test: the CA client caches channels by name for the whole
    session, and a cached channel to the previous test's (killed) IOC takes ~10 s to
    reconnect. Tests read the module-level PREFIX when they run, so rebinding it here
    gives every test names no earlier test has used."""
    global PREFIX
    PREFIX = f"IOCHTEST{next(_test_numbers)}"
    yield


def start(processes, tmp_path, plugin_dir: Path, name: str, class_name: str, **fields) -> StandaloneWorker:
    worker = StandaloneWorker(
        processes, tmp_path, name=name, plugin_dir=str(plugin_dir),
        module_file=fields.pop("module_file", f"{plugin_dir.name}.py".replace("-", "_")),
        class_name=class_name, prefix=PREFIX, **fields,
    )
    worker.wait_event(messages.Ready)
    return worker


ECHO_TASK = """
    from iochost import TaskBase

    class Echo(TaskBase):
        def initialize(self):
            self.writes = 0

        def execute(self):
            self.set_pv("OUT", self.get_pv("GAIN") * 10)

        def on_input(self, name, value):
            self.writes += 1
            self.set_pv("LAST_INPUT", f"{name}={value}")
            self.set_pv("WRITES", self.writes)

        def cleanup(self):
            open(self.parameters["marker"], "w").write(f"cleanup after {self.cycle_count} cycles")
"""

ECHO_CONFIG = """
    parameters:
      interval: 0.1
      marker: "{marker}"
    pvs:
      inputs:
        GAIN: {{type: float, value: 1.5, unit: V, prec: 2, low: 0, high: 50}}
      outputs:
        OUT: {{type: float, value: 0, unit: mV, prec: 4}}
        LAST_INPUT: {{type: string, value: ""}}
        WRITES: {{type: int, value: 0}}
"""


@pytest.fixture
def echo(processes, tmp_path):
    marker = tmp_path / "cleanup.txt"
    plugin_dir = make_plugin(tmp_path, "echo", ECHO_TASK, ECHO_CONFIG.format(marker=marker))
    worker = start(processes, tmp_path, plugin_dir, "echo", "Echo")
    worker.marker = marker
    return worker


def test_ready_lists_default_and_declared_pvs(echo):
    ready = echo.wait_event(messages.Ready)
    names = {pv.rsplit(":", 1)[1] for pv in ready.pvs}
    assert names == {"ENABLE", "STATUS", "MESSAGE", "CYCLE_COUNT", "VERSION", "CLEAR", "RESET", "GAIN", "OUT",
                     "LAST_INPUT", "WRITES"}
    assert all(pv.startswith(f"{PREFIX}:ECHO:") for pv in ready.pvs)
    assert ready.pid == echo.proc.pid


def test_outputs_over_ca_and_pva_with_metadata(echo, ca, pva):
    out = wait_for(lambda: (v := ca.caget(f"{PREFIX}:ECHO:OUT", format=ca.FORMAT_CTRL, timeout=5)) == 15.0 and v,
                   what="OUT=15")
    assert out.units == "mV" and out.precision == 4
    gain = ca.caget(f"{PREFIX}:ECHO:GAIN", format=ca.FORMAT_CTRL, timeout=5)
    assert (gain.units, gain.precision, gain.lower_disp_limit, gain.upper_disp_limit) == ("V", 2, 0, 50)
    value = pva.get(f"{PREFIX}:ECHO:OUT", timeout=5)
    assert value.value == pytest.approx(15.0)
    assert value.display.units == "mV" and value.display.precision == 4
    status = pva.get(f"{PREFIX}:ECHO:STATUS", timeout=5)
    assert status.value.choices[status.value.index] == "RUN"


def test_input_written_over_ca_reaches_plugin(echo, ca):
    ca.caput(f"{PREFIX}:ECHO:GAIN", 4.25, wait=True, timeout=5)
    wait_for(lambda: ca.caget(f"{PREFIX}:ECHO:OUT", timeout=5) == pytest.approx(42.5), what="get_pv sees GAIN")
    wait_for(lambda: ca.caget(f"{PREFIX}:ECHO:LAST_INPUT", timeout=5) == "GAIN=4.25", what="on_input called")
    assert ca.caget(f"{PREFIX}:ECHO:WRITES", timeout=5) == 1
    # DRVH clamps an operator write to the declared limit.
    ca.caput(f"{PREFIX}:ECHO:GAIN", 500, wait=True, timeout=5)
    assert ca.caget(f"{PREFIX}:ECHO:GAIN", timeout=5) == 50


@pytest.mark.slow
def test_enable_pauses_and_resumes(echo, ca):
    pv = f"{PREFIX}:ECHO:"
    wait_for(lambda: ca.caget(pv + "CYCLE_COUNT", timeout=5) > 2, what="cycles running")
    ca.caput(pv + "ENABLE", 0, wait=True, timeout=5)
    wait_for(lambda: ca.caget(pv + "STATUS", datatype=ca.DBR_STRING, timeout=5) == "PAUSED", what="PAUSED")
    frozen = ca.caget(pv + "CYCLE_COUNT", timeout=5)
    beat = echo.heartbeat_periods(1)  # a whole heartbeat period (10 cycles of 0.1 s) while paused
    assert ca.caget(pv + "CYCLE_COUNT", timeout=5) == frozen == beat.cycles
    echo.wait_event(messages.StatusChanged, lambda m: m.status == "PAUSED")
    ca.caput(pv + "ENABLE", 1, wait=True, timeout=5)
    wait_for(lambda: ca.caget(pv + "CYCLE_COUNT", timeout=5) > frozen + 2, what="cycles resumed")
    assert ca.caget(pv + "STATUS", datatype=ca.DBR_STRING, timeout=5) == "RUN"


SLOW_CYCLE_TASK = """
    import time
    from iochost import TaskBase

    class Slow(TaskBase):
        def initialize(self):
            pass

        def execute(self):
            time.sleep(0.5)  # longer than its interval: every cycle overruns

        def on_input(self, name, value):
            self.set_pv("SEEN", value)

        def cleanup(self):
            pass
"""


@pytest.mark.slow
def test_operator_writes_reach_a_task_whose_cycle_overruns_its_interval(processes, tmp_path, ca):
    """A cycle longer than ``interval`` skips the missed periods; it must not run back to
    back for ever, leaving operator writes, ENABLE and RUN queued and never handled."""
    plugin_dir = make_plugin(tmp_path, "slow", SLOW_CYCLE_TASK, """
        parameters: {interval: 0.2}
        pvs:
          inputs: {SETPOINT: {type: int, value: 0}}
          outputs: {SEEN: {type: int, value: 0}}
    """)
    start(processes, tmp_path, plugin_dir, "slow", "Slow")
    pv = f"{PREFIX}:SLOW:"
    wait_for(lambda: ca.caget(pv + "CYCLE_COUNT", timeout=5) >= 2, what="overrunning cycles")
    ca.caput(pv + "SETPOINT", 7, wait=True, timeout=5)
    wait_for(lambda: ca.caget(pv + "SEEN", timeout=5) == 7, timeout=30, what="on_input called between cycles")
    ca.caput(pv + "ENABLE", 0, wait=True, timeout=5)
    wait_for(lambda: ca.caget(pv + "STATUS", datatype=ca.DBR_STRING, timeout=5) == "PAUSED", timeout=30,
             what="ENABLE=0 handled between cycles")


def test_sigterm_calls_cleanup_and_exits_zero(echo):
    assert not echo.marker.exists()
    assert echo.terminate() == 0
    assert echo.marker.read_text().startswith("cleanup after")


def test_supervisor_gone_worker_exits(echo):
    echo.close_commands()
    assert echo.proc.wait(timeout=8) == 0
    assert echo.marker.exists()


@pytest.mark.slow
def test_heartbeat_reports_cycles(echo):
    beat = echo.wait_event(messages.Heartbeat, lambda m: m.cycles > 0)
    assert beat.busy_for is None or beat.busy_for < 1.0


@pytest.mark.slow
def test_triggered_task_runs_once_per_run(processes, tmp_path, ca):
    worker = start(processes, tmp_path, EXAMPLES / "beam-shutter", "shutter", "BeamShutter")
    pv = f"{PREFIX}:SHUTTER:"
    assert ca.caget(pv + "STATUS", datatype=ca.DBR_STRING, timeout=5) == "INIT"
    worker.heartbeat_periods(1)
    assert ca.caget(pv + "OPERATIONS", timeout=5) == 0  # nothing runs without a trigger
    ca.caput(pv + "RUN", 1, wait=True, timeout=5)
    wait_for(lambda: ca.caget(pv + "OPERATIONS", timeout=5) == 1, what="one operation")
    wait_for(lambda: ca.caget(pv + "RUN", timeout=5) == 0, what="RUN reset")
    assert ca.caget(pv + "STATE", datatype=ca.DBR_STRING, timeout=5) == "Open"
    assert ca.caget(pv + "CYCLE_COUNT", timeout=5) == 1
    worker.heartbeat_periods(1)
    assert ca.caget(pv + "OPERATIONS", timeout=5) == 1  # exactly once
    ca.caput(pv + "COMMAND", "Close", wait=True, timeout=5)
    ca.caput(pv + "RUN", 1, wait=True, timeout=5)
    wait_for(lambda: ca.caget(pv + "OPERATIONS", timeout=5) == 2, what="second operation")
    assert ca.caget(pv + "STATE", datatype=ca.DBR_STRING, timeout=5) == "Closed"
    worker.terminate()


FAILING_TASK = """
    from iochost import TaskBase

    class Flaky(TaskBase):
        def initialize(self):
            self.calls = 0

        def execute(self):
            self.calls += 1
            self.set_pv("CALLS", self.calls)
            if self.calls == 3:
                raise ValueError("sensor returned garbage: " + "x" * 80)

        def cleanup(self):
            pass
"""


@pytest.mark.parametrize("retry", [False, True])
def test_exception_sets_error_and_ioc_survives(processes, tmp_path, ca, retry):
    config = f"""
        parameters: {{interval: 0.1, retry_on_error: {str(retry).lower()}}}
        pvs: {{outputs: {{CALLS: {{type: int}}}}}}
    """
    plugin_dir = make_plugin(tmp_path, "flaky", FAILING_TASK, config)
    worker = start(processes, tmp_path, plugin_dir, "flaky", "Flaky")
    pv = f"{PREFIX}:FLAKY:"
    worker.wait_event(messages.StatusChanged, lambda m: m.status == "ERROR")
    message = ca.caget(pv + "MESSAGE", timeout=5)
    assert message.startswith("ValueError: sensor returned garbage")
    assert len(message) == 39  # cut to the stringin record's length
    if retry:
        wait_for(lambda: ca.caget(pv + "CALLS", timeout=5) > 5, what="retried cycles")
        wait_for(lambda: ca.caget(pv + "STATUS", datatype=ca.DBR_STRING, timeout=5) == "RUN", what="recovered")
    else:
        worker.heartbeat_periods(1)  # a second of cycles that would have retried
        assert ca.caget(pv + "CALLS", timeout=5) == 3
        assert ca.caget(pv + "STATUS", datatype=ca.DBR_STRING, timeout=5) == "ERROR"
        assert ca.caget(pv + "CYCLE_COUNT", timeout=5) == 2
    assert worker.proc.poll() is None
    assert "Traceback" in worker.log() and "sensor returned garbage" in worker.log()


IOCMNG_TASK = """
    from iocmng import TaskBase
    from iocmng.base.job import JobResult


    class LegacyMonitor(TaskBase):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.seen = JobResult(success=True)

        def initialize(self):
            self.logger.info("Starting monitor")

        def execute(self):
            value = self.read_sensor()
            self.set_pv("READING", value)
            if value > self.parameters.get("threshold", 75):
                self.set_pv("ALARM", 1)

        def cleanup(self):
            self.logger.info("Stopping monitor")

        def read_sensor(self):
            return 42.0 + self.get_pv("SETPOINT")
"""
IOCMNG_CONFIG = """
    parameters:
      mode: continuous
      interval: 0.2
      threshold: 75.0
    pvs:
      inputs:
        SETPOINT: {type: float, value: 50.0, unit: "%", prec: 2, low: 0, high: 100}
      outputs:
        READING: {type: float, value: 0.0, unit: "arb", prec: 3}
        ALARM: {type: bool, value: 0, znam: "OK", onam: "ALARM"}
"""


def test_iocmng_plugin_runs_unchanged(processes, tmp_path, ca):
    plugin_dir = make_plugin(tmp_path, "my_monitor", IOCMNG_TASK, IOCMNG_CONFIG)
    start(processes, tmp_path, plugin_dir, "my-monitor", "LegacyMonitor", module_file="my_monitor.py")
    pv = f"{PREFIX}:MY-MONITOR:"
    wait_for(lambda: ca.caget(pv + "READING", timeout=5) == 92.0, what="READING")
    assert ca.caget(pv + "ALARM", datatype=ca.DBR_STRING, timeout=5) == "ALARM"


@pytest.mark.slow
def test_stuck_execute_shows_in_heartbeat(processes, tmp_path):
    code = """
        from iochost import TaskBase

        class Stuck(TaskBase):
            def initialize(self): pass
            def execute(self):
                while True:
                    pass
            def cleanup(self): pass
    """
    plugin_dir = make_plugin(tmp_path, "stuck", code, "parameters: {interval: 0.1}\n")
    worker = start(processes, tmp_path, plugin_dir, "stuck", "Stuck", grace_period=1.0)
    beat = worker.wait_event(messages.Heartbeat, lambda m: (m.busy_for or 0) > 1.5)
    assert beat.busy_in == "execute"
    # cleanup() can never run; the worker still exits after the grace period.
    assert worker.terminate() == 3


@pytest.mark.slow
def test_stop_command_grace_overrides_the_spec(processes, tmp_path):
    """The supervisor's Stop{grace} is what cleanup() gets, whatever the spec said."""
    code = """
        import time
        from iochost import TaskBase

        class Tidy(TaskBase):
            def initialize(self): pass
            def execute(self): pass
            def cleanup(self):
                time.sleep(2)
    """
    plugin_dir = make_plugin(tmp_path, "tidy", code, "parameters: {interval: 0.5}\n")
    worker = start(processes, tmp_path, plugin_dir, "tidy", "Tidy", grace_period=0.5)
    worker.send(messages.Stop(grace=10))
    assert worker.proc.wait(timeout=15) == 0  # cleanup() finished: a clean exit, not 3


def test_iochost_run_cli_serves_example(processes, tmp_path, ca):
    proc = processes.start(
        [sys.executable, "-m", "iochost", "run", str(EXAMPLES / "temperature-monitor"), "--name", "tm",
         "--prefix", PREFIX, "--param", "interval=0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    pv = f"{PREFIX}:TM:"
    wait_for(lambda: ca.caget(pv + "CYCLE_COUNT", timeout=1) > 3, timeout=20, what="example cycling")
    history = ca.caget(pv + "HISTORY", timeout=5, count=60)
    assert len(history) == 60
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=15) == 0
    assert b"monitor stopped after" in proc.stdout.read()


@pytest.mark.slow
def test_busy_ca_port_exits_with_its_own_code(processes, tmp_path):
    """rsrv would fall back to a random port; a supervised worker must refuse instead."""
    import socket

    from conftest import free_port
    from iochost.contract.exits import WorkerExit, describe_exit

    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        worker = StandaloneWorker(processes, tmp_path, env={"EPICS_CAS_SERVER_PORT": str(port)},
                               name="portless", plugin_dir=str(EXAMPLES / "beam-shutter"),
                               module_file="beam_shutter.py", class_name="BeamShutter", prefix=PREFIX)
        assert worker.proc.wait(timeout=30) == WorkerExit.CA_PORT_BUSY
    assert f"CA server port {port} is held" in worker.log()
    assert "port is held by another process" in describe_exit(WorkerExit.CA_PORT_BUSY)

