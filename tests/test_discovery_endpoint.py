"""The discovery endpoint with real soft IOC processes and real CA (libca) and PVA clients: unicast and broadcast
searches find every PV once, duplicates are warned of, registrations follow IOCs coming and going, monitors resume
after an IOC restart, announce beacons make a real client search again.

The sans-I/O responder and beacons are in test_discovery.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from queue import Empty, Queue
from typing import Any, Callable, Iterator

import pytest

from client_harness import EpicsClient
from conftest import Processes, free_port
from iochost.discovery import CAEndpoint
from test_discovery import parse_replies, search_datagram

FIXTURES = Path(__file__).resolve().parent / "fixtures"
DUPLICATE_WARNING = "Identical process variable names on multiple servers"


def pv_names(prefix: str, nrecords: int = 3) -> list[str]:
    return [f"{prefix}:COUNTER"] + [f"{prefix}:R{i}" for i in range(nrecords)]


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class EndpointThread:
    """A CAEndpoint on an asyncio loop of its own, driven from the synchronous tests."""

    def __init__(self, **kwargs: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.endpoint = CAEndpoint(**kwargs)
        self._await(self.endpoint.start())

    def _await(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the endpoint's loop (its methods are loop-confined)."""
        async def call() -> Any:
            return fn(*args)
        return self._await(call())

    @property
    def port(self) -> int:
        return self.endpoint.port

    def register(self, owner: str, port: int, names: list[str]) -> list[Any]:
        return self.call(self.endpoint.register, owner, port, names)

    def unregister(self, owner: str) -> bool:
        return self.call(self.endpoint.unregister, owner)

    def close(self) -> None:
        self._await(self.endpoint.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class IOC:
    """A soft IOC process (tests/fixtures/soft_ioc.py) behind the endpoint."""

    def __init__(self, processes: Processes, tmp: Path, prefix: str, port: int, env: dict[str, str]) -> None:
        self.prefix, self.port = prefix, port
        self.log = tmp / f"{prefix.replace(':', '_')}.{time.monotonic_ns()}.log"
        with open(self.log, "wb") as out:
            self.proc = processes.start([sys.executable, str(FIXTURES / "soft_ioc.py"), prefix],
                                        env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)

    @property
    def names(self) -> list[str]:
        return pv_names(self.prefix)

    def wait_ready(self, timeout: float = 20.0) -> "IOC":
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"IOC {self.prefix} exited:\n{self.log.read_text(errors='replace')}")
            return "READY" in self.log.read_text(errors="replace")
        wait_until(ready, timeout, f"IOC {self.prefix}")
        return self

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def ioc_env(endpoint: CAEndpoint, port: int, pva_broadcast_port: int) -> dict[str, str]:
    """What the daemon gives a worker: the endpoint's CA contract plus PVA ports."""
    return {**endpoint.worker_env(port),
            "EPICS_PVAS_SERVER_PORT": "0",
            "EPICS_PVAS_BROADCAST_PORT": str(pva_broadcast_port),
            "EPICS_PVAS_INTF_ADDR_LIST": "127.0.0.1"}


def start_iocs(processes: Processes, tmp: Path, endpoint: CAEndpoint, prefixes: list[str],
               pva_broadcast_port: int | None = None) -> list[IOC]:
    pva = pva_broadcast_port or free_port()
    iocs = []
    for prefix in prefixes:
        port = free_port()
        iocs.append(IOC(processes, tmp, prefix, port, ioc_env(endpoint, port, pva)))
    return [ioc.wait_ready() for ioc in iocs]


class CAClient(EpicsClient):
    """libca in its own process, searching only ``addr_list``."""

    def __init__(self, processes: Processes, tmp: Path, server_port: int, addr_list: str = "127.0.0.1") -> None:
        super().__init__(processes, tmp, {**os.environ, "EPICS_CA_ADDR_LIST": addr_list,
                                          "EPICS_CA_AUTO_ADDR_LIST": "NO", "EPICS_CA_SERVER_PORT": str(server_port)})


def fresh_get(processes: Processes, tmp: Path, server_port: int, names: list[str], timeout: float,
              addr_list: str = "127.0.0.1") -> tuple[dict[str, Any], str]:
    """A first search from a brand-new client process: values and its stderr."""
    client = CAClient(processes, tmp, server_port, addr_list)
    try:
        values = client.get(names, timeout)
        time.sleep(0.3)  # late duplicate answers would still be reported
    finally:
        client.close()
    return values, client.stderr()


