"""iocmng 2.7's README examples, unchanged, under iocmng 2.7.9 and under iochost, side by side.

    .venv/bin/python bench/iocmng_compat.py [--json out.json]

Not a benchmark: a behaviour comparison, kept beside the benchmarks because it shares their
iocmng venv (see iocmngserver.ensure_venv). The README's two plugins (the Python monitor and
the declarative interlock) are read from iocmng 2.7.9's sdist, downloaded from the package index
(tests/iocmng_material.py, cached beside the iocmng venv); a standalone
soft IOC serves the interlock's DEVICE:TEMP and DEVICE:PRESSURE. Each plugin runs twice, as
``iocmng-run`` (prefix A:IOC) and as ``iochost run`` (prefix B:IOC), each with its own CA
server port on loopback. The script prints the PV names each one serves, then takes the same
steps against both (device writes, operator writes to SETPOINT, READING, CLEAR and RESET)
and prints every PV's value and alarm severity as each one shows it, with a verdict per row.

iocmng-run is given ``--pva false`` for the interlock: iocmng 2.7.9 takes the link protocol
from that flag (default true) and ignores the config's ``pva: false``; iochost reads the
config, as the README describes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))

import iocmngserver
from benchdaemon import ROOT, _die_with_parent, free_port

# The README's plugins come from the downloaded sdist; the PV names iocmng 2.7.9 serves for them
# (``iocmng-run --pvout``, prefix removed; rewritten by --record): tests/test_declarative_readme.py
# checks iochost against the same files.
sys.path.insert(0, str(ROOT / "tests"))
import iocmng_material

SDIST_CACHE = iocmngserver.VENV.with_name(iocmngserver.VENV.name + "-sdist")

SETTLE = 3.0  # seconds after a step: three cycles of the README's 1 s interval


@dataclass(frozen=True)
class Step:
    """Write ``value`` to ``pv`` ("{p}" is the plugin's prefix), wait, read ``reads``."""

    what: str
    pv: str | None
    value: Any
    reads: tuple[str, ...]


MONITOR_READS = ("SETPOINT", "READING", "ALARM", "STATUS", "MESSAGE", "ENABLE")
MONITOR_STEPS = [
    Step("started", None, None, MONITOR_READS + ("CLEAR", "RESET")),
    Step("operator writes SETPOINT 60", "{p}:SETPOINT", 60.0, MONITOR_READS),
    Step("operator writes SETPOINT 150 (above high 100)", "{p}:SETPOINT", 150.0, MONITOR_READS),
    Step("READING written 80 (> threshold 75)", "{p}:READING", 80.0, MONITOR_READS),
    Step("READING written 10", "{p}:READING", 10.0, MONITOR_READS),
    Step("ENABLE 0", "{p}:ENABLE", 0, MONITOR_READS),
    Step("ENABLE 1", "{p}:ENABLE", 1, MONITOR_READS),
]

INTERLOCK_READS = ("temp", "pressure", "avg_temp", "alarm", "MESSAGE", "STATUS", "CONN_INP")
INTERLOCK_STEPS = [
    Step("started, device at 0", None, None, INTERLOCK_READS + ("CONN_INP_NAMES", "CLEAR", "RESET")),
    Step("DEVICE:TEMP 50", "DEVICE:TEMP", 50.0, INTERLOCK_READS),
    Step("DEVICE:TEMP 70", "DEVICE:TEMP", 70.0, INTERLOCK_READS),
    Step("DEVICE:PRESSURE 3 (rule fires)", "DEVICE:PRESSURE", 3.0, INTERLOCK_READS),
    Step("DEVICE:PRESSURE 1 (condition gone)", "DEVICE:PRESSURE", 1.0, INTERLOCK_READS),
    Step("operator writes CLEAR 1", "{p}:CLEAR", 1, INTERLOCK_READS + ("CLEAR",)),
    Step("DEVICE:PRESSURE 5 (fires again)", "DEVICE:PRESSURE", 5.0, INTERLOCK_READS),
    Step("DEVICE:PRESSURE 0, operator writes RESET 1", "DEVICE:PRESSURE", 0.0, ()),
    Step("  (RESET)", "{p}:RESET", 1, INTERLOCK_READS + ("RESET",)),
    Step("device IOC stopped", "STOP-DEVICE", None, INTERLOCK_READS),
    Step("device IOC back (at 0)", "START-DEVICE", None, INTERLOCK_READS),
]

# Not a README example: a plugin written for this comparison, on the interlock's device, for
# three behaviours iochost takes from iocmng 2.7.9 (tests/test_declarative_iocmng_sync.py):
# ENABLE=0 pauses the link monitors, ENABLE=1 opens them again (the device's value then joins
# the ring buffer once), RESET reads every input even paused; wired outputs show their device
# PV (sp by monitor, spp by poll); the rule's message_pv (note) is INVALID while temp's link
# is down.
SYNC_PLUGIN = iocmng_material.PluginExample(
    module_file="sync_check.py", class_name="SyncCheck", base="DeclarativeTask",
    code="from iocmng import DeclarativeTask\n\n\nclass SyncCheck(DeclarativeTask):\n    pass\n",
    config="""\
parameters: {mode: continuous, interval: 0.5, pva: false, timeout: 1.0}
arguments:
  inputs:
    temp: {type: float, value: 0.0, link: "DEVICE:TEMP", link_mode: monitor, buffer_size: 8}
    pressure: {type: float, value: 0.0, link: "DEVICE:PRESSURE"}
  outputs:
    recent: {type: float, value: 0.0}
    sp: {type: float, value: 0.0, link: "DEVICE:PRESSURE", link_mode: monitor}
    spp: {type: float, value: 0.0, link: "DEVICE:PRESSURE"}
    note: {type: string, value: ""}
    hot: {type: bool, value: 0}
transforms:
  - {output: recent, expression: "sum_of(last(temp_buf, 2))"}
rule_defaults: {hot: 0}
rules:
  - {id: HOT, condition: "temp > 50", message: "Hot", message_pv: note, outputs: {hot: 1}}
""", section="(written for this comparison)", code_line=0, config_line=0)
# recent: the sum of the buffer's last two (iocmng's buffer starts with one or two reads of 0,
# as pyepics delivers the new monitor's first update or not: the sum is 0 either way)
SYNC_READS = ("temp", "recent", "sp", "spp", "hot", "note.SEVR", "CONN_INP")
SYNC_STEPS = [
    Step("started, device at 0", None, None, SYNC_READS),
    Step("DEVICE:PRESSURE 4 (read back by sp and spp)", "DEVICE:PRESSURE", 4.0, ("pressure", "sp", "spp")),
    Step("operator writes ENABLE 0", "{p}:ENABLE", 0, ("ENABLE",)),
    Step("  paused: DEVICE:TEMP 10", "DEVICE:TEMP", 10.0, ()),
    Step("  paused: DEVICE:TEMP 30", "DEVICE:TEMP", 30.0, ("temp", "recent")),
    Step("operator writes ENABLE 1", "{p}:ENABLE", 1, ("temp", "recent")),
    Step("DEVICE:TEMP 60 (HOT writes note)", "DEVICE:TEMP", 60.0, ("temp", "recent", "hot", "note.SEVR")),
    Step("operator writes ENABLE 0 again", "{p}:ENABLE", 0, ("ENABLE",)),
    Step("  paused: DEVICE:PRESSURE 6", "DEVICE:PRESSURE", 6.0, ("pressure",)),
    Step("  paused: operator writes RESET 1 (reads every input)", "{p}:RESET", 1, ("temp", "pressure")),
    Step("operator writes ENABLE 1 again", "{p}:ENABLE", 1, ("pressure",)),
    Step("device IOC stopped", "STOP-DEVICE", None, ("hot", "note.SEVR")),
    Step("device IOC back (at 0)", "START-DEVICE", None, ("temp", "pressure", "sp", "spp", "hot", "note.SEVR")),
]


def readme_example(name: str) -> iocmng_material.PluginExample:
    """The README plugin whose module is ``name``, from the sdist (downloaded once into SDIST_CACHE)."""
    return iocmng_material.example_named(iocmng_material.readme_examples(SDIST_CACHE), name)


def loopback_env(server_port: int, search_ports: list[int]) -> dict[str, str]:
    """CA and PVA on loopback only; this process serves CA on ``server_port``, searches all."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EPICS_", "IOCMNG_", "IOCHOST_"))}
    env.update({
        "EPICS_CA_AUTO_ADDR_LIST": "NO", "EPICS_CA_ADDR_LIST": " ".join(f"127.0.0.1:{p}" for p in search_ports),
        "EPICS_CAS_INTF_ADDR_LIST": "127.0.0.1", "EPICS_CAS_SERVER_PORT": str(server_port),
        "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO", "EPICS_CAS_BEACON_ADDR_LIST": "127.0.0.1",
        "EPICS_CA_REPEATER_PORT": str(free_port()),
        "EPICS_PVA_AUTO_ADDR_LIST": "NO", "EPICS_PVA_ADDR_LIST": "127.0.0.1",
        "EPICS_PVAS_INTF_ADDR_LIST": "127.0.0.1", "EPICS_PVAS_SERVER_PORT": str(free_port()),
        "EPICS_PVAS_BROADCAST_PORT": str(free_port()), "EPICS_PVA_BROADCAST_PORT": str(free_port()),
        "IOCMNG_DISABLE_OPHYD": "true",
    })
    return env


class Processes:
    """Everything started here, stopped by process group on exit, whatever happens."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def __enter__(self) -> "Processes":
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            self.stop(proc)


class Client:
    """caproto's threading client over every port in play (its address list is read at creation)."""

    def __init__(self, ports: list[int]) -> None:
        os.environ.update({"EPICS_CA_AUTO_ADDR_LIST": "NO",
                           "EPICS_CA_ADDR_LIST": " ".join(f"127.0.0.1:{p}" for p in ports)})
        from caproto.threading.client import Context

        self.ctx = Context()
        self.pvs: dict[str, Any] = {}

    def _pv(self, name: str) -> Any:
        if name not in self.pvs:
            self.pvs[name] = self.ctx.get_pvs(name, timeout=2)[0]
        return self.pvs[name]

    def read(self, name: str) -> str:
        """``value [SEVERITY]`` as an operator's panel would show it, or why it cannot."""
        try:
            reading = self._pv(name).read(data_type="time", timeout=2)
        except Exception as exc:  # noqa: BLE001 - the row says what went wrong
            return f"({type(exc).__name__})"
        data = [x.decode() if isinstance(x, bytes) else x.item() for x in reading.data]
        value: Any = data[0] if len(data) == 1 else list(data)
        if isinstance(value, float):
            value = round(value, 3)
        severity = ("", " MINOR", " MAJOR", " INVALID")[int(reading.metadata.severity)]
        return f"{value!r}{severity}"

    def write(self, name: str, value: Any) -> None:
        self._pv(name).write([value], wait=True, timeout=5)


def wait_serving(client: Client, pv: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited:\n{log.read_text()[-3000:]}")
        if not client.read(pv).startswith("("):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{pv} never answered:\n{log.read_text()[-3000:]}")


def wait_reading(client: Client, pv: str, expected: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while client.read(pv) != expected:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{pv} never read {expected} (last: {client.read(pv)})")
        time.sleep(0.2)


def device_ioc(processes: Processes, env: dict[str, str], scratch: Path) -> subprocess.Popen[bytes]:
    return processes.start([sys.executable, str(ROOT / "tests" / "fixtures" / "device_ioc.py"),
                            "DEVICE", "TEMP", "PRESSURE"], env, scratch, scratch / "device.log")


def compare(example: iocmng_material.PluginExample, steps: list[Step], iocmng_bin: Path, scratch: Path,
            pva_flag: str) -> dict[str, Any]:
    """One README plugin under both: PV names, then every step's reads as (iocmng, iochost)."""
    ports = {"device": free_port(), "iocmng": free_port(), "iochost": free_port()}
    search = list(ports.values())
    name = module = example.name
    plugin = example.write(scratch / name)
    pvout = scratch / f"{name}-iocmng.pvs"
    result: dict[str, Any] = {"plugin": name, "steps": []}
    client = Client(search)
    with Processes() as processes:
        device = device_ioc(processes, loopback_env(ports["device"], search), scratch)
        iocmng_log, iochost_log = scratch / f"{name}-iocmng.log", scratch / f"{name}-iochost.log"
        a = processes.start([str(iocmng_bin / "iocmng-run"), "-m", module, "--config", "config.yaml",
                             "--prefix", "A:IOC", "--name", name, "--pva", pva_flag, "--pvout", str(pvout)],
                            loopback_env(ports["iocmng"], search), plugin, iocmng_log)
        b = processes.start([str(ROOT / ".venv" / "bin" / "iochost"), "run", str(plugin), "--prefix", "B",
                             "--name", "ioc"], loopback_env(ports["iochost"], search), plugin, iochost_log)
        wait_serving(client, "A:IOC:STATUS", a, iocmng_log)
        wait_serving(client, "B:IOC:STATUS", b, iochost_log)
        time.sleep(SETTLE)
        iocmng_pvs = sorted(line.split(":", 2)[2] for line in pvout.read_text().split())
        iochost_pvs = sorted(pv.split(":", 2)[2] for pv in validate_pvs(plugin))
        result["pvs"] = {"iocmng": iocmng_pvs, "iochost": iochost_pvs}
        for step in steps:
            if step.pv == "STOP-DEVICE":
                processes.stop(device)
            elif step.pv == "START-DEVICE":
                device = device_ioc(processes, loopback_env(ports["device"], search), scratch)
                for prefix in ("A:IOC", "B:IOC"):  # CA's search backoff: reconnects take 2-10 s
                    wait_reading(client, f"{prefix}:CONN_INP", "[1, 1]", timeout=30)
            elif step.pv is not None and "{p}" in step.pv:
                for prefix in ("A:IOC", "B:IOC"):
                    client.write(step.pv.format(p=prefix), step.value)
            elif step.pv is not None:
                client.write(step.pv, step.value)
            if step.pv is not None:
                time.sleep(SETTLE if step.pv != "STOP-DEVICE" else SETTLE + 5)
            rows = [{"pv": pv, "iocmng": client.read(f"A:IOC:{pv}"), "iochost": client.read(f"B:IOC:{pv}")}
                    for pv in step.reads]
            result["steps"].append({"what": step.what, "rows": rows})
    client.ctx.disconnect()
    return result


def validate_pvs(plugin: Path) -> list[str]:
    """iochost's PV names for the plugin, from ``iochost validate --json`` (as B:IOC)."""
    out = subprocess.run([str(ROOT / ".venv" / "bin" / "iochost"), "validate", "--json", "--prefix", "B",
                          "--name", "ioc", str(plugin)], capture_output=True, text=True, check=True)
    return list(json.loads(out.stdout)["plugin"]["pvs"])


def table(result: dict[str, Any]) -> Iterator[str]:
    pvs = result["pvs"]
    yield f"### {result['plugin']}"
    yield ""
    yield f"PVs under iocmng 2.7.9 ({len(pvs['iocmng'])}): {' '.join(pvs['iocmng'])}"
    yield f"PVs under iochost ({len(pvs['iochost'])}): {' '.join(pvs['iochost'])}"
    yield "same PV names: " + ("yes" if pvs["iocmng"] == pvs["iochost"] else
                               f"no: only iocmng {sorted(set(pvs['iocmng']) - set(pvs['iochost']))}, "
                               f"only iochost {sorted(set(pvs['iochost']) - set(pvs['iocmng']))}")
    yield ""
    yield "| step | PV | iocmng 2.7.9 | iochost | same |"
    yield "|---|---|---|---|---|"
    for step in result["steps"]:
        for i, row in enumerate(step["rows"]):
            same = "yes" if row["iocmng"] == row["iochost"] else "**no**"
            yield f"| {step['what'] if i == 0 else ''} | {row['pv']} | {row['iocmng']} | {row['iochost']} | {same} |"
    yield ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--record", action="store_true",
                        help=f"rewrite {iocmng_material.RECORDED_PVS.relative_to(ROOT)}/*.pvs from this iocmng run")
    args = parser.parse_args()
    iocmng_bin = iocmngserver.ensure_venv().parent
    results = []
    with tempfile.TemporaryDirectory(prefix="iochost-compat-") as tmp:
        scratch = Path(tmp)
        results.append(compare(readme_example("my_monitor"), MONITOR_STEPS, iocmng_bin, scratch, "true"))
        results.append(compare(readme_example("my_interlock"), INTERLOCK_STEPS, iocmng_bin, scratch, "false"))
        sync = compare(SYNC_PLUGIN, SYNC_STEPS, iocmng_bin, scratch, "false")  # no recorded PV list
    for result in results:
        recorded = iocmng_material.RECORDED_PVS / f"{result['plugin']}.pvs"
        if args.record:
            recorded.write_text("\n".join(result["pvs"]["iocmng"]) + "\n")
        elif not recorded.exists() or recorded.read_text().split() != result["pvs"]["iocmng"]:
            print(f"warning: {recorded} differs from this run's iocmng PVs (--record rewrites it)", file=sys.stderr)
    results.append(sync)
    for result in results:
        print("\n".join(table(result)))
    differing = sum(row["iocmng"] != row["iochost"] for r in results for s in r["steps"] for row in s["rows"])
    print(f"{differing} of {sum(len(s['rows']) for r in results for s in r['steps'])} readings differ")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
