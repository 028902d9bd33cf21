"""The beamline config (``--beamline-config``): read and checked at start, given to every plugin
as ``beamline_config``, and its ``epicsConfiguration.iocs`` turned into real ophyd devices
(infn_ophyd_hal's DeviceFactory) the first time a plugin asks, reading a real soft IOC."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest

from conftest import Processes, daemon_environ, free_port, wait_for
from daemon_harness import Daemon, add
from gitrepos import plugin_repo
from sample_plugins import make_plugin

DEVICE_VALUE = 42.5

# A lone pythonSoftIOC standing in for the beamline's IOC: BLT:IO:AI1:AI_RB, what an io/ai
# device (infn_ophyd_hal.OphydAI) reads.
DEVICE_IOC = f"""
import sys, time
from softioc import builder, softioc
builder.SetDeviceName("BLT:IO:AI1")
builder.aIn("AI_RB", initial_value={DEVICE_VALUE}, PREC=2)
builder.LoadDatabase()
softioc.iocInit()
print("ready", flush=True)
while True:
    time.sleep(1)
"""

BEAMLINE = """
beamline: testline
iocDefaults:
  analog: {devgroup: io, devtype: ai}
epicsConfiguration:
  iocs:
    - name: aiioc
      template: analog        # devgroup/devtype from iocDefaults
      iocprefix: BLT
      iocroot: IO
      devices:
        - name: AI1           # BLT:IO:AI1, served above
        - name: MISSING       # BLT:IO:MISSING: nobody serves it, so its creation fails
    - name: weird
      devgroup: nosuch        # no device class: the factory gives nothing
      devtype: thing
      iocprefix: BLT:WEIRD
    - name: off
      devgroup: io
      devtype: ai
      iocprefix: BLT:OFF
      disable: true
    - name: other
      devgroup: io
      devtype: ai
      iocprefix: BLT:IO       # no iocroot: BLT:IO:AI1 again, under the key other_AI1
      devices:
        - name: AI1
"""

READER = """
    from iochost import TaskBase

    class Reader(TaskBase):
        def initialize(self):
            self.cycles = 0
            self.set_pv("BEAMLINE", str(self.beamline_config.get("beamline")))
            self.set_pv("DEVICES", ",".join(self.list_devices()))

        def execute(self):
            missing = self.get_device("MISSING")  # fails: logged, None, the plugin goes on
            weird = self.get_device("weird")
            nowhere = self.get_device("nowhere")
            device = self.get_device("AI1")
            same = device is not None and device is self.get_device("AI1")
            other = self.get_device("other_AI1")
            self.cycles += 1
            self.set_pv("FAILED", int(missing is None) + int(weird is None) + int(nowhere is None))
            self.set_pv("SAME", int(same and other is not None and other is not device))
            self.set_pv("VALUE", device.get() if device is not None else -1.0)
            self.set_pv("CYCLES", self.cycles)

        def cleanup(self):
            pass
"""

READER_CONFIG = """
    parameters: {interval: 0.2}
    pvs:
      outputs:
        BEAMLINE: {type: string}
        DEVICES: {type: string}
        VALUE: {type: float, prec: 2}
        FAILED: {type: int}
        SAME: {type: int}
        CYCLES: {type: int}