# ------------------------------------------------------------ endpoint I/O, raw sockets


def test_endpoint_answers_unicast_and_broadcast_and_beacons() -> None:
    beacon_sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    beacon_sink.bind(("127.0.0.1", 0))
    beacon_port = beacon_sink.getsockname()[1]
    endpoint = EndpointThread(host="127.0.0.1", port=free_port(),
                              beacon_addrs=["127.0.0.1"], beacon_port=beacon_port)
    try:
        assert endpoint.register("a", 6001, ["A:ONE"]) == []
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            client.settimeout(2.0)
            for destination in ("127.0.0.1", "127.255.255.255"):
                client.sendto(search_datagram("A:ONE", "NOPE", cid0=3), (destination, endpoint.port))
                data, source = client.recvfrom(4096)
                # Broadcasts are answered from the unicast socket: the address to connect to.
                assert source == ("127.0.0.1", endpoint.port)
                assert [(c.cid, c.port) for c in parse_replies(data)[1:]] == [(3, 6001)]

        beacon_sink.settimeout(2.0)
        received = []
        while len(received) < 6:
            data, source = beacon_sink.recvfrom(1024)
            received.append((time.monotonic(), parse_replies(data)[0]))
        assert source == ("127.0.0.1", endpoint.port)
        ids = [b.beacon_id for _, b in received]
        assert ids == list(range(ids[0], ids[0] + 6))
        assert all(b.server_port == endpoint.port for _, b in received)

        time.sleep(0.7)  # the burst has slowed down to > 0.3 s between beacons
        while True:  # drain
            beacon_sink.settimeout(0.01)
            try:
                beacon_sink.recvfrom(1024)
            except socket.timeout:
                break
        announced = time.monotonic()
        endpoint.register("b", 6002, ["B:ONE"])  # registering announces
        beacon_sink.settimeout(1.0)
        beacon_sink.recvfrom(1024)
        beacon_sink.recvfrom(1024)
        assert time.monotonic() - announced < 0.2, "announce sends a beacon at once, the next 20 ms later"

        env = endpoint.endpoint.worker_env(6001)
        assert env == {
            "EPICS_CAS_SERVER_PORT": "6001",
            "EPICS_CAS_INTF_ADDR_LIST": "127.0.0.1",
            "EPICS_CAS_BEACON_ADDR_LIST": f"127.0.0.1:{beacon_port}",
            "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
            "EPICS_CAS_BEACON_PORT": str(beacon_port),
            "EPICS_CAS_BEACON_PERIOD": "15.0",
            "EPICS_CAS_IGNORE_ADDR_LIST": "",
        }
    finally:
        endpoint.close()
        beacon_sink.close()


# ------------------------------------------------------------ end to end, real processes


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One endpoint and four soft IOCs on ports of their own, all registered.
    Read-only for the tests that use it."""
    tmp = tmp_path_factory.mktemp("fleet")
    processes = Processes()
    endpoint = EndpointThread(host="127.0.0.1", port=free_port(), beacon_addrs=["127.0.0.1"],
                              beacon_port=free_port())
    pva_broadcast_port = free_port()
    try:
        iocs = start_iocs(processes, tmp, endpoint.endpoint, [f"FLEET:{c}" for c in "ABCD"],
                          pva_broadcast_port)
        for ioc in iocs:
            assert endpoint.register(ioc.prefix, ioc.port, ioc.names) == []
        yield {"endpoint": endpoint, "iocs": iocs, "pva_broadcast_port": pva_broadcast_port}
    finally:
        processes.stop_all()
        endpoint.close()


def all_names(iocs: list[IOC]) -> list[str]:
    return [name for ioc in iocs for name in ioc.names]


@pytest.mark.slow
def test_unicast_client_resolves_every_pv_of_every_ioc(fleet: dict[str, Any], processes: Processes,
                                                        tmp_path: Path) -> None:
    names = all_names(fleet["iocs"]) + ["FLEET:A:R1.DESC", "FLEET:D:R2.EGU"]
    values, _ = fresh_get(processes, tmp_path, fleet["endpoint"].port, names, timeout=5.0)
    assert [n for n, v in values.items() if v is None] == []
    assert values["FLEET:B:R2"] == 2.0


def test_broadcast_client_finds_each_pv_once(fleet: dict[str, Any], processes: Processes,
                                             tmp_path: Path) -> None:
    """The endpoint hears broadcasts on its broadcast-address socket only and answers each
    name once; the workers do not listen on the endpoint's port."""
    names = all_names(fleet["iocs"])
    values, stderr = fresh_get(processes, tmp_path, fleet["endpoint"].port, names, timeout=5.0,
                               addr_list="127.255.255.255")
    assert [n for n, v in values.items() if v is None] == []
    assert DUPLICATE_WARNING not in stderr, stderr


