"""The texts ``iochost new`` writes, as string.Template (``$name``; ``$$`` is a dollar).

Placeholders: ``$name`` (plugin name), ``$Class``, ``$module``, ``$test_module``,
``$PVNAME`` (the name upper-cased, as in PV names), ``$kind_title``.
"""

from __future__ import annotations

from string import Template

# -- plugin modules --------------------------------------------------------------------

TASK_MODULE = Template('''\
"""$name: every cycle, publish SETPOINT times the ``gain`` parameter on OUTPUT."""

from iochost import TaskBase


class $Class(TaskBase):
    def initialize(self):
        """Once, after the IOC is up: read parameters, open connections."""
        self.gain = float(self.parameters["gain"])
        self.logger.info("gain %.3f", self.gain)

    def execute(self):
        """Every ``interval`` seconds (while ENABLE=1)."""
        self.set_pv("OUTPUT", self.get_pv("SETPOINT") * self.gain)

    def on_input(self, name, value):
        """An operator wrote an input PV."""
        self.set_message(f"{name} -> {value}")

    def cleanup(self):
        """Once, when the IOC stops: release what initialize() took."""
        self.logger.info("stopped after %d cycles", self.cycle_count)
''')

TRIGGERED_MODULE = Template('''\
"""$name: each RUN=1 moves POSITION by one STEP and counts the move."""

import time

from iochost import TaskBase


class $Class(TaskBase):
    def initialize(self):
        """Once, after the IOC is up: read parameters, open connections."""
        self.position = 0.0

    def execute(self):
        """The action: runs once per RUN=1 (triggered() calls execute() unless you override it)."""
        self.position += self.get_pv("STEP")
        self.set_pv("POSITION", self.position)
        self.set_pv("MOVES", self.get_pv("MOVES") + 1)
        self.set_pv("LAST_ACTION", time.strftime("%H:%M:%S ") + f"moved to {self.position:g}")

    def cleanup(self):
        """Once, when the IOC stops: release what initialize() took."""
        self.logger.info("left at position %g", self.position)
''')

JOB_MODULE = Template('''\
"""$name: each run takes ``samples`` readings scaled by SCALE and returns their mean."""

from iochost import JobBase, JobResult


class $Class(JobBase):
    def initialize(self):
        """Once, after the IOC is up: read parameters, open connections."""
        self.runs = 0

    def execute(self) -> JobResult:
        """Once per run: RUN=1, or ``POST /api/v1/jobs/$name/run`` under the daemon."""
        scale = self.get_pv("SCALE")
        readings = []
        for index in range(int(self.parameters["samples"])):
            self.check_cancelled()  # a cancelled run ends here, between two steps
            readings.append(scale * (index + 1))  # stands in for reading a device
        mean = sum(readings) / len(readings)
        self.runs += 1
        self.set_pv("LAST_MEAN", mean)
        self.set_pv("RUNS", self.runs)
        return JobResult(success=True, data={"mean": mean, "readings": readings},
                         message=f"mean {mean:.2f} V")
''')

DECLARATIVE_MODULE = Template('''\
"""$name: a declarative task; its logic is config.yaml's transforms and rules."""

from iochost import DeclarativeTask


class $Class(DeclarativeTask):
    pass
''')

# -- config.yaml -------------------------------------------------------------------------

TASK_CONFIG = Template('''\
# A continuous task: every `interval` seconds execute() reads SETPOINT and publishes OUTPUT.
parameters:
  mode: continuous
  interval: 1.0          # seconds between execute() calls
  gain: 2.0              # your own parameters are free-form: self.parameters["gain"]

pvs:                     # PV names: {PREFIX}:$PVNAME:{PV}
  inputs:                # operators write these (Phoebus, caput)
    SETPOINT:
      type: float
      value: 10.0
      unit: "V"
      prec: 2
      low: 0             # display range, and the drive limits of an input
      high: 100
      description: "Value to scale"
  outputs:               # the task publishes these
    OUTPUT:
      type: float
      value: 0.0
      unit: "V"
      prec: 2
      low: 0
      high: 200
      description: "SETPOINT times gain"
      alarm:             # the record computes its own severity
        high: 150        # MINOR above 150 V
        hihi: 190        # MAJOR above 190 V
''')

