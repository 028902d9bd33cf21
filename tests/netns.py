"""Test hosts on one machine: network namespaces joined by veth pairs.

The addresses are made inside the namespaces only, from 198.18.0.0/15 (RFC 2544, for
benchmarking: never routed), so nothing is added to the machine's own network and no
datagram can leave it. ``Link`` is two hosts on one subnet; ``ServiceLink`` puts a
NAT router between a client and a server, as a Kubernetes Service does. Closing removes
the namespaces (and with them the veth pairs and every socket in them) however the test
ends.
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


class Namespaces:
    """Network namespaces made for one test, each with lo up; all removed on close."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.made: list[str] = []
        self._executors: list[ThreadPoolExecutor] = []
        self._veths = 0

    def __enter__(self) -> "Namespaces":
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def build(self) -> None:
        raise NotImplementedError

    def namespace(self, role: str) -> str:
        name = f"ioh-{role}-{self.tag}"
        _ip("netns", "add", name)
        self.made.append(name)
        _ip("-n", name, "link", "set", "lo", "up")
        return name

    def wire(self, a: str, addr_a: str, b: str, addr_b: str, prefix: int = 24) -> tuple[str, str]:
        """A veth pair between namespaces ``a`` and ``b``, addressed and up; its two names."""
        self._veths += 1
        dev_a, dev_b = (f"vh{os.getpid() % 10000}{self._veths}{end}" for end in "ab")
        _ip("link", "add", dev_a, "netns", a, "type", "veth", "peer", "name", dev_b, "netns", b)
        for ns, dev, addr in ((a, dev_a, addr_a), (b, dev_b, addr_b)):
            _ip("-n", ns, "addr", "add", f"{addr}/{prefix}", "brd", "+", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
        return dev_a, dev_b

    def close(self) -> None:
        for executor in self._executors:
            executor.shutdown(wait=False, cancel_futures=True)
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, timeout=30)
        self.made.clear()

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


class Link(Namespaces):
    """Two hosts on one subnet: ``server`` and ``client``, joined by a veth pair."""

    def __init__(self, tag: str) -> None:
        super().__init__(tag)
        self.server_addr, self.client_addr = "198.18.0.1", "198.18.0.2"

    def build(self) -> None:
        self.server = self.namespace("srv")
        self.client = self.namespace("cli")
        self.wire(self.server, self.server_addr, self.client, self.client_addr)


class ServiceLink(Namespaces):
    """A client reaching a server only through a service address, as kube-proxy puts a
    Service in front of a pod: ``client`` -- ``router`` -- ``server``, where the router
    rewrites the destination ``service_addr`` to the server (DNAT), hides the client
    behind its own address (masquerade, as for externalTrafficPolicy: Cluster), and drops
    every connection to the server's own address that it did not rewrite (a pod address is
    not reachable from outside a cluster)."""

    def __init__(self, tag: str) -> None:
        super().__init__(tag)
        self.client_addr, self.router_client_addr = "198.18.1.2", "198.18.1.1"
        self.router_server_addr, self.server_addr = "198.18.2.1", "198.18.2.2"
        self.service_addr = "198.18.3.10"  # on no interface: it exists only in the router's rules

    def build(self) -> None:
        self.client = self.namespace("cli")
        self.router = self.namespace("rtr")
        self.server = self.namespace("srv")
        self.wire(self.client, self.client_addr, self.router, self.router_client_addr)
        _, to_server = self.wire(self.server, self.server_addr, self.router, self.router_server_addr)
        _ip("-n", self.client, "route", "add", "default", "via", self.router_client_addr)
        _ip("-n", self.server, "route", "add", "default", "via", self.router_server_addr)
        subprocess.run(["ip", "netns", "exec", self.router, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
                       check=True, capture_output=True, timeout=30)
        rules = f"""
table ip service {{
  chain pre {{ type nat hook prerouting priority dstnat; ip daddr {self.service_addr} dnat to {self.server_addr}; }}
  chain post {{ type nat hook postrouting priority srcnat; oifname "{to_server}" masquerade; }}
  chain forward {{
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    ct status dnat accept
  }}
}}
"""
        result = subprocess.run(["ip", "netns", "exec", self.router, "nft", "-f", "-"], input=rules,
                                capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise OSError(f"nft: {result.stderr.strip()}")


def why_no_nat() -> str | None:
    """Why a ServiceLink cannot be made here, or None when it can."""
    if shutil.which("nft") is None:
        return "nftables' `nft` is not installed (Debian package nftables)"
    return why_not()