@pytest.mark.slow
def test_duplicate_warning_is_detected_when_two_servers_answer(processes: Processes,
                                                               tmp_path: Path) -> None:
    """Control for the test above: a second answerer on the search port (here a stray
    second endpoint pointing at another IOC with the same names) makes libca complain."""
    endpoint = EndpointThread(host="127.0.0.1", port=free_port(), beacon_addrs=[])
    stray = EndpointThread(host="127.0.0.1", port=endpoint.port, beacon_addrs=[])
    try:
        first, second = start_iocs(processes, tmp_path, endpoint.endpoint, ["DUP:A", "DUP:A"])
        endpoint.register("first", first.port, first.names)
        stray.register("second", second.port, second.names)
        _, stderr = fresh_get(processes, tmp_path, endpoint.port, first.names, timeout=5.0,
                              addr_list="127.255.255.255")
        assert DUPLICATE_WARNING in stderr
    finally:
        stray.close()
        endpoint.close()


def test_pva_unicast_client_resolves_every_ioc(fleet: dict[str, Any], processes: Processes,
                                               tmp_path: Path) -> None:
    """pvxs needs no endpoint: its servers share the broadcast port and forward unicast
    searches to each other on the host. Guard that it stays so."""
    names = [f"{ioc.prefix}:R1" for ioc in fleet["iocs"]]
    script = ("import json, sys\n"
              "from p4p.client.thread import Context\n"
              "ctx = Context('pva')\n"
              "values = ctx.get(sys.argv[1:], timeout=5.0, throw=False)\n"
              "print(json.dumps([None if isinstance(v, Exception) else float(v) for v in values]))\n"
              "ctx.close()\n")
    env = {**os.environ, "EPICS_PVA_ADDR_LIST": "127.0.0.1", "EPICS_PVA_AUTO_ADDR_LIST": "NO",
           "EPICS_PVA_BROADCAST_PORT": str(fleet["pva_broadcast_port"])}
    proc = processes.start([sys.executable, "-c", script, *names], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert json.loads(out) == [1.0] * len(names), err


@pytest.mark.slow
def test_registration_follows_iocs_coming_and_going(processes: Processes, tmp_path: Path) -> None:
    endpoint = EndpointThread(host="127.0.0.1", port=free_port(), beacon_addrs=["127.0.0.1"],
                              beacon_port=free_port())
    try:
        a, b, late = start_iocs(processes, tmp_path, endpoint.endpoint, ["REG:A", "REG:B", "REG:LATE"])
        endpoint.register(a.prefix, a.port, a.names)
        endpoint.register(b.prefix, b.port, b.names)
        client = CAClient(processes, tmp_path, endpoint.port)
        values = client.get(a.names + b.names, timeout=15.0)  # libca's search backs off on a loaded host
        assert None not in values.values(), values

        # A plugin added after the client started, while the client is already searching.
        pending = client.send(get=late.names, timeout=20.0)
        time.sleep(1.0)
        registered = time.monotonic()
        endpoint.register(late.prefix, late.port, late.names)
        values = client.reply(pending, 30)["values"]
        assert None not in values.values(), values
        assert time.monotonic() - registered < 5.0

        # A deleted plugin: gone for new searches, the others unaffected.
        endpoint.unregister(b.prefix)
        b.kill()
        assert set(client.get(b.names, timeout=1.0).values()) == {None}
        values, _ = fresh_get(processes, tmp_path, endpoint.port, a.names + b.names + late.names, 2.0)
        assert [n for n, v in values.items() if v is None] == b.names
        client.close()
    finally:
        endpoint.close()


@pytest.mark.slow
def test_monitor_resumes_after_ioc_restart(processes: Processes, tmp_path: Path) -> None:
    endpoint = EndpointThread(host="127.0.0.1", port=free_port(), beacon_addrs=["127.0.0.1"],
                              beacon_port=free_port())
    try:
        [ioc] = start_iocs(processes, tmp_path, endpoint.endpoint, ["RST:A"])
        endpoint.register(ioc.prefix, ioc.port, ioc.names)
        client = CAClient(processes, tmp_path, endpoint.port)
        pv = f"{ioc.prefix}:COUNTER"
        client.send(monitor=pv)
        client.wait(lambda m: m.get("update") == pv and (m["value"] or 0) >= 2, 10, "updates")

        ioc.kill()  # what the supervisor sees as a crash: unregister, restart on the same port
        endpoint.unregister(ioc.prefix)
        client.wait(lambda m: m.get("update") == pv and m["value"] is None, 10, "disconnect")
        lost = time.monotonic()
        disconnected = len(client.messages)
        env = ioc_env(endpoint.endpoint, ioc.port, free_port())
        restarted = IOC(processes, tmp_path, ioc.prefix, ioc.port, env).wait_ready()
        endpoint.register(restarted.prefix, restarted.port, restarted.names)
        # libca parks the channels of a lost circuit in its disconnect governor and
        # searches them again 10 s later; that search is then answered at once.
        client.wait(lambda m: m.get("update") == pv and m["value"] is not None, 20,
                    "updates after the restart", since=disconnected)
        assert time.monotonic() - lost < 13.0
        client.close()
    finally:
        endpoint.close()


CAPROTO_CLIENT = """
import sys, time
from caproto.threading.client import Context
pv, = Context().get_pvs(sys.argv[1])
print("searching", flush=True)
pv.wait_for_connection(timeout=60)
print("connected", flush=True)
"""


@pytest.mark.slow
def test_announce_beacons_make_a_real_client_search_again(processes: Processes, tmp_path: Path) -> None:
    """caproto's client, like libca, stops searching for names nobody answered for a while
    and searches again when beacons show a new or restarted server. Here it has retired
    its search before the PV's worker is registered; only the endpoint's announce burst
    brings it back."""
    repeater_port = free_port()
    repeater_env = {**os.environ, "EPICS_CA_REPEATER_PORT": str(repeater_port)}
    processes.start([sys.executable, "-c", "from caproto.sync.repeater import run; run('127.0.0.1')"],
                    env=repeater_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = EndpointThread(host="127.0.0.1", port=free_port(), beacon_addrs=["127.0.0.1"],
                              beacon_port=repeater_port)
    try:
        [ioc] = start_iocs(processes, tmp_path, endpoint.endpoint, ["BCN:A"])
        env = {**repeater_env, "EPICS_CA_ADDR_LIST": "127.0.0.1", "EPICS_CA_AUTO_ADDR_LIST": "NO",
               "EPICS_CA_SERVER_PORT": str(endpoint.port),
               "CAPROTO_CLIENT_SEARCH_RETIREMENT_AGE_SEC": "1",
               "CAPROTO_CLIENT_RETRY_RETIRED_SEARCHES_INTERVAL_SEC": "3600",
               "CAPROTO_CLIENT_MAX_RETRY_SEARCHES_INTERVAL_SEC": "0.25"}
        client = processes.start([sys.executable, "-c", CAPROTO_CLIENT, f"{ioc.prefix}:R1"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        lines: Queue[str] = Queue()

        def read() -> None:
            assert client.stdout is not None
            for line in client.stdout:
                lines.put(line.strip())

        threading.Thread(target=read, daemon=True).start()
        assert lines.get(timeout=15) == "searching"
        time.sleep(2.5)  # unanswered for > 1 s: retired; both beacon sources seen already

        endpoint.call(endpoint.endpoint.table.register, ioc.prefix, ioc.port, ioc.names)
        with pytest.raises(Empty):  # served now, but the client is not searching any more
            lines.get(timeout=2.0)
        announced = time.monotonic()
        endpoint.call(endpoint.endpoint.announce)
        assert lines.get(timeout=5.0) == "connected"
        assert time.monotonic() - announced < 1.5
    finally:
        endpoint.close()

