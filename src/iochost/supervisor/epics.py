"""The daemon's EPICS face: one CA search endpoint, one CA port per worker, and the
environment that makes each worker's soft IOC serve behind that endpoint.

Workers keep their CA port across restarts (``PortAllocator``), so a client's channels
reconnect to the address they knew, and the endpoint's beacon anomaly makes clients
search again at once instead of after their search backoff.
"""

from __future__ import annotations

import logging

from iochost.discovery import CAEndpoint, PortAllocator
from iochost.settings import Settings, is_loopback

log = logging.getLogger("iochost.epics")


class EpicsNetwork:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        beacon_addrs = settings.ca_beacon_addrs.split() or None
        if beacon_addrs is None and is_loopback(settings.epics_host):
            beacon_addrs = ["127.255.255.255"]
        self.endpoint = CAEndpoint(host=settings.epics_host, port=settings.ca_port,
                                   beacon_addrs=beacon_addrs, beacon_port=settings.ca_beacon_port)
        low, high = settings.worker_port_range
        self.ports = PortAllocator(low, high, host=settings.epics_host)

    async def start(self) -> None:
        await self.endpoint.start()

    async def close(self) -> None:
        await self.endpoint.close()

    def worker_env(self, owner: str) -> dict[str, str]:
        """Reserve ``owner``'s CA port and return the EPICS variables of its worker."""
        port = self.ports.reserve(owner)
        env = self.endpoint.worker_env(port)
        host = self.settings.epics_host
        env.update({
            # PVA: every worker shares the search port (pvxs fans unicast searches out to
            # the other servers on the host) and takes any free TCP port.
            "EPICS_PVAS_BROADCAST_PORT": str(self.settings.pva_port),
            "EPICS_PVAS_SERVER_PORT": "0",
            "EPICS_PVAS_INTF_ADDR_LIST": "" if host in ("0.0.0.0", "") else host,
        })
        if is_loopback(host):
            env.update({"EPICS_PVAS_BEACON_ADDR_LIST": "127.255.255.255",
                        "EPICS_PVAS_AUTO_BEACON_ADDR_LIST": "NO"})
        return env

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

    def forget(self, owner: str) -> None:
        """The plugin was deleted: its port may go to another plugin."""
        self.offline(owner)
        self.ports.forget(owner)
