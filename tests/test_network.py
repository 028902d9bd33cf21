"""Off loopback: an operator's client on another host works every plugin's PVs.

Two network namespaces joined by a veth pair stand for the IOC host and an operator's
host (tests/netns.py). The daemon runs in one, bound to its side of the link, on the
standard EPICS ports (a new namespace has no other sockets, so they are free). From the
other, real clients (libca and pvxs, tests/fixtures/epics_client.py) find, read, write and
monitor PVs over CA and PVA: first with a stock EPICS configuration (no EPICS variable
at all: automatic address lists, so broadcasts on the link), then given only the
daemon's address. Along the way a plugin is added after the client started (its monitor
was waiting for it), one worker is killed and restarted (the monitors resume), and one
plugin is deleted (gone for the client). Last, the Helm chart's Service mode: the client
reaches the daemon only through a NAT router standing in for kube-proxy.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

import netns
from client_harness import EpicsClient
from conftest import Processes, daemon_environ, wait_for
from gitrepos import plugin_repo
from sample_plugins import TICKER, TICKER_CONFIG

WHY_NOT, WHY_NO_NAT = netns.why_not(), netns.why_no_nat()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(WHY_NOT is not None, reason=str(WHY_NOT))]

PREFIX = "NET"
API = "http://127.0.0.1:8080/api/v1"  # inside the server namespace


def stock_environ() -> dict[str, str]:
    """A client host's environment with no EPICS variable set."""
    return {k: v for k, v in os.environ.items() if not k.startswith("EPICS_")}


