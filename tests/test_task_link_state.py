"""iocmng 2.7.9's task-side names for the link engine's state, and functions registered in
``initialize()``, in real workers.

- ``self.link_values`` (iocmng HOWTO §3 "In Python code", MANUAL §6's attribute table): every wired
  input and output by name, live, over CA and over PVA; read-only in iochost.
- ``self._latched_outputs`` (MANUAL §11 "Inspecting Latch State"): the latched outputs; CLEAR
  empties it, and discarding a name releases that latch as in iocmng (its rule_defaults value
  comes back at the next evaluation).
- A function only ``initialize()`` registers (MANUAL §15): a warning at validation, a clear start
  failure over REST when ``initialize()`` does not register it after all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from conftest import IOC_CA_PORT, Processes, wait_for
from daemon_harness import Daemon, snapshot, wait_until, worker_pids
from test_declarative import _ioc
from test_iocmng_docs import put, serving, start_run, until


@pytest.fixture(scope="module")
def device() -> Iterator[None]:
    """LSDEV:A, :B, :OUT (the links of the link_values test) and :LVL (the latch test)."""
    procs = Processes()
    try:
        _ioc(procs, {**os.environ}, IOC_CA_PORT, "LSDEV", "A", "B", "OUT", "LVL")
        yield
    finally:
        procs.stop_all()


def _plugin(root: Path, name: str, code: str, config: str) -> Path:
    plugin = root / name
    plugin.mkdir()
    (plugin / f"{name}.py").write_text(code)
    (plugin / "config.yaml").write_text(config)
    return plugin


def _run(processes: Processes, ca: Any, plugin: Path, prefix: str) -> None:
    group, name = prefix.split(":")
    proc = start_run(processes, plugin, [str(plugin), "--prefix", group, "--name", name])
    serving(ca, proc, plugin, f"{prefix}:STATUS")


# -- link_values ---------------------------------------------------------------------------------
LINK_READER = '''\
from iocmng import TaskBase


class LinkState(TaskBase):
    def initialize(self):
        pass

    def execute(self):
        values = self.link_values
        self.set_pv("KEYS", " ".join(values))
        self.set_pv("TOTAL", values["fast"] + values["slow"])
        self.set_pv("SEEN", values["drive"])
        try:
            values["fast"] = -1.0
        except TypeError:
            self.set_pv("READONLY", 1)

    def cleanup(self):
        pass
'''
LINK_CONFIG = '''\
parameters:
  mode: continuous
  interval: 0.2
  pva: {pva}
arguments:
  inputs:
    fast:
      type: float
      value: 0.0
      link: "LSDEV:A"
      link_mode: monitor
    slow:
      type: float
      value: 0.0
      link: "LSDEV:B"
    local:
      type: float
      value: 7.0
  outputs:
    drive:
      type: float
      value: 0.0
      link: "LSDEV:OUT"
    KEYS:
      type: string
      value: ""
    TOTAL:
      type: float
    SEEN:
      type: float
    READONLY:
      type: int
      value: 0
'''


@pytest.mark.slow
@pytest.mark.parametrize("pva", [False, True], ids=["ca", "pva"])
def test_link_values_has_every_wired_port_live(tmp_path: Path, processes: Processes, ca: Any, device: None,
                                               pva: bool) -> None:
    """Its keys are the wired inputs then the wired outputs, in declaration order (as iocmng
    fills it), never an unwired PV; a monitored and a polled input follow their device PVs, the
    wired output its device PV (read back, as iocmng mirrors it); writing to it is refused."""
    for pv, value in (("LSDEV:A", 1.5), ("LSDEV:B", 2.0), ("LSDEV:OUT", 0.0)):
        put(ca, pv, value)
    prefix = "LSV:PVA" if pva else "LSV:CA"
    plugin = _plugin(tmp_path, "link_state", LINK_READER, LINK_CONFIG.format(pva=str(pva).lower()))
    _run(processes, ca, plugin, prefix)
    until(ca, f"{prefix}:KEYS", "fast slow drive")
    until(ca, f"{prefix}:TOTAL", 3.5)
    until(ca, f"{prefix}:READONLY", 1)
    put(ca, "LSDEV:A", 4.0)  # the monitored input
    until(ca, f"{prefix}:TOTAL", 6.0)
    put(ca, "LSDEV:B", 5.0)  # the polled one
    until(ca, f"{prefix}:TOTAL", 9.0)
    put(ca, "LSDEV:OUT", 3.25)  # the wired output's device PV
    until(ca, f"{prefix}:SEEN", 3.25)
    assert ca.caget(f"{prefix}:fast") == pytest.approx(4.0)  # the refused write changed nothing


# -- _latched_outputs ----------------------------------------------------------------------------
LATCH_KEEPER = '''\
from iocmng import TaskBase


class LatchKeeper(TaskBase):
    def initialize(self):
        pass

    def execute(self):
        self.set_pv("LATCHED", " ".join(sorted(self._latched_outputs)))

    def handle_pv_write(self, pv_name, value):
        if pv_name == "RELEASE" and value:
            self._latched_outputs.discard("HIGH")

    def cleanup(self):
        pass
'''
LATCH_CONFIG = '''\
parameters:
  mode: continuous
  interval: 0.2
  pva: false
arguments:
  inputs:
    level:
      type: float
      value: 0.0
      link: "LSDEV:LVL"
    RELEASE:
      type: int
      value: 0
  outputs:
    HIGH:
      type: bool
      value: 0
      latch: true
    WARN:
      type: bool
      value: 0
      latch: true
    LATCHED:
      type: string
      value: ""
rule_defaults:
  HIGH: 0
  WARN: 0
rules:
  - id: OVER
    condition: "level > 10"
    outputs:
      HIGH: 1
      WARN: 1
'''


@pytest.mark.slow
def test_latched_outputs_discard_releases_one_and_clear_empties_it(
        tmp_path: Path, processes: Processes, ca: Any, device: None) -> None:
    """A rule latches HIGH and WARN; once the level is back, both stay latched; discarding HIGH
    from _latched_outputs (on the plugin thread) releases HIGH alone to its rule_defaults value;
    CLEAR releases WARN and leaves the set empty."""
    put(ca, "LSDEV:LVL", 0.0)
    plugin = _plugin(tmp_path, "latch_keeper", LATCH_KEEPER, LATCH_CONFIG)
    _run(processes, ca, plugin, "LSL:KEEP")
    until(ca, "LSL:KEEP:LATCHED", "")
    put(ca, "LSDEV:LVL", 20.0)
    until(ca, "LSL:KEEP:LATCHED", "HIGH WARN")
    put(ca, "LSDEV:LVL", 0.0)
    until(ca, "LSL:KEEP:level", 0.0)
    cycles = ca.caget("LSL:KEEP:CYCLE_COUNT")
    wait_for(lambda: ca.caget("LSL:KEEP:CYCLE_COUNT") > cycles + 2, timeout=10, what="cycles without the rule")
    assert (ca.caget("LSL:KEEP:HIGH"), ca.caget("LSL:KEEP:WARN")) == (1, 1)
    put(ca, "LSL:KEEP:RELEASE", 1)
    until(ca, "LSL:KEEP:LATCHED", "WARN")
    until(ca, "LSL:KEEP:HIGH", 0)
    assert ca.caget("LSL:KEEP:WARN") == 1
    put(ca, "LSL:KEEP:CLEAR", 1)
    until(ca, "LSL:KEEP:LATCHED", "")
    until(ca, "LSL:KEEP:WARN", 0)


# -- a function registered in initialize() ------------------------------------------------------
HALVER = '''\
from pathlib import Path

from iocmng import TaskBase
from iocmng.core.functions import register


class Halver(TaskBase):
    def initialize(self):
        if Path(self.parameters["switch"]).exists():
            register("halved", lambda value: value / 2)

    def execute(self):
        pass

    def cleanup(self):
        pass
'''
HALVER_CONFIG = '''\
parameters:
  interval: 0.2
  switch: "{switch}"
arguments:
  inputs:
    raw:
      type: float
      value: 5.0
  outputs:
    half:
      type: float
      value: 0.0
transforms:
  - output: half
    expression: "halved(raw)"
'''
HALVED_LINE = HALVER_CONFIG.splitlines().index('    expression: "halved(raw)"') + 1


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A daemon whose own IOC is up, so that what a request leaves behind is all a snapshot shows."""
    with Daemon(tmp_path_factory.mktemp("link-state") / "data").serving() as running:
        wait_until(lambda: worker_pids(running.data_dir, "iochost"), timeout=60, what="the daemon's own IOC")
        yield running


