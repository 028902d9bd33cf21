"""The daemon's CA endpoint: asyncio UDP I/O around the sans-I/O responder and beacons.

Restart behaviour, for the daemon's supervisor. When a worker dies its clients' TCP
circuits drop; libca parks the channels in its *disconnect governor* (a 10 s timer;
measured: the first search comes 10 s after the disconnect), then searches with a
doubling period. So:

- unregister the worker as soon as it exits (a search answered with a dead port costs
  the client a refused connection and another governor wait);
- restart it on the same port (:class:`~iochost.discovery.ports.PortAllocator` keeps it)
  and register it again at READY, which also restarts the endpoint's beacon burst;
- the worker's own rsrv beacons (same beacon list, see :meth:`CAEndpoint.worker_env`)
  restart their ID sequence and come fast after a restart: a beacon anomaly for that
  server in every client that had connected to it;
- the endpoint's own beacons (server port = the search port) get a fast burst on every
  :meth:`CAEndpoint.announce`: an anomaly in every client that has seen two of them,
  so channels searching for a long time (plugin added late, worker down for minutes)
  are searched again within about 8 s instead of up to 5 minutes.

A client that monitored a PV of a worker restarted within a few seconds reconnects
about 10 s after it lost the worker; no server can make libca faster than that (beacon
anomalies do not touch channels in the governor).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Iterable, Sequence

from iochost.discovery import netif
from iochost.discovery.beacons import BeaconSchedule
from iochost.discovery.name_table import Conflict, NameTable
from iochost.discovery.responder import SearchResponder
from iochost.epics_server_vars import CA_BEACON_PERIOD, CA_REPEATER_PORT, CA_SERVER_PORT, WILDCARD, interface_list

log = logging.getLogger(__name__)

Address = tuple[str, int]


def bind_udp(host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket on ``host:port`` with SO_REUSEADDR and SO_BROADCAST.

    SO_REUSEADDR is how CA servers on one host have always shared a search port: each
    of them receives every *broadcast*, so an IOC already bound there (e.g. on the
    wildcard address) keeps seeing broadcast searches, and a restarted daemon binds again
    at once. SO_REUSEPORT is deliberately not set: it exists to load-balance *unicast*
    datagrams over the sockets of a group, so a unicast search would reach only one of
    them (picked by a hash of the client's address), which is exactly why a unicast
    search finds only one of several IOCs on a host. Even with SO_REUSEADDR alone a
    unicast datagram goes to one socket only (the most specific bind, else the newest),
    so nothing else may bind the endpoint's address and port: workers get ports of
    their own.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setblocking(False)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def parse_addresses(entries: Iterable[str], default_port: int) -> list[Address]:
    """EPICS address-list entries, ``"host"`` or ``"host:port"``, to (host, port)."""
    addresses: list[Address] = []
    for entry in entries:
        host, _, port = entry.strip().partition(":")
        if host:
            addresses.append((host, int(port) if port else default_port))
    return addresses


class _SearchProtocol(asyncio.DatagramProtocol):
    """Feeds datagrams to the responder; replies leave through ``reply_via``."""

    def __init__(self, responder: SearchResponder, reply_via: "_SearchProtocol | None" = None) -> None:
        self.responder = responder
        self.reply_via = reply_via
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        try:
            replies = self.responder.datagram_received(data, addr)
        except Exception:  # one odd datagram must not stop the endpoint
            log.exception("CA search datagram from %s not handled", addr)
            return
        # Like rsrv, answer broadcasts from the unicast socket: the reply's source
        # address is then the interface address the client should connect to.
        out = (self.reply_via or self).transport
        if out is not None:
            for reply in replies:
                out.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for earlier datagrams (a client that went away, an unreachable
        # beacon address); nothing to do but note it.
        log.debug("CA endpoint UDP error: %s", exc)


class CAEndpoint:
    """One CA search endpoint for all workers: ``host:port`` UDP plus beacons.

    Loop-confined: call every method from the event loop that ran :meth:`start`. The
    name table underneath is thread-safe, but announcing needs the loop.
    """

    def __init__(
        self,
        host: str = WILDCARD,
        port: int = CA_SERVER_PORT,
        beacon_addrs: Sequence[str] | None = None,
        beacon_port: int = CA_REPEATER_PORT,
        beacon_period: float = CA_BEACON_PERIOD,
        ignore_addrs: Sequence[str] = (),
    ) -> None:
        """``beacon_addrs``: ``"host[:port]"`` entries; None = rsrv's automatic list (the
        broadcast address of ``host``'s interface, or of every interface for 0.0.0.0).
        ``ignore_addrs``: client addresses whose searches get no answer (from this endpoint
        and, through :meth:`worker_env`, from the workers' own rsrv)."""
        self.host = host or WILDCARD
        self.requested_port = port
        self.beacon_port = beacon_port
        self.beacon_period = beacon_period
        entries = netif.default_beacon_addresses(self.host) if beacon_addrs is None else beacon_addrs
        self.beacon_addrs: list[Address] = parse_addresses(entries, beacon_port)
        self.ignore_addrs = tuple(ignore_addrs)
        self.table = NameTable()
        self.responder = SearchResponder(self.table, ignore=frozenset(self.ignore_addrs))
        self._unicast: _SearchProtocol | None = None
        self._transports: list[asyncio.DatagramTransport] = []
        self._beacon_task: asyncio.Task[None] | None = None
        self._announce = asyncio.Event()
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The bound search port (the requested one, or the kernel's pick for 0)."""
        if self._port is None:
            raise RuntimeError("CAEndpoint is not started")
        return self._port

    async def start(self) -> None:
        """Bind the search port (and the interface's broadcast address) and start beacons."""
        loop = asyncio.get_running_loop()
        sock = bind_udp(self.host, self.requested_port)
        self._port = sock.getsockname()[1]
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _SearchProtocol(self.responder), sock=sock)
        self._unicast = protocol
        self._transports.append(transport)
        if self.host != WILDCARD:
            broadcast = netif.broadcast_of(self.host)
            if broadcast is None:
                log.warning("no broadcast address found for %s: broadcast CA searches "
                            "will not reach the endpoint", self.host)
            else:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _SearchProtocol(self.responder, reply_via=self._unicast),
                    sock=bind_udp(broadcast, self._port))
                self._transports.append(transport)
        self.beacon_addrs = [(await self._resolve(host), port) for host, port in self.beacon_addrs]
        self._beacon_task = asyncio.create_task(self._beacons(), name="ca-beacons")
        log.info("CA search endpoint on %s:%d, beacons to %s", self.host, self._port,
                 " ".join(f"{h}:{p}" for h, p in self.beacon_addrs) or "nowhere")

    async def close(self) -> None:
        """Stop beacons and release the sockets."""
        if self._beacon_task is not None:
            self._beacon_task.cancel()
            try:
                await self._beacon_task
            except asyncio.CancelledError:
                pass
            self._beacon_task = None
        for transport in self._transports:
            transport.close()
        self._transports.clear()
        self._unicast = None

    def register(self, owner: str, port: int, pv_names: Iterable[str]) -> list[Conflict]:
        """Answer searches for ``pv_names`` with ``port`` and announce the change.

        Returns the names another owner already serves (they stay with that owner).
        """
        conflicts = self.table.register(owner, port, pv_names)
        self.announce()
        return conflicts

    def unregister(self, owner: str) -> bool:
        """Stop answering for ``owner``'s names (call it as soon as the worker exits)."""
        return self.table.unregister(owner)

    def announce(self) -> None:
        """Send a beacon now and restart the fast burst: a beacon anomaly for clients."""
        self._announce.set()

    def worker_env(self, worker_port: int) -> dict[str, str]:
        """The CA server variables a worker needs to serve at ``worker_port`` behind this
        endpoint: its own TCP/UDP port, this endpoint's interface, and the same beacon
        destinations, so its rsrv beacons reach the clients this endpoint beacons to."""
        return {
            "EPICS_CAS_SERVER_PORT": str(worker_port),
            "EPICS_CAS_INTF_ADDR_LIST": interface_list(self.host),
            "EPICS_CAS_BEACON_ADDR_LIST": " ".join(f"{h}:{p}" for h, p in self.beacon_addrs),
            "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
            "EPICS_CAS_BEACON_PORT": str(self.beacon_port),
            "EPICS_CAS_BEACON_PERIOD": str(self.beacon_period),
            "EPICS_CAS_IGNORE_ADDR_LIST": " ".join(self.ignore_addrs),
        }

    async def _resolve(self, host: str) -> str:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, family=socket.AF_INET,
                                                             type=socket.SOCK_DGRAM)
        return str(infos[0][4][0])

    async def _beacons(self) -> None:
        schedule = BeaconSchedule(self.port, self.beacon_period)
        while True:
            beacon, delay = schedule.next_beacon()
            transport = self._unicast.transport if self._unicast else None
            if transport is not None:
                for address in self.beacon_addrs:
                    transport.sendto(beacon, address)
            try:
                await asyncio.wait_for(self._announce.wait(), delay)
            except asyncio.TimeoutError:
                continue
            self._announce.clear()
            schedule.restart()