"""

DEVICE_NAMES = "AI1,MISSING,weird,other_AI1"


@pytest.fixture(scope="module")
def device_port() -> Iterator[int]:
    """The CA port of the device IOC, running for the module."""
    port = free_port()
    env = {**os.environ, "EPICS_CAS_SERVER_PORT": str(port), "EPICS_CAS_INTF_ADDR_LIST": "127.0.0.1",
           "EPICS_CAS_BEACON_ADDR_LIST": "127.0.0.1", "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
           "EPICS_PVAS_SERVER_PORT": str(free_port())}  # not the suite's, which `iochost run` takes
    procs = Processes()
    try:
        ioc = procs.start([sys.executable, "-c", DEVICE_IOC], env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert ioc.stdout is not None
        for line in ioc.stdout:  # EPICS banners first, then ours after iocInit
            if line.strip() == "ready":
                break
        else:
            raise AssertionError(f"the device IOC exited with {ioc.wait()} before iocInit")
        yield port
    finally:
        procs.stop_all()


@pytest.fixture
def beamline_file(tmp_path: Path) -> Path:
    path = tmp_path / "values.yaml"
    path.write_text(BEAMLINE)
    return path


def assert_reads_devices(ca, prefix: str, log: Callable[[], str]) -> None:
    """The plugin read AI1 through ophyd, failed MISSING and weird, and kept running."""
    wait_for(lambda: ca.caget(f"{prefix}:VALUE", timeout=1) == DEVICE_VALUE, timeout=30,
             what=f"{prefix}:VALUE read from the device IOC through ophyd")
    assert ca.caget(f"{prefix}:BEAMLINE", timeout=2) == "testline"
    assert ca.caget(f"{prefix}:DEVICES", timeout=2) == DEVICE_NAMES  # 'off' is disabled
    assert ca.caget(f"{prefix}:FAILED", timeout=2) == 3
    assert ca.caget(f"{prefix}:SAME", timeout=2) == 1  # created once, cached; other_AI1 its own
    cycles = ca.caget(f"{prefix}:CYCLES", timeout=2)
    wait_for(lambda: ca.caget(f"{prefix}:CYCLES", timeout=1) > cycles + 2, timeout=10, what="more cycles")
    text = wait_for(lambda: "device weird could not be created" in log() and log(), timeout=10,
                    what="the failures logged")
    assert "device MISSING could not be created" in text
    assert "get_device('nowhere'): no such device in the beamline config" in text
    assert text.count("device MISSING could not be created") == 1  # retried no sooner than RETRY_AFTER


@pytest.mark.slow
def test_the_daemon_gives_every_worker_the_beamline_devices(tmp_path, device_port, beamline_file, ca) -> None:
    repo = plugin_repo(tmp_path / "repos", "reader", READER, READER_CONFIG)
    daemon = Daemon(tmp_path / "data", "--prefix", "IOCHTBLD", "--beamline-config", str(beamline_file),
                    env={"EPICS_CA_ADDR_LIST": f"127.0.0.1:{device_port}"})  # the workers' CA client
    with daemon.serving():
        with daemon.client() as api:
            add(api, "reader", repo)
        plugin_log = tmp_path / "data" / "logs" / "reader.log"
        assert_reads_devices(ca, "IOCHTBLD:READER",
                             lambda: plugin_log.read_text(errors="replace") if plugin_log.exists() else "")


@pytest.mark.slow
def test_iochost_run_takes_the_beamline_config(tmp_path, processes, device_port, beamline_file, ca) -> None:
    plugin_dir = make_plugin(tmp_path, "reader", READER, READER_CONFIG)
    log_path = tmp_path / "run.log"
    with open(log_path, "wb") as log:
        processes.start([sys.executable, "-m", "iochost", "run", str(plugin_dir), "--prefix", "IOCHTBLR",
                         "--beamline-config", str(beamline_file)],
                        env={**os.environ, "EPICS_CA_ADDR_LIST": f"127.0.0.1:{device_port}"},
                        stdout=log, stderr=subprocess.STDOUT)
    assert_reads_devices(ca, "IOCHTBLR:READER", lambda: log_path.read_text(errors="replace"))


@pytest.mark.parametrize(("text", "where", "gist"), [
    ("beamline: x\nepicsConfiguration: {iocs: [\n", ":3", "not valid YAML"),
    ("- just\n- a list\n", ":1", "top level must be a mapping"),
    ("epicsConfiguration:\n  iocs:\n    - name: a\n      devices: 3\n", ":4", "iocs[0].devices must be a list"),
])
def test_a_broken_beamline_file_stops_serve_and_run_naming_file_and_line(tmp_path, text, where, gist) -> None:
    bad = tmp_path / "values.yaml"
    bad.write_text(text)
    serve = subprocess.run([sys.executable, "-m", "iochost", "serve", "--data-dir", str(tmp_path / "data")],
                           env=daemon_environ(IOCMNG_BEAMLINE_CONFIG=str(bad)),  # iocmng's variable
                           capture_output=True, text=True, timeout=60)
    assert serve.returncode == 2
    assert f"{bad}{where}: " in serve.stderr and gist in serve.stderr, serve.stderr
    plugin_dir = make_plugin(tmp_path, "reader", READER, READER_CONFIG)
    run = subprocess.run([sys.executable, "-m", "iochost", "run", str(plugin_dir), "--beamline-config", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert f"{bad}{where}: " in run.stderr and gist in run.stderr, run.stderr


def test_without_ophyd_get_device_is_none_and_said_once(monkeypatch, caplog) -> None:
    import yaml

    from iochost.sdk.devices import Devices

    monkeypatch.setitem(sys.modules, "ophyd", None)  # import ophyd raises ImportError
    devices = Devices(yaml.safe_load(BEAMLINE))
    assert devices.names() == DEVICE_NAMES.split(",")  # the index needs no ophyd
    with caplog.at_level("INFO", logger="iochost.sdk.devices"):
        assert devices.get("AI1") is None and devices.get("other_AI1") is None
    said = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(said) == 1 and "ophyd is not installed" in said[0] and "iochost[ophyd]" in said[0], said