def test_function_only_initialize_registers_warns_at_validation(tmp_path: Path) -> None:
    """``iochost validate`` passes the plugin with a warning at the expression's line, naming
    the expression, the function and that initialize() must register it."""
    plugin = _plugin(tmp_path, "halver", HALVER, HALVER_CONFIG.format(switch=tmp_path / "absent"))
    done = subprocess.run([sys.executable, "-m", "iochost", "validate", "--json", str(plugin)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["issues"] == []
    [warning] = report["warnings"]
    assert (warning["severity"], warning["file"], warning["line"]) == ("warning", "config.yaml", HALVED_LINE), warning
    assert warning["message"].startswith("transforms[0].expression: 'halved(raw)' calls halved()"), warning
    assert "initialize() must register it" in warning["message"], warning


@pytest.mark.slow
def test_function_never_registered_fails_the_start_over_rest(daemon: Daemon, tmp_path: Path, ca: Any) -> None:
    """Not registered by initialize() either: the add answers 502 WORKER_START_FAILED naming the
    function, the expression and its config.yaml line, and leaves nothing behind. Registered by
    initialize(): the plugin runs with the validation warning in its record and the function
    in use. A restart whose initialize() no longer registers it fails the same way and says so
    in the record's last_error."""
    switch = tmp_path / "register-it"
    plugin = _plugin(tmp_path, "halver", HALVER, HALVER_CONFIG.format(switch=switch))
    with daemon.client() as api:
        refused = api.post("/plugins", json={"name": "halver", "local_path": str(plugin)})
        assert refused.status_code == 502, refused.text
        body = refused.json()
        assert body["code"] == "WORKER_START_FAILED", body
        assert body["exception"]["type"] == "UnregisteredFunctionError", body
        for part in ("halved() not registered after initialize() returned",
                     f"config.yaml:{HALVED_LINE}: transforms[0].expression: 'halved(raw)' calls halved()"):
            assert part in body["message"], body
        _nothing_left(daemon, api)

        switch.touch()
        try:
            added = api.post("/plugins", json={"name": "halver", "local_path": str(plugin)})
            assert added.status_code == 201, added.text
            [warning] = added.json()["warnings"]
            assert warning["line"] == HALVED_LINE and "initialize() must register it" in warning["message"]
            until(ca, "IOCHT:HALVER:half", 2.5)
            ca.caput("IOCHT:HALVER:raw", 9.0, wait=True, timeout=5)
            until(ca, "IOCHT:HALVER:half", 4.5)

            switch.unlink()
            restarted = api.post("/plugins/halver/restart")
            assert restarted.status_code == 502, restarted.text
            assert "halved() not registered after initialize() returned" in restarted.json()["message"]
            record = wait_until(lambda: (r := api.get("/plugins/halver").json())["last_error"] and r,
                                what="the failed start in the record")
            assert f"config.yaml:{HALVED_LINE}: transforms[0].expression: 'halved(raw)'" in record["last_error"]
        finally:
            api.delete("/plugins/halver")
        _nothing_left(daemon, api)


def _nothing_left(daemon: Daemon, api: httpx.Client) -> None:
    """No record, file, registry entry or worker of the plugin "halver"."""
    assert api.get("/plugins/halver").status_code == 404
    files, registry, _ = snapshot(daemon)
    assert [path for path in files if "halver" in path] == [] and "halver" not in (registry or "")
    assert worker_pids(daemon.data_dir, "halver") == []