TRIGGERED_CONFIG = Template('''\
# A triggered task: an operator writes 1 to RUN and execute() runs once.
parameters:
  mode: triggered

pvs:                     # PV names: {PREFIX}:$PVNAME:{PV}
  inputs:                # operators write these (Phoebus, caput)
    STEP:
      type: float
      value: 1.0
      unit: "mm"
      prec: 2
      low: -10
      high: 10
      description: "Distance moved per RUN"
  outputs:               # the task publishes these
    POSITION:
      type: float
      value: 0.0
      unit: "mm"
      prec: 2
      low: -1000
      high: 1000
      description: "Position after the last move"
      alarm: {low: -900, high: 900}   # MINOR near the ends of travel
    MOVES:
      type: int
      value: 0
      description: "Moves since start"
    LAST_ACTION:
      type: string
      value: ""
''')

JOB_CONFIG = Template('''\
# A job: runs once per RUN=1 (or `POST /api/v1/jobs/$name/run` under the daemon)
# and returns a JobResult.
parameters:
  samples: 5             # your own parameters are free-form: self.parameters["samples"]

pvs:                     # PV names: {PREFIX}:$PVNAME:{PV}
  inputs:                # operators write these (Phoebus, caput)
    SCALE:
      type: float
      value: 1.0
      unit: "V"
      prec: 3
      low: 0
      high: 10
      description: "Scale of each reading"
  outputs:               # the job publishes these
    LAST_MEAN:
      type: float
      value: 0.0
      unit: "V"
      prec: 3
      low: 0
      high: 60
      description: "Mean of the last run"
    RUNS:
      type: int
      value: 0
      description: "Runs since start"
''')

DECLARATIVE_CONFIG = Template('''\
# A declarative task (iocmng 2.7): no Python logic, this file holds it all. Every cycle
# the transforms compute outputs from the inputs, then the rules set outputs by condition.
parameters:
  mode: continuous
  interval: 1.0          # seconds between cycles

arguments:               # PV names: {PREFIX}:$PVNAME:{PV}
  inputs:
    temp:
      type: float
      value: 20.0
      unit: "degC"
      prec: 2
      low: -50
      high: 150
      description: "Temperature"
      buffer_size: 10    # the last 10 values, as temp_buf in expressions
      # Unwired, an operator (or caput) writes it. Wired, it follows another IOC's PV:
      # link: "DEVICE:TEMP"
      # link_mode: monitor   # monitor: pushed on change; poll: read each cycle
    limit:
      type: float
      value: 80.0
      unit: "degC"
      prec: 1
      low: -50
      high: 150
      description: "Alarm above this temperature"
  outputs:
    avg_temp:
      type: float
      value: 0.0
      unit: "degC"
      prec: 2
      low: -50
      high: 150
      description: "Mean of the last 10 temps"
    alarm:
      type: bool
      value: 0
      znam: "OK"
      onam: "OVER"
      latch: true        # stays 1 until CLEAR=1 is written
      alarm_on: MAJOR    # severity MAJOR while 1
      description: "temp went above limit"

transforms:
  - output: avg_temp
    expression: "mean(temp_buf)"

rule_defaults:           # each output's value when no rule fires
  alarm: 0

rules:
  - id: OVER_LIMIT
    condition: "temp > limit"
    message: "temp above limit"
    outputs:
      alarm: 1
''')

# -- README.md ---------------------------------------------------------------------------

README = Template('''\
# $name

$summary

An iochost plugin ($kind_title): iochost runs it as its own soft IOC. PV names are `{PREFIX}:$PVNAME:{PV}` (prefix `IOCHOST` by default).

## PVs

| PV | direction | type | what it is |
|---|---|---|---|
$pv_rows
Every $kind_word also has the default PVs $defaults.

## Run, validate, test

```bash
iochost validate . --name $name        # the checks the daemon runs; exit 0 and one OK line
iochost run . --name $name             # serve it as a soft IOC in the foreground (Ctrl-C stops it)
python -m pytest tests -q              # runs it with `iochost run` and drives its PVs over CA
```

With `iochost run` serving it, from another terminal:

```bash
export EPICS_CA_ADDR_LIST=127.0.0.1 EPICS_CA_AUTO_ADDR_LIST=NO
$try_it
```

Add it to a daemon with `POST /api/v1/plugins` and `{"name": "$name", "git_url": ...}`.
''')

# -- tests/test_<name>.py ----------------------------------------------------------------

