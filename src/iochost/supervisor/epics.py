"""The daemon's EPICS face: one CA search endpoint, one CA port and one PVA port per
worker, and the environment that makes each worker's soft IOC serve behind that endpoint.

Workers keep both ports across restarts (``PortAllocator``), so a client's channels
reconnect to the address they knew, a firewall rule or a Kubernetes Service can name
them, and the endpoint's beacon anomaly makes clients search again at once instead of
after their search backoff. The standard EPICS server variables an operator set are
already settings here (``iochost.epics_server_vars``); the ``passed`` ones reach the
workers because nothing below sets them.
"""

from __future__ import annotations

import logging
import os
from typing import Mapping

from iochost.discovery import CAEndpoint, PortAllocator
from iochost.discovery.holders import describe_holders, search_port_holders
from iochost.discovery.netif import default_beacon_addresses
from iochost.discovery.ports import overlaps_ephemeral
from iochost.epics_server_vars import LOOPBACK_BROADCAST, interface_list
from iochost.settings import Settings, is_loopback

log = logging.getLogger("iochost.epics")


def beacon_destinations(settings: Settings) -> list[str]:
    """rsrv's rule: the listed destinations, plus the interface's broadcast addresses
    unless automatic beacon addresses are off (``EPICS_CAS_AUTO_BEACON_ADDR_LIST=NO``)."""
    listed = settings.ca_beacon_addrs.split()
    if not settings.ca_auto_beacon_addrs:
        return listed
    automatic = ([LOOPBACK_BROADCAST] if is_loopback(settings.epics_host)
                 else default_beacon_addresses(settings.epics_host))
    return listed + [a for a in automatic if a not in listed]


def client_address_lists(settings: Settings, environ: Mapping[str, str]) -> dict[str, str]:
    """The CA and PVA address lists of the daemon's EPICS clients (workers' links, the PV
    gateway): the daemon's own endpoint first, so they find every plugin, then wherever the
    operator's client lists point."""
    host = settings.epics_host
    local = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return {
        "EPICS_CA_ADDR_LIST": " ".join([f"{local}:{settings.ca_port}", environ.get("EPICS_CA_ADDR_LIST", "")]).strip(),
        "EPICS_PVA_ADDR_LIST": " ".join(
            [f"{local}:{settings.pva_port}", environ.get("EPICS_PVA_ADDR_LIST", "")]).strip(),
    }


class EpicsNetwork:
    def __init__(self, settings: Settings, environ: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.environ = os.environ if environ is None else environ
        self.endpoint = CAEndpoint(host=settings.epics_host, port=settings.ca_port,
                                   beacon_addrs=beacon_destinations(settings), beacon_port=settings.ca_beacon_port,
                                   beacon_period=settings.ca_beacon_period,
                                   ignore_addrs=settings.ca_ignore_addrs.split())
        self.ports = PortAllocator(*settings.worker_port_range, host=settings.epics_host)
        self.pva_ports = PortAllocator(*settings.worker_pva_port_range, host=settings.epics_host,
                                       udp=False, what="PVA server")
        for option, (low, high) in (("--worker-ports", settings.worker_port_range),
                                    ("--worker-pva-ports", settings.worker_pva_port_range)):
            if (ephemeral := overlaps_ephemeral(low, high)) is not None:
                log.warning("%s %d-%d overlaps the ephemeral ports %d-%d (net.ipv4.ip_local_port_range): any "
                            "outgoing connection on this host may take a worker's port between its allocation "
                            "and the worker's bind, and that worker then fails its start; choose a range "
                            "outside it", option, low, high, *ephemeral)

    async def start(self) -> None:
        if self.settings.allow_shared_ca_port:  # `serve` refused a shared port without it
            self._warn_shared_search_port()
        await self.endpoint.start()

    def _warn_shared_search_port(self) -> None:
        """Say in the log who else receives searches on the port the operator chose to share."""
        host, port = self.endpoint.host, self.endpoint.requested_port
        holders = search_port_holders(host, port)
        if holders is not None:
            log.warning("CA search port UDP %s:%d is shared (--allow-shared-ca-port) with %s: a unicast "
                        "search reaches only one of the servers", host, port, describe_holders(holders))

    async def close(self) -> None:
        await self.endpoint.close()

    def worker_env(self, owner: str) -> dict[str, str]:
        """Reserve ``owner``'s CA and PVA ports and return the EPICS variables of its worker."""
        env = self.endpoint.worker_env(self.ports.reserve(owner))
        try:
            pva_port = self.pva_ports.reserve(owner)
        except BaseException:
            self.ports.release(owner)
            raise
        host = self.settings.epics_host
        env.update({
            # PVA: every worker shares the search port (pvxs fans unicast searches out to
            # the other servers on the host) and serves on its own fixed TCP port.
            "EPICS_PVAS_BROADCAST_PORT": str(self.settings.pva_port),
            "EPICS_PVAS_SERVER_PORT": str(pva_port),
            "EPICS_PVAS_INTF_ADDR_LIST": interface_list(host),
        })
        env.update(client_address_lists(self.settings, self.environ))
        if is_loopback(host) and "EPICS_PVAS_BEACON_ADDR_LIST" not in self.environ:
            env.update({"EPICS_PVAS_BEACON_ADDR_LIST": LOOPBACK_BROADCAST,
                        "EPICS_PVAS_AUTO_BEACON_ADDR_LIST": "NO"})
        return env

    def ports_of(self, owner: str) -> tuple[int | None, int | None]:
        """(CA, PVA) server ports of ``owner``'s worker, while it holds them."""
        return self.ports.port_of(owner), self.pva_ports.port_of(owner)

    def online(self, owner: str, pvs: list[str]) -> None:
        """The worker is READY: answer searches for its PVs."""
        port = self.ports.port_of(owner)
        if port is None:
            log.error("%s reported READY without a reserved CA port", owner)
            return
        for conflict in self.endpoint.register(owner, port, pvs):
            log.error("%s: PV %s is already served by %s; searches keep going there",
                      owner, conflict.name, conflict.owner)

    def offline(self, owner: str) -> None:
        """The worker is stopping or gone: no client is pointed at it any more."""
        self.endpoint.unregister(owner)
        self.ports.release(owner)
        self.pva_ports.release(owner)

    def forget(self, owner: str) -> None:
        """The plugin was deleted: its port may go to another plugin."""
        self.offline(owner)
        self.ports.forget(owner)
        self.pva_ports.forget(owner)
