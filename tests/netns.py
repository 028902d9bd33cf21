"""Two test hosts on one machine: network namespaces joined by a veth pair.

The addresses are made inside the namespaces only, from 198.18.0.0/15 (RFC 2544, for
benchmarking: never routed), so nothing is added to the machine's own network and no
datagram can leave it. ``Link`` removes both namespaces (and with them the veth pair and
every socket in them) however the test ends.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def why_not() -> str | None:
    """Why namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    probe = f"iochost-probe-{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except OSError as exc:
        return f"cannot create a network namespace: {exc}"
    _ip("netns", "delete", probe)
    return None


class Link:
    """Namespaces ``server`` and ``client``, each with one end of a veth pair and lo up."""

    def __init__(self, tag: str, subnet: int = 0) -> None:
        self.server = f"ioh-srv-{tag}"
        self.client = f"ioh-cli-{tag}"
        self.server_addr = f"198.18.{subnet}.1"
        self.client_addr = f"198.18.{subnet}.2"
        self.broadcast = f"198.18.{subnet}.255"
        self._executors: list[ThreadPoolExecutor] = []

    def __enter__(self) -> "Link":
        try:
            for ns in (self.server, self.client):
                _ip("netns", "add", ns)
                _ip("-n", ns, "link", "set", "lo", "up")
            veth = f"vh{os.getpid() % 100000}"
            _ip("link", "add", veth + "s", "netns", self.server, "type", "veth", "peer", "name", veth + "c",
                "netns", self.client)
            for ns, dev, addr in ((self.server, veth + "s", self.server_addr),
                                  (self.client, veth + "c", self.client_addr)):
                _ip("-n", ns, "addr", "add", f"{addr}/24", "broadcast", self.broadcast, "dev", dev)
                _ip("-n", ns, "link", "set", dev, "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for executor in self._executors:
            executor.shutdown(wait=False, cancel_futures=True)
        for ns in (self.server, self.client):
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, timeout=30)

    def argv(self, ns: str, *argv: str) -> list[str]:
        """``argv`` run inside namespace ``ns``."""
        return ["ip", "netns", "exec", ns, *argv]

    def runner(self, ns: str) -> Callable[[Callable[..., T]], T]:
        """Run callables on a thread of this process that lives in ``ns`` (a network
        namespace is per thread, so sockets it opens are ``ns``'s): HTTP to a daemon
        whose API listens on that namespace's loopback, from the test itself."""
        libc = ctypes.CDLL(None, use_errno=True)
        path = f"/run/netns/{ns}"

        def enter() -> None:
            fd = os.open(path, os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns({path})")
            finally:
                os.close(fd)
            threading.current_thread().name = f"netns-{ns}"

        executor = ThreadPoolExecutor(1, thread_name_prefix=f"netns-{ns}", initializer=enter)
        self._executors.append(executor)

        def run(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
            return executor.submit(call, *args, **kwargs).result()

        return run  # type: ignore[return-value]
