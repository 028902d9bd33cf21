"""Where ``iochost run``'s one soft IOC serves: on loopback unless told otherwise, as ``serve``.

softioc's servers (rsrv for CA, pvxs for PVA) read their interface and ports from
``EPICS_CAS_*`` and ``EPICS_PVAS_*`` variables when softioc is imported, and left unset they
listen on every interface and beacon to every network. ``standalone_env`` returns what to set
before that import: a flag (``--epics-host``, ``--ca-port``, ``--pva-port``, the names
``serve`` uses for the same facts) wins; a variable the user already set is kept; otherwise
loopback, EPICS's default ports, and beacons kept on loopback too.
"""

from __future__ import annotations

from typing import Mapping

from iochost.epics_server_vars import (
    CA_SERVER_PORT,
    LOOPBACK_BROADCAST,
    PVA_BROADCAST_PORT,
    interface_list,
    serving_address,
)
from iochost.settings import is_loopback

DEFAULT_HOST = "127.0.0.1"


def standalone_env(environ: Mapping[str, str], host: str | None = None, ca_port: int | None = None,
                   pva_port: int | None = None) -> dict[str, str]:
    """The EPICS server variables to set (over ``environ``) for one soft IOC in this process."""
    env: dict[str, str] = {}
    interfaces = ("EPICS_CAS_INTF_ADDR_LIST", "EPICS_PVAS_INTF_ADDR_LIST")
    if host is not None:
        env.update(dict.fromkeys(interfaces, interface_list(host)))
    elif not any(environ.get(name) for name in interfaces):
        env.update(dict.fromkeys(interfaces, DEFAULT_HOST))
    if ca_port is not None:
        env["EPICS_CAS_SERVER_PORT"] = str(ca_port)
    if pva_port is not None:
        env["EPICS_PVAS_BROADCAST_PORT"] = str(pva_port)
    serving = {**environ, **env}
    for protocol in ("CAS", "PVAS"):
        address = serving_address(serving, protocol)
        beacons = f"EPICS_{protocol}_BEACON_ADDR_LIST"
        automatic = f"EPICS_{protocol}_AUTO_BEACON_ADDR_LIST"
        if is_loopback(address) and beacons not in environ and automatic not in environ:
            env.update({beacons: LOOPBACK_BROADCAST, automatic: "NO"})
    return env


def describe(environ: Mapping[str, str]) -> str:
    """Where the servers of ``environ`` listen, for the log's first line."""
    host = serving_address(environ)
    ca = environ.get("EPICS_CAS_SERVER_PORT") or environ.get("EPICS_CA_SERVER_PORT") or CA_SERVER_PORT
    pva = environ.get("EPICS_PVAS_BROADCAST_PORT") or environ.get("EPICS_PVA_BROADCAST_PORT") or PVA_BROADCAST_PORT
    return f"CA on {host}:{ca}, PVA searches on {host}:{pva}"
