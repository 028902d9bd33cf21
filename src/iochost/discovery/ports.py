"""Worker server ports (CA, PVA) from a configured range, stable per plugin."""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

from iochost.errors import ErrorCode, IochostError
from iochost.shortages import EXHAUSTED


def port_is_free(host: str, port: int, udp: bool = True) -> bool:
    """Whether a server could bind ``host:port`` for TCP (and UDP, as rsrv does) right now.

    TCP is probed with SO_REUSEADDR, as rsrv and pvxs bind it, so connections of a
    previous worker lingering in TIME_WAIT do not count as "in use"; UDP is probed
    without it, so any socket already on the port (another IOC's search socket) does.
    A probe the host cannot make (no file left for its socket: ``EXHAUSTED``) raises: that
    says nothing about the port, and the spawn asking is retried once the host has room.
    """
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((host, port))
        if udp:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind((host, port))
    except OSError as exc:
        if exc.errno in EXHAUSTED:
            raise
        return False
    return True


LINUX_EPHEMERAL = (32768, 60999)  # the kernel's default ip_local_port_range


def ephemeral_range() -> tuple[int, int]:
    """The local ports the kernel hands out to every outgoing connection and unbound UDP
    socket on the host (``net.ipv4.ip_local_port_range``). Any process may take one at any
    moment, so a worker port in this range can be lost between the allocator's probe and
    the worker's bind; rsrv then stops the worker's main thread ("CAS: No TCP server
    started") and the start times out."""
    try:
        low, high = (int(p) for p in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return LINUX_EPHEMERAL
    return low, high


def overlaps_ephemeral(low: int, high: int) -> tuple[int, int] | None:
    """The ephemeral range, when ``low..high`` shares a port with it."""
    eph_low, eph_high = ephemeral_range()
    return (eph_low, eph_high) if low <= eph_high and eph_low <= high else None


def free_port_block(size: int, host: str = "127.0.0.1", lowest: int = 10000) -> tuple[int, int]:
    """``size`` consecutive ports below the ephemeral range, every one free right now: the
    worker ranges of daemons that tests and benchmarks start next to each other."""
    top = ephemeral_range()[0] - size
    if top < lowest:
        raise RuntimeError(f"no room for {size} ports between {lowest} and the ephemeral range")
    for _ in range(100):
        base = random.randint(lowest, top)
        if all(port_is_free(host, port) for port in range(base, base + size)):
            return base, base + size - 1
    raise RuntimeError(f"no {size} free consecutive ports between {lowest} and {top + size}")


class PortAllocator:
    """Hands each owner (plugin) one port of ``start..end`` (inclusive).

    The same owner gets the same port back, also after :meth:`release`, unless another
    owner took it meanwhile: a restarted worker then serves at the address clients had
    connected to, and libca's per-server beacon history sees the restart. New owners get
    ports nobody held before, when there are any. Thread-safe. ``udp``: the server binds
    the port for UDP too (rsrv does; pvxs's TCP port is TCP only).
    """

    def __init__(self, start: int, end: int, host: str = "0.0.0.0", *, udp: bool = True,
                 what: str = "CA server") -> None:
        if not 0 < start <= end < 65536:
            raise ValueError(f"port range {start}-{end} is not within 1-65535")
        self.start = start
        self.end = end
        self.host = host
        self.udp = udp
        self.what = what
        self._lock = threading.Lock()
        self._reserved: dict[str, int] = {}  # owner -> port
        self._last: dict[str, int] = {}  # owner -> the port it had most recently

    def reserve(self, owner: str) -> int:
        """``owner``'s port; a port it already holds is returned without probing (its
        previous worker may still be exiting), a new one is probed free for TCP and UDP."""
        with self._lock:
            if owner in self._reserved:
                return self._reserved[owner]
            taken = set(self._reserved.values())
            remembered = {port for other, port in self._last.items() if other != owner}
            preferred = self._last.get(owner)
            candidates = [p for p in range(self.start, self.end + 1) if p not in taken]
            candidates.sort(key=lambda p: (p != preferred, p in remembered))
            for port in candidates:
                if port_is_free(self.host, port, self.udp):
                    self._reserved[owner] = port
                    self._last[owner] = port
                    return port
        raise IochostError(
            ErrorCode.WORKER_START_FAILED,
            f"no free {self.what} port left in {self.start}-{self.end} on {self.host}",
            port_range=f"{self.start}-{self.end}",
        )

    def release(self, owner: str) -> None:
        """Give the port back; the owner still gets it first on its next reserve."""
        with self._lock:
            self._reserved.pop(owner, None)

    def forget(self, owner: str) -> None:
        """Release and drop the owner's claim for good (the plugin was deleted)."""
        with self._lock:
            self._reserved.pop(owner, None)
            self._last.pop(owner, None)

    def port_of(self, owner: str) -> int | None:
        with self._lock:
            return self._reserved.get(owner)
