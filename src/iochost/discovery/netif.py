"""IPv4 interface addresses and their broadcast addresses (Linux ioctls, no dependency).

Needed because a UDP socket bound to one interface address does not receive datagrams
sent to that interface's broadcast address: like rsrv, the endpoint binds a second
socket there, and the default beacon destinations are those broadcast addresses.
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct
from dataclasses import dataclass

_SIOCGIFFLAGS = 0x8913
_SIOCGIFADDR = 0x8915
_SIOCGIFNETMASK = 0x891B
_IFF_UP = 0x1
_IFF_LOOPBACK = 0x8


@dataclass(frozen=True)
class Interface:
    name: str
    address: str
    broadcast: str
    loopback: bool


def interfaces() -> list[Interface]:
    """Every UP interface with an IPv4 address (its primary one); [] where unsupported."""
    found: list[Interface] = []
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        return found
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for name in names:
            request = struct.pack("256s", name.encode()[:15])
            try:
                flags = struct.unpack_from("H", fcntl.ioctl(sock, _SIOCGIFFLAGS, request), 16)[0]
                address = socket.inet_ntoa(fcntl.ioctl(sock, _SIOCGIFADDR, request)[20:24])
                netmask = socket.inet_ntoa(fcntl.ioctl(sock, _SIOCGIFNETMASK, request)[20:24])
            except OSError:  # no IPv4 address on this interface
                continue
            if not flags & _IFF_UP:
                continue
            network = ipaddress.IPv4Network(f"{address}/{netmask}", strict=False)
            found.append(Interface(name, address, str(network.broadcast_address),
                                   bool(flags & _IFF_LOOPBACK)))
    return found


def broadcast_of(host: str) -> str | None:
    """The broadcast address of the interface that has ``host``, if any."""
    for interface in interfaces():
        if interface.address == host:
            return interface.broadcast
    return None


def default_beacon_addresses(host: str) -> list[str]:
    """rsrv's automatic beacon list: the broadcast address of ``host``'s interface, or
    of every non-loopback interface when ``host`` is the wildcard address."""
    if host in ("", "0.0.0.0"):
        return [i.broadcast for i in interfaces() if not i.loopback]
    broadcast = broadcast_of(host)
    return [broadcast] if broadcast else []
