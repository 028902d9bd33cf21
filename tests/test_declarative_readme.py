"""iocmng 2.7's README declarative examples under iochost: each validates with iocmng's PV names; the monitor runs and
the interlock behaves as under iocmng, linked to a real standalone device soft IOC.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy
import pytest

from conftest import Processes, wait_for
from iocmng_material import PluginExample, example_named, readme_examples_for_tests
from test_declarative import (
    _ioc,
    _run_plugin,
    link_env,  # noqa: F401 - a fixture
)


# -- iocmng 2.7's README examples, unchanged ----------------------------------------------------
# Downloaded from the package index at test time (tests/iocmng_material.py); bench/iocmng_compat.py
# runs them under iocmng 2.7.9 beside iochost and records the PV names iocmng serves.
@pytest.fixture(scope="module")
def readme(request: pytest.FixtureRequest) -> list[PluginExample]:
    return readme_examples_for_tests(request.config)


@pytest.mark.slow
@pytest.mark.parametrize("example", ["my_monitor", "my_interlock"])
def test_readme_example_validates_with_iocmngs_pv_names(example: str, readme: list[PluginExample],
                                                         tmp_path: Path) -> None:
    plugin = example_named(readme, example).write(tmp_path / example)
    report = subprocess.run([sys.executable, "-m", "iochost", "validate", "--json", "--prefix", "MY",
                             "--name", "ioc", str(plugin)], capture_output=True, text=True)
    assert report.returncode == 0, report.stdout + report.stderr
    plugin = json.loads(report.stdout)["plugin"]
    assert plugin["kind"] == "task" and plugin["mode"] == "continuous"
    served = sorted(pv.removeprefix("MY:IOC:") for pv in plugin["pvs"])
    assert served == example_named(readme, example).recorded_pvs()


@pytest.mark.slow
def test_readme_monitor_runs_as_under_iocmng(tmp_path: Path, processes: Processes,
                                            link_env: dict[str, Any], readme: list[PluginExample]) -> None:
    """The README's Python monitor as it is: it cycles each second, SETPOINT takes operator
    writes, and ALARM stays OK while READING (which nothing in it sets) stays 0, as in iocmng."""
    env, ports, ca = link_env["env"], link_env["ports"], link_env["ca"]
    plugin = example_named(readme, "my_monitor").write(tmp_path / "monitor")
    _run_plugin(processes, env, ports["plugin"], plugin, "mon")
    first = wait_for(lambda: ca.caget("DT:MON:CYCLE_COUNT"), timeout=20, what="the monitor serving")
    assert ca.caget("DT:MON:SETPOINT") == 50.0 and ca.caget("DT:MON:STATUS") == 1  # RUN
    ca.caput("DT:MON:SETPOINT", 60.0, wait=True)
    wait_for(lambda: ca.caget("DT:MON:CYCLE_COUNT") >= first + 2, timeout=10, what="two more cycles")
    assert ca.caget("DT:MON:SETPOINT") == 60.0 and ca.caget("DT:MON:READING") == 0.0
    assert ca.caget("DT:MON:ALARM") == 0


@pytest.mark.slow
def test_readme_interlock_behaves_as_under_iocmng(tmp_path: Path, processes: Processes,
                                                  link_env: dict[str, Any], readme: list[PluginExample]) -> None:
    """The README's interlock as it is (DEVICE:TEMP, DEVICE:PRESSURE, a 1 s interval); each
    expected value is what iocmng 2.7.9 shows for the same step (bench/iocmng_compat.py)."""
    env, ports, ca = link_env["env"], link_env["ports"], link_env["ca"]
    device = _ioc(processes, env, ports["dev"], "DEVICE", "TEMP", "PRESSURE")
    plugin = example_named(readme, "my_interlock").write(tmp_path / "interlock")
    _run_plugin(processes, env, ports["plugin"], plugin, "readme")

    def get(name: str) -> Any:
        return ca.caget("DT:README:" + name, timeout=2, format=ca.FORMAT_TIME)

    def conn() -> list[int]:
        return [int(x) for x in numpy.atleast_1d(get("CONN_INP"))]

    def step(pv: str, value: float, check: Any, what: str) -> None:
        if pv.startswith("DEVICE:"):
            # one-shot writes: the module's client keeps no channel to the device it will kill
            # (caproto's search thread dies if reconnecting one to the restarted device times out)
            from caproto.sync.client import write

            write(pv, [value], notify=True, timeout=5, repeater=False)
        else:
            ca.caput(pv, value, wait=True)
        wait_for(check, timeout=10, what=what)

    wait_for(lambda: conn() == [1, 1], timeout=20, what="both links connected")
    assert get("CONN_INP_NAMES") == "temp\npressure" and get("avg_temp") == 0.0 and get("alarm") == 0
    # the ring buffer holds the first read and the first monitor update (0, 0), as iocmng's does
    step("DEVICE:TEMP", 50.0, lambda: get("avg_temp") == pytest.approx(50 / 3), "mean(0, 0, 50)")
    step("DEVICE:TEMP", 70.0, lambda: get("avg_temp") == pytest.approx(30.0), "mean(0, 0, 50, 70)")
    step("DEVICE:PRESSURE", 3.0, lambda: get("alarm") == 1, "OVER_TEMP fired on pressure")
    assert get("alarm").severity == 2  # alarm_on: MAJOR
    assert get("MESSAGE") == "Temperature or pressure limit exceeded"
    step("DEVICE:PRESSURE", 1.0, lambda: get("pressure") == 1.0, "pressure back under 2")
    cycles = get("CYCLE_COUNT")
    wait_for(lambda: get("CYCLE_COUNT") >= cycles + 2, timeout=10, what="two cycles")
    assert get("alarm") == 1  # the latch holds
    step("DT:README:CLEAR", 1, lambda: get("alarm") == 0 and get("CLEAR") == 0, "CLEAR released it")
    # the latch re-arms after one cycle without the condition (iocmng's rule, so a CLEAR while
    # the condition holds does not latch again at once)
    cleared_at = get("CYCLE_COUNT")
    wait_for(lambda: get("CYCLE_COUNT") > cleared_at + 1, timeout=5, what="a cycle after CLEAR")
    step("DEVICE:PRESSURE", 5.0, lambda: get("alarm") == 1, "fired again")
    step("DEVICE:PRESSURE", 0.0, lambda: get("pressure") == 0.0, "pressure 0")
    before = get("CYCLE_COUNT")
    # RESET: latches released, cycle count restarted, every link read again (70 joins the buffer)
    step("DT:README:RESET", 1, lambda: get("MESSAGE") == "Task reset" and get("RESET") == 0, "RESET")
    assert get("alarm") == 0 and get("CYCLE_COUNT") < before
    wait_for(lambda: get("avg_temp") == pytest.approx(38.0), timeout=5, what="mean(0, 0, 50, 70, 70)")

    # the device goes away: both ports down, the inputs and the rule's output INVALID
    os.killpg(device.pid, 9)
    device.wait()
    wait_for(lambda: conn() == [0, 0], timeout=20, what="links down")
    assert get("temp").severity == 3 and get("alarm").severity == 3
    # and comes back (at 0): connected, the value joins the buffer, the alarms clear
    _ioc(processes, env, ports["dev"], "DEVICE", "TEMP", "PRESSURE")
    wait_for(lambda: conn() == [1, 1], timeout=30, what="links back")
    wait_for(lambda: get("avg_temp") == pytest.approx(190 / 6), timeout=5, what="mean(0, 0, 50, 70, 70, 0)")
    assert get("temp") == 0.0 and get("temp").severity == 0
    wait_for(lambda: get("alarm").severity == 0 and get("avg_temp").severity == 0, timeout=5,
             what="the outputs trusted again")