class NetworkedDaemon:
    """``iochost serve`` inside the link's server namespace, its API reached from a thread
    of this process that lives there too."""

    def __init__(self, link: netns.Link | netns.ServiceLink, data_dir: Path, epics_host: str) -> None:
        self.link = link
        self.data_dir = data_dir
        self.log_path = data_dir.parent / "daemon.log"
        self.http = link.runner(link.server)
        env = {k: v for k, v in daemon_environ().items() if not k.startswith("EPICS_")}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                link.argv(link.server, sys.executable, "-m", "iochost", "serve", "--data-dir", str(data_dir),
                          "--prefix", PREFIX, "--epics-host", epics_host, "--allow-local-sources",
                          "--log-format", "json", "--grace-period", "3"),
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self._live, 60, what="the daemon's API in its namespace", sleep=time.sleep)

    def _live(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"iochost serve exited with {self.proc.returncode}:\n{self.log()}")
        try:
            return self.request("GET", "/health/live", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        kwargs.setdefault("timeout", 90)
        return self.http(httpx.request, method, API + path, **kwargs)

    def add(self, name: str, git_url: str) -> dict[str, Any]:
        response = self.request("POST", "/plugins", json={"name": name, "git_url": git_url})
        assert response.status_code == 201, response.text
        return response.json()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """SIGTERM as an operator would (exit 0); whatever happened, nothing is left."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                assert self.proc.wait(60) == 0, self.log()[-3000:]
        finally:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)


@pytest.fixture
def link(request: pytest.FixtureRequest) -> Iterator[netns.Link]:
    with netns.Link(f"{os.getpid() % 10000}-{request.node.callspec.id}") as made:
        yield made


@pytest.fixture
def daemon(link: netns.Link, tmp_path: Path) -> Iterator[NetworkedDaemon]:
    served = NetworkedDaemon(link, tmp_path / "data", epics_host=link.server_addr)
    try:
        yield served
    finally:
        served.stop()


CA_PORTS, PVA_PORTS = range(5100, 5300), range(5300, 5500)  # the defaults: --worker-ports, --worker-pva-ports


def listening_ports(link: netns.Link, pid: int) -> list[int]:
    """The TCP ports process ``pid`` listens on in the server namespace, sorted."""
    out = subprocess.run(link.argv(link.server, "ss", "-Hltnp"), capture_output=True, text=True,
                         timeout=30, check=True).stdout
    return sorted({int(line.split()[3].rsplit(":", 1)[1]) for line in out.splitlines() if f"pid={pid}," in line})


def pv(plugin: str, name: str) -> str:
    return f"{PREFIX}:{plugin.upper()}:{name}"


@pytest.mark.parametrize("client_config", ["stock", "daemon-address-only"])
def test_a_client_on_another_host_works_every_plugin_over_ca_and_pva(
        client_config: str, link: netns.Link, daemon: NetworkedDaemon, processes: Processes, tmp_path: Path) -> None:
    env = stock_environ()
    if client_config == "daemon-address-only":
        env.update(EPICS_CA_ADDR_LIST=link.server_addr, EPICS_CA_AUTO_ADDR_LIST="NO",
                   EPICS_PVA_ADDR_LIST=link.server_addr, EPICS_PVA_AUTO_ADDR_LIST="NO")
    repo = plugin_repo(tmp_path / "repos", "ticker", TICKER, TICKER_CONFIG)
    alpha = daemon.add("alpha", repo.url)
    assert {pv("alpha", "GAIN"), pv("alpha", "VALUE"), pv("alpha", "STATUS")} <= set(alpha["pvs"])

    client = EpicsClient(processes, tmp_path, env, argv_prefix=link.argv(link.client))
    try:
        # every PV of the plugin answers over both protocols, with the same values
        for proto_pva in (False, True):
            values = client.get(alpha["pvs"], timeout=10, pva=proto_pva)
            assert [n for n, v in values.items() if v is None] == [], (proto_pva, values)
            assert values[pv("alpha", "GAIN")] == 2.5
        # a write over one protocol is read back over the other
        assert client.put({pv("alpha", "GAIN"): 4.25}) == {pv("alpha", "GAIN"): True}
        assert client.get([pv("alpha", "GAIN")], pva=True) == {pv("alpha", "GAIN"): 4.25}
        assert client.put({pv("alpha", "GAIN"): 1.5}, pva=True) == {pv("alpha", "GAIN"): True}
        assert client.get([pv("alpha", "GAIN")]) == {pv("alpha", "GAIN"): 1.5}

        # monitors: alpha's counter ticks; beta's is asked for before beta exists
        for proto_pva in (False, True):
            client.monitor(pv("alpha", "VALUE"), pva=proto_pva)
            client.monitor(pv("beta", "VALUE"), pva=proto_pva)
        for proto_pva in (False, True):
            first = client.update(pv("alpha", "VALUE"), proto_pva, lambda v: v is not None, 15, "alpha ticking")
            client.update(pv("alpha", "VALUE"), proto_pva, lambda v, f=first: v is not None and v > f["value"],
                          15, "alpha's next tick")
        added = client.mark()
        beta = daemon.add("beta", repo.url)
        for proto_pva in (False, True):
            client.update(pv("beta", "VALUE"), proto_pva, lambda v: v is not None, 30,
                          f"the monitor of beta, added after the client started ({'PVA' if proto_pva else 'CA'})",
                          since=added)
        values = client.get(beta["pvs"], timeout=10) | client.get(beta["pvs"], timeout=10, pva=True)
        assert [n for n, v in values.items() if v is None] == []

        # alpha's worker dies and is restarted: both monitors see it go and come back
        alpha_pid = daemon.request("GET", "/plugins/alpha").json()["pid"]
        assert alpha_pid
        ports = listening_ports(link, alpha_pid)
        assert len(ports) == 2 and ports[0] in CA_PORTS and ports[1] in PVA_PORTS, ports
        killed = client.mark()
        os.kill(alpha_pid, signal.SIGKILL)
        gone = {proto_pva: client.update(pv("alpha", "VALUE"), proto_pva, lambda v: v is None, 15,
                                         "alpha's disconnect", since=killed)["t"] for proto_pva in (False, True)}
        wait_for(lambda: (r := daemon.request("GET", "/plugins/alpha").json())["state"] == "running"
                 and r["pid"] != alpha_pid, 30, what="alpha restarted", sleep=time.sleep)
        assert listening_ports(link, daemon.request("GET", "/plugins/alpha").json()["pid"]) == ports  # kept
        for proto_pva in (False, True):
            client.wait(lambda m, p=proto_pva: m.get("update") == pv("alpha", "VALUE") and bool(m.get("pva")) == p
                        and m["value"] is not None and m["t"] > gone[p], 40,
                        f"alpha's monitor resuming ({'PVA' if proto_pva else 'CA'})", since=killed)

        # beta is deleted: its monitors disconnect and no one answers for its PVs any more
        deleted = client.mark()
        assert daemon.request("DELETE", "/plugins/beta").status_code == 200
        for proto_pva in (False, True):
            client.update(pv("beta", "VALUE"), proto_pva, lambda v: v is None, 15, "beta's disconnect",
                          since=deleted)
            assert client.get([pv("beta", "VALUE")], timeout=3, pva=proto_pva) == {pv("beta", "VALUE"): None}
    finally:
        client.close()


@pytest.mark.skipif(WHY_NO_NAT is not None, reason=str(WHY_NO_NAT))
def test_through_a_service_address_behind_nat(processes: Processes, tmp_path: Path) -> None:
    """The chart's Service mode: the daemon binds 0.0.0.0 in its pod; the client knows only
    the Service's address, which a router rewrites to the pod's (DNAT, and masquerade, as
    kube-proxy does), and cannot reach the pod's own address at all. CA search answers
    carry no address and PVA's name none the client cannot use, so both protocols work
    through the one address."""
    with netns.ServiceLink(f"{os.getpid() % 10000}-svc") as link:
        daemon = NetworkedDaemon(link, tmp_path / "data", epics_host="0.0.0.0")
        try:
            repo = plugin_repo(tmp_path / "repos", "ticker", TICKER, TICKER_CONFIG)
            alpha = daemon.add("alpha", repo.url)
            env = stock_environ()
            env.update(EPICS_CA_ADDR_LIST=link.service_addr, EPICS_CA_AUTO_ADDR_LIST="NO",
                       EPICS_PVA_ADDR_LIST=link.service_addr, EPICS_PVA_AUTO_ADDR_LIST="NO")
            client = EpicsClient(processes, tmp_path, env, argv_prefix=link.argv(link.client))
            try:
                for proto_pva in (False, True):
                    values = client.get(alpha["pvs"], timeout=10, pva=proto_pva)
                    assert [n for n, v in values.items() if v is None] == [], (proto_pva, values)
                    assert client.put({pv("alpha", "GAIN"): 3.0 + proto_pva}, pva=proto_pva) == \
                        {pv("alpha", "GAIN"): True}
                    got = client.get([pv("alpha", "GAIN")], pva=not proto_pva)
                    assert got == {pv("alpha", "GAIN"): 3.0 + proto_pva}
                    client.monitor(pv("beta", "VALUE"), pva=proto_pva)
                added = client.mark()
                daemon.add("beta", repo.url)  # found on the client's next search: no beacon crosses NAT
                for proto_pva in (False, True):
                    client.update(pv("beta", "VALUE"), proto_pva, lambda v: v is not None, 60,
                                  f"beta, added later, through the Service ({'PVA' if proto_pva else 'CA'})",
                                  since=added)
            finally:
                client.close()
            # control: the pod's own address is out of the client's reach, as outside a cluster
            direct = {**env, "EPICS_CA_ADDR_LIST": link.server_addr, "EPICS_PVA_ADDR_LIST": link.server_addr}
            blocked = EpicsClient(processes, tmp_path, direct, argv_prefix=link.argv(link.client))
            try:
                for proto_pva in (False, True):
                    assert blocked.get([pv("alpha", "GAIN")], timeout=3, pva=proto_pva) == {pv("alpha", "GAIN"): None}
            finally:
                blocked.close()
        finally:
            daemon.stop()