TEST_HEADER = Template('''\
"""Runs the $name plugin as a real soft IOC (`iochost run`) and drives its PVs over
Channel Access with libca (cothread.catools), in a client process of its own.

The IOC and the client talk over loopback only, on ports chosen free for this test, so
it neither sees nor disturbs any other IOC on the machine or its network.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

PLUGIN_DIR = Path(__file__).resolve().parent.parent
NAME = "$name"
PREFIX = "TEST"
PV = f"{PREFIX}:{NAME.upper()}:"
RUN_ARGS = $run_args  # `iochost run` options: parameter overrides that keep the test short
START_TIMEOUT = 30.0
MAJOR, MINOR = 2, 1  # EPICS alarm severities

CLIENT = r"""
import json, sys
from cothread import catools

for line in sys.stdin:
    request = json.loads(line)
    try:
        if "put" in request:
            catools.caput(request["put"], request["value"], wait=True, timeout=request["timeout"])
            reply = {"ok": True}
        else:
            value = catools.caget(request["get"], timeout=request["timeout"], format=catools.FORMAT_TIME)
            plain = value.tolist() if hasattr(value, "tolist") else value
            reply = {"value": plain, "severity": int(value.severity)}
    except Exception as exc:  # a timeout or a refused put: the test decides what it means
        reply = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(reply), flush=True)
"""


def free_port() -> int:
    """A port free for both TCP and UDP right now (a CA server binds both)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue


def loopback_env() -> dict[str, str]:
    """This environment with EPICS (CA and PVA, server and client) on loopback and free ports."""
    ca_port, pva_port, pva_udp, repeater = free_port(), free_port(), free_port(), free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("EPICS_")}
    env.update({
        "EPICS_CA_ADDR_LIST": "127.0.0.1", "EPICS_CA_AUTO_ADDR_LIST": "NO",
        "EPICS_CA_SERVER_PORT": str(ca_port), "EPICS_CAS_SERVER_PORT": str(ca_port),
        "EPICS_CAS_INTF_ADDR_LIST": "127.0.0.1", "EPICS_CAS_BEACON_ADDR_LIST": "127.0.0.1",
        "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO", "EPICS_CA_REPEATER_PORT": str(repeater),
        "EPICS_PVA_ADDR_LIST": "127.0.0.1", "EPICS_PVA_AUTO_ADDR_LIST": "NO",
        "EPICS_PVA_SERVER_PORT": str(pva_port), "EPICS_PVAS_SERVER_PORT": str(pva_port),
        "EPICS_PVA_BROADCAST_PORT": str(pva_udp), "EPICS_PVAS_BROADCAST_PORT": str(pva_udp),
        "EPICS_PVAS_INTF_ADDR_LIST": "127.0.0.1",
    })
    return env


def stop(proc: subprocess.Popen[Any]) -> None:
    """SIGINT by PID (the plugin's cleanup() runs), SIGKILL to its process group if it lingers."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


class CAClient:
    """One libca client process: each get or put is one JSON line out and one back."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", CLIENT], env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, start_new_session=True)

    def request(self, **request: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the CA client exited ({self.proc.poll()})")
        return json.loads(line)

    def read(self, pv: str, timeout: float = 2.0) -> tuple[Any, int]:
        """(value, alarm severity) of ``PV + pv``."""
        reply = self.request(get=PV + pv, timeout=timeout)
        if "error" in reply:
            raise AssertionError(f"caget {PV}{pv}: {reply['error']}")
        return reply["value"], reply["severity"]

    def get(self, pv: str) -> Any:
        return self.read(pv)[0]

    def put(self, pv: str, value: Any) -> None:
        reply = self.request(put=PV + pv, value=value, timeout=5.0)
        if "error" in reply:
            raise AssertionError(f"caput {PV}{pv} {value!r}: {reply['error']}")

    def wait(self, pv: str, predicate: Callable[[Any], bool], timeout: float = 10.0,
             severity: int | None = None) -> Any:
        """The value of ``PV + pv`` once ``predicate`` holds (and its severity is ``severity``)."""
        deadline = time.monotonic() + timeout
        while True:
            value, got = self.read(pv)
            if predicate(value) and (severity is None or got == severity):
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{PV}{pv} is still {value!r} (severity {got}) after {timeout} s")
            time.sleep(0.05)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def ioc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CAClient]:
    """`iochost run` serving this plugin and a CA client that reaches it; both stopped by PID."""
    env = loopback_env()
    log_path = tmp_path_factory.mktemp("ioc") / "ioc.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "iochost", "run", str(PLUGIN_DIR), "--name", NAME, "--prefix", PREFIX,
             *RUN_ARGS],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    client = None
    try:
        client = CAClient(env)
        deadline = time.monotonic() + START_TIMEOUT
        while "error" in client.request(get=PV + "STATUS", timeout=1.0):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the IOC did not come up (exit {proc.poll()}):\\n{log_path.read_text(errors='replace')}")
        yield client
    finally:
        if client is not None:
            client.close()
        stop(proc)
        print(log_path.read_text(errors="replace"))  # shown by pytest when a test failed
''')

