"""Who else receives CA name searches on the daemon's search port, before it binds there.

Two CA servers on one host and search port both get every *broadcast* search, but a
*unicast* search (``EPICS_CA_ADDR_LIST=<host>``, a gateway, a Kubernetes client) reaches
only one of them: the kernel hands a unicast datagram to one socket (the most specific
bind, else the newest). A second server on the port therefore silently takes unicast
searches from the first (``server.bind_udp`` says why SO_REUSEADDR allows it at all).

How another server is found, and why not by asking it: a CA server answers a UDP SEARCH
only for names it has. Measured on rsrv (pythonSoftIOC 4.7.2, EPICS 7): a search for an
unknown name gets no answer even with the DO_REPLY flag (rsrv sends NOT_FOUND on TCP
only), and a UDP ECHO gets none either; caproto's servers answer found names only. So a
protocol probe cannot tell a lone IOC from nothing. The kernel can: every CA server
(rsrv, caproto, this daemon) binds its search socket with address reuse, so a bind
*without* SO_REUSEADDR fails exactly while another socket could receive datagrams sent
to ``host:port`` (one on that address or on the wildcard one; a socket in another network
namespace, which no search of ours reaches, does not count). That bind takes
microseconds and sees sockets of every user. ``/proc/net/udp`` then gives the holder's
bound address and socket inode, and ``/proc/PID/fd`` the process, where this user may
look (its own processes, or all as root).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from iochost.discovery.server import bind_udp

WILDCARDS = ("0.0.0.0", "::")
COMMAND_CHARS = 160  # of a holder's command line in a message


@dataclass(frozen=True)
class UdpSocket:
    """One line of ``/proc/net/udp`` or ``udp6``: a bound socket."""

    address: str  # the bound address: "0.0.0.0", "127.0.0.1", "::", "::ffff:127.0.0.1"
    port: int
    uid: int
    inode: int

    @property
    def endpoint(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"


@dataclass(frozen=True)
class PortHolder:
    """A socket that receives datagrams sent to the search address, and its process if
    this user can see it."""

    socket: UdpSocket
    pid: int | None
    command: str | None

    def describe(self) -> str:
        """``0.0.0.0:5064 (pid 812: python -m iochost serve ...)``, or the owner's uid."""
        if self.pid is None:
            who = f"a process of uid {self.socket.uid} not visible here"  # another user's, another pid namespace
        else:
            who = f"pid {self.pid}: {self.command or '?'}"
        return f"{self.socket.endpoint} ({who})"


def describe_holders(holders: list[PortHolder]) -> str:
    """The holders for a message; [] is a socket the kernel has but /proc does not show us."""
    return "; ".join(h.describe() for h in holders) or "a socket /proc/net/udp does not list"


def _hex_address(text: str) -> str:
    """``/proc/net/udp*``'s address: 32-bit words in the host's byte order."""
    raw = b"".join(struct.pack("=I", int(text[i:i + 8], 16)) for i in range(0, len(text), 8))
    return socket.inet_ntop(socket.AF_INET6 if len(raw) == 16 else socket.AF_INET, raw)


def parse_proc_net_udp(text: str) -> list[UdpSocket]:
    """The sockets listed in a ``/proc/net/udp`` or ``/proc/net/udp6`` file's text."""
    sockets: list[UdpSocket] = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        address, _, port = fields[1].partition(":")
        try:
            sockets.append(UdpSocket(_hex_address(address), int(port, 16), int(fields[7]), int(fields[9])))
        except ValueError:
            continue
    return sockets


def receives_for(sock: UdpSocket, host: str, port: int) -> bool:
    """Whether ``sock`` is bound where a datagram to ``host:port`` (an IPv4 address, or the
    wildcard: any local address) may be delivered."""
    if sock.port != port:
        return False
    address = sock.address
    if address.startswith("::ffff:") and "." in address:
        address = address[len("::ffff:"):]
    if address in WILDCARDS or host == "0.0.0.0":
        return True
    return address == host


def udp_sockets(proc: Path = Path("/proc")) -> list[UdpSocket]:
    """Every bound UDP socket of this network namespace, IPv4 and IPv6."""
    found: list[UdpSocket] = []
    for name in ("udp", "udp6"):
        try:
            found += parse_proc_net_udp((proc / "net" / name).read_text())
        except OSError:
            continue
    return found


def socket_owners(inodes: set[int], proc: Path = Path("/proc")) -> dict[int, int]:
    """inode -> pid, for the sockets among ``inodes`` that a visible process holds."""
    wanted = {f"socket:[{inode}]": inode for inode in inodes}
    owners: dict[int, int] = {}
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            fds = os.scandir(f"{entry.path}/fd")
        except OSError:  # gone, or another user's
            continue
        with fds:
            for fd in fds:
                try:
                    inode = wanted.get(os.readlink(fd.path))
                except OSError:
                    continue
                if inode is not None:
                    owners.setdefault(inode, int(entry.name))
        if len(owners) == len(wanted):
            break
    return owners


def command_of(pid: int, proc: Path = Path("/proc")) -> str | None:
    """The process's command line, shortened for a message."""
    try:
        argv = (proc / str(pid) / "cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    except OSError:
        return None
    text = " ".join(arg.decode(errors="replace") for arg in argv)
    return text if len(text) <= COMMAND_CHARS else text[:COMMAND_CHARS - 3] + "..."


def port_taken(host: str, port: int) -> bool:
    """Whether any socket could receive datagrams sent to UDP ``host:port`` now: a bind
    without SO_REUSEADDR fails then, whatever options the holder used. OSError when
    ``host`` is no local address (the endpoint could not bind there either)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def port_shareable(host: str, port: int) -> bool:
    """Whether the endpoint's own bind (``bind_udp``: SO_REUSEADDR) would succeed now."""
    try:
        bind_udp(host, port).close()
    except OSError:
        return False
    return True


def search_port_holders(host: str, port: int, proc: Path = Path("/proc")) -> list[PortHolder] | None:
    """The sockets that receive CA searches sent to UDP ``host:port``; None when the port
    is free (the fast path: a single bind), [] when it is taken by a socket
    ``/proc/net/udp`` does not list."""
    if not port_taken(host, port):
        return None
    address = "0.0.0.0" if host in ("", "0.0.0.0") else socket.gethostbyname(host)
    sockets = [s for s in udp_sockets(proc) if receives_for(s, address, port)]
    owners = socket_owners({s.inode for s in sockets}, proc)
    holders: list[PortHolder] = []
    seen: set[tuple[str, int]] = set()
    for sock in sockets:  # rsrv binds two sockets on the address: one line per process
        pid = owners.get(sock.inode)
        key = (sock.endpoint, pid if pid is not None else -sock.inode)
        if key in seen:
            continue
        seen.add(key)
        holders.append(PortHolder(sock, pid, command_of(pid, proc) if pid is not None else None))
    return holders
