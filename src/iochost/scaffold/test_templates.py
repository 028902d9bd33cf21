"""The test ``iochost new`` writes (tests/test_<name>.py): a harness that runs the plugin with
``iochost run`` and drives its PVs over CA, then one set of tests per kind.

Templates are string.Template (``$name``; ``$$`` is a dollar). Placeholders: ``$name`` (plugin
name), ``$Class``, ``$module``, ``$test_module``, ``$PVNAME`` (the name upper-cased, as in PV
names), ``$kind_title``; ``$run_args`` the harness's ``iochost run`` options.
"""

from __future__ import annotations

from string import Template

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


def client_env(ca_port: int) -> dict[str, str]:
    """This environment for a CA client that searches loopback only, on the IOC's port (the IOC
    itself listens on loopback: `iochost run`'s default)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("EPICS_")}
    env.update({"EPICS_CA_ADDR_LIST": "127.0.0.1", "EPICS_CA_AUTO_ADDR_LIST": "NO",
                "EPICS_CA_SERVER_PORT": str(ca_port), "EPICS_CA_REPEATER_PORT": str(free_port())})
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
    ca_port = free_port()
    env = client_env(ca_port)
    log_path = tmp_path_factory.mktemp("ioc") / "ioc.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "iochost", "run", str(PLUGIN_DIR), "--name", NAME, "--prefix", PREFIX,
             "--ca-port", str(ca_port), "--pva-port", str(free_port()), *RUN_ARGS],
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
