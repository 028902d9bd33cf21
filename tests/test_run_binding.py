"""``iochost run`` serves on loopback unless told otherwise, at the ports its flags name.

Run without any ``EPICS_CAS_*``/``EPICS_PVAS_*`` variable, the soft IOC's listening sockets
(``ss``) are all on 127.0.0.1 and its CA server port is ``--ca-port``; a CA client that
searches only that port reads a PV. A flag wins over the variable the user had set.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from client_harness import EpicsClient
from conftest import Processes, free_port, wait_for
from iochost.scaffold import scaffold_plugin
from iochost.standalone_epics import standalone_env

SS_ROW = re.compile(r"^(?P<proto>\S+)\s+\S+\s+\d+\s+\d+\s+(?P<local>\S+):(?P<port>\d+)\s+\S+\s+"
                    r"users:.*pid=(?P<pid>\d+),")


def listening(pid: int) -> list[tuple[str, str, int]]:
    """(protocol, local address, port) of every TCP listener and UDP socket process ``pid`` holds."""
    rows = subprocess.run(["ss", "-H", "-lnptu"], capture_output=True, text=True, check=True).stdout.splitlines()
    found = []
    for row in rows:
        match = SS_ROW.match(row)
        if match and int(match["pid"]) == pid:
            found.append((match["proto"], match["local"], int(match["port"])))
    return found


def without_epics_servers(environ: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in environ.items() if not key.startswith(("EPICS_CAS_", "EPICS_PVAS_"))}


def test_run_listens_on_loopback_at_the_flag_ports(tmp_path: Path, processes: Processes) -> None:
    scaffold_plugin("bound", "task", tmp_path / "bound")
    ca_port, pva_port = free_port(), free_port()
    pvout = tmp_path / "pvs.txt"
    log = open(tmp_path / "run.log", "wb")
    proc = processes.start([sys.executable, "-m", "iochost", "run", str(tmp_path / "bound"), "--ca-port", str(ca_port),
                            "--pva-port", str(pva_port), "--pvout", str(pvout)],
                           env=without_epics_servers(dict(os.environ)), stdout=log, stderr=subprocess.STDOUT)
    wait_for(pvout.exists, timeout=60, what="the PV list, written once the records exist")
    sockets = listening(proc.pid)
    tcp = [(address, port) for proto, address, port in sockets if proto == "tcp"]
    assert ("127.0.0.1", ca_port) in tcp, sockets
    assert all(address == "127.0.0.1" for address, _ in tcp), f"a TCP listener off loopback: {sockets}"
    assert {address for proto, address, port in sockets if port == ca_port} == {"127.0.0.1"}, sockets
    first_line = (tmp_path / "run.log").read_text().splitlines()[0]
    assert first_line == f"iochost run: CA on 127.0.0.1:{ca_port}, PVA searches on 127.0.0.1:{pva_port}"

    client_env = {**without_epics_servers(dict(os.environ)), "EPICS_CA_ADDR_LIST": f"127.0.0.1:{ca_port}",
                  "EPICS_CA_AUTO_ADDR_LIST": "NO"}
    client = EpicsClient(processes, tmp_path, client_env)
    try:
        status = next(name for name in pvout.read_text().split() if name.endswith(":STATUS"))
        assert client.get([status], timeout=15)[status] is not None
    finally:
        client.close()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0


@pytest.mark.parametrize(("environ", "flags", "expected"), [
    ({}, {}, {"EPICS_CAS_INTF_ADDR_LIST": "127.0.0.1", "EPICS_PVAS_INTF_ADDR_LIST": "127.0.0.1",
              "EPICS_CAS_BEACON_ADDR_LIST": "127.255.255.255", "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
              "EPICS_PVAS_BEACON_ADDR_LIST": "127.255.255.255", "EPICS_PVAS_AUTO_BEACON_ADDR_LIST": "NO"}),
    ({"EPICS_CAS_INTF_ADDR_LIST": "10.1.2.3"}, {}, {}),  # the user's own choice stays
    ({"EPICS_CAS_INTF_ADDR_LIST": "10.1.2.3", "EPICS_CAS_SERVER_PORT": "6000"}, {"host": "127.0.0.2", "ca_port": 7000},
     {"EPICS_CAS_INTF_ADDR_LIST": "127.0.0.2", "EPICS_PVAS_INTF_ADDR_LIST": "127.0.0.2",
      "EPICS_CAS_SERVER_PORT": "7000", "EPICS_CAS_BEACON_ADDR_LIST": "127.255.255.255",
      "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO", "EPICS_PVAS_BEACON_ADDR_LIST": "127.255.255.255",
      "EPICS_PVAS_AUTO_BEACON_ADDR_LIST": "NO"}),
    ({}, {"host": "0.0.0.0", "pva_port": 6076},  # every interface: beacons as EPICS does by itself
     {"EPICS_CAS_INTF_ADDR_LIST": "", "EPICS_PVAS_INTF_ADDR_LIST": "", "EPICS_PVAS_BROADCAST_PORT": "6076"}),
    ({"EPICS_CAS_BEACON_ADDR_LIST": "127.0.0.1"}, {},  # beacons the user directed are left alone
     {"EPICS_CAS_INTF_ADDR_LIST": "127.0.0.1", "EPICS_PVAS_INTF_ADDR_LIST": "127.0.0.1",
      "EPICS_PVAS_BEACON_ADDR_LIST": "127.255.255.255", "EPICS_PVAS_AUTO_BEACON_ADDR_LIST": "NO"}),
])
def test_a_flag_wins_a_variable_set_stays_and_loopback_is_the_default(
        environ: dict[str, str], flags: dict[str, Any], expected: dict[str, str]) -> None:
    assert standalone_env(environ, **flags) == expected