TASK_TESTS = '''

def test_output_follows_the_input(ioc: CAClient) -> None:
    ioc.wait("STATUS", lambda status: status == 1)  # RUN
    ioc.wait("OUTPUT", lambda value: value == pytest.approx(20.0))  # SETPOINT 10 x gain 2
    ioc.put("SETPOINT", 30.0)
    ioc.wait("OUTPUT", lambda value: value == pytest.approx(60.0))
    ioc.put("SETPOINT", 80.0)
    ioc.wait("OUTPUT", lambda value: value == pytest.approx(160.0), severity=MINOR)  # above alarm.high


def test_counts_cycles_and_pauses_on_enable_0(ioc: CAClient) -> None:
    first = ioc.wait("CYCLE_COUNT", lambda count: count > 0)
    ioc.wait("CYCLE_COUNT", lambda count: count > first)
    ioc.put("ENABLE", 0)
    ioc.wait("STATUS", lambda status: status == 2)  # PAUSED
    ioc.put("ENABLE", 1)
    ioc.wait("STATUS", lambda status: status == 1)
'''

TRIGGERED_TESTS = '''

def test_each_run_moves_one_step(ioc: CAClient) -> None:
    assert ioc.get("MOVES") == 0
    ioc.put("STEP", 2.5)
    ioc.put("RUN", 1)
    ioc.wait("MOVES", lambda moves: moves == 1)
    assert ioc.get("POSITION") == pytest.approx(2.5)
    assert "moved to 2.5" in ioc.get("LAST_ACTION")
    ioc.wait("RUN", lambda run: run == 0)  # back to 0 once the action is done
    ioc.put("RUN", 1)
    ioc.wait("MOVES", lambda moves: moves == 2)
    assert ioc.get("POSITION") == pytest.approx(5.0)


def test_enable_0_ignores_run(ioc: CAClient) -> None:
    moves = ioc.get("MOVES")
    ioc.put("ENABLE", 0)
    ioc.wait("STATUS", lambda status: status == 2)  # PAUSED
    ioc.put("RUN", 1)
    ioc.wait("RUN", lambda run: run == 0)
    assert ioc.get("MOVES") == moves
    ioc.put("ENABLE", 1)
'''

JOB_TESTS = '''

def test_run_returns_the_mean(ioc: CAClient) -> None:
    ioc.wait("STATUS", lambda status: status == 0)  # IDLE: ready for a run
    ioc.put("SCALE", 2.0)
    ioc.put("RUN", 1)
    ioc.wait("RUNS", lambda runs: runs == 1)
    ioc.wait("STATUS", lambda status: status == 2)  # SUCCESS
    assert ioc.get("LAST_MEAN") == pytest.approx(6.0)  # 2 x (1 + 2 + 3 + 4 + 5) / 5
    assert ioc.get("MESSAGE") == "mean 6.00 V"


def test_each_run_counts(ioc: CAClient) -> None:
    runs = ioc.get("RUNS")
    ioc.wait("RUN", lambda run: run == 0)
    ioc.put("RUN", 1)
    ioc.wait("RUNS", lambda count: count == runs + 1)
'''

DECLARATIVE_TESTS = '''

def test_avg_temp_is_the_mean_of_the_buffer(ioc: CAClient) -> None:
    ioc.put("temp", 30.0)
    ioc.wait("avg_temp", lambda value: 20.0 < value <= 30.0)  # the mean of the temps written (and 20)


def test_alarm_latches_over_the_limit_until_clear(ioc: CAClient) -> None:
    assert ioc.get("alarm") == 0
    ioc.put("temp", 90.0)  # above limit (80)
    ioc.wait("alarm", lambda value: value == 1, severity=MAJOR)
    ioc.put("temp", 25.0)
    time.sleep(0.5)  # a few cycles below the limit
    assert ioc.get("alarm") == 1  # latched
    ioc.put("CLEAR", 1)
    ioc.wait("alarm", lambda value: value == 0)
'''
