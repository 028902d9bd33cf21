"""iocmng 2.7.9, the framework iochost replaces, as a benchmark baseline: its own venv from
PyPI, and ``iocmng-server`` on loopback with free ports and a temp plugins dir.

iocmng runs every plugin inside its one server process, which calls ``iocInit`` when the
first plugin is added; after that no record can be created ("It's too late to create
records"), so a second add, even of a deleted plugin's name, fails. Every figure that needs
a fresh add therefore uses a fresh server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from benchdaemon import _die_with_parent, free_port

IOCMNG_VERSION = "2.7.9"
VENV = Path(os.environ.get("IOCHOST_BENCH_IOCMNG_VENV", "/tmp/iochost-bench-iocmng"))


def ensure_venv(venv: Path = VENV) -> Path:
    """The venv's ``iocmng-server``; the venv is (re)built first unless a complete one is there.

    ``.complete`` is written last, so an interrupted install is rebuilt, never reused.
    """
    server = venv / "bin" / "iocmng-server"
    if (venv / ".complete").exists() and server.exists():
        return server
    shutil.rmtree(venv, ignore_errors=True)
    print(f"installing iocmng[server]=={IOCMNG_VERSION} into {venv} ...", file=sys.stderr, flush=True)
    subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
    # The server extra brings FastAPI and uvicorn; without it iocmng-server cannot start.
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"iocmng[server]=={IOCMNG_VERSION}"],
                         capture_output=True, text=True)
    if pip.returncode != 0:
        raise RuntimeError(f"pip install iocmng failed:\n{pip.stderr[-3000:]}")
    (venv / ".complete").write_text(IOCMNG_VERSION + "\n")
    return server


@dataclass(frozen=True)
class IocmngPorts:
    """Ports of one server; kept across its restart."""

    api: int
    ca: int
    ca_repeater: int
    pva: int
    pva_broadcast: int

    @classmethod
    def pick(cls) -> "IocmngPorts":
        return cls(free_port(), free_port(), free_port(), free_port(), free_port())


def loopback_env(ports: IocmngPorts, plugins_dir: Path, prefix: str) -> dict[str, str]:
    """iocmng's settings plus EPICS variables that keep its CA/PVA servers and clients on loopback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EPICS_", "IOCMNG_"))}
    env.update({
        "IOCMNG_HOST": "127.0.0.1", "IOCMNG_PORT": str(ports.api), "IOCMNG_PLUGINS_DIR": str(plugins_dir),
        "IOCMNG_PREFIX": prefix, "IOCMNG_DISABLE_OPHYD": "true", "IOCMNG_LOG_LEVEL": "warning",
        "IOCMNG_ENABLE_SOFTIOC": "true",
        # CA server and client (softioc's libca, pyepics)
        "EPICS_CAS_INTF_ADDR_LIST": "127.0.0.1", "EPICS_CA_AUTO_ADDR_LIST": "NO", "EPICS_CA_ADDR_LIST": "127.0.0.1",
        "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO", "EPICS_CAS_BEACON_ADDR_LIST": "127.0.0.1",
        "EPICS_CA_SERVER_PORT": str(ports.ca), "EPICS_CA_REPEATER_PORT": str(ports.ca_repeater),
        # PVA server (pvxs QSRV in softioc) and client (p4p, iocmng's pv_client)
        "EPICS_PVAS_INTF_ADDR_LIST": "127.0.0.1", "EPICS_PVA_AUTO_ADDR_LIST": "NO", "EPICS_PVA_ADDR_LIST": "127.0.0.1",
        "EPICS_PVAS_AUTO_BEACON_ADDR_LIST": "NO", "EPICS_PVAS_BEACON_ADDR_LIST": "127.0.0.1",
        "EPICS_PVA_SERVER_PORT": str(ports.pva), "EPICS_PVAS_SERVER_PORT": str(ports.pva),
        "EPICS_PVA_BROADCAST_PORT": str(ports.pva_broadcast), "EPICS_PVAS_BROADCAST_PORT": str(ports.pva_broadcast),
    })
    return env


def start_server(server: Path, root: Path, ports: IocmngPorts, prefix: str) -> subprocess.Popen[bytes]:
    """``iocmng-server`` with plugins under root/plugins; returns at once. Main thread only (PDEATHSIG)."""
    log = open(root / "iocmng.log", "ab")  # the child holds it
    try:
        return subprocess.Popen([str(server)], env=loopback_env(ports, root / "plugins", prefix), cwd=root,
                                start_new_session=True, stdout=log, stderr=subprocess.STDOUT,
                                preexec_fn=_die_with_parent)
    finally:
        log.close()

