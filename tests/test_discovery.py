"""iochost.discovery: the sans-I/O responder and beacons byte for byte, then the endpoint
with real soft IOC processes and real CA (libca) and PVA (pvxs) clients in separate
processes, all on loopback."""

from __future__ import annotations

import asyncio
import json
import logging
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

import caproto
import pytest

from client_harness import EpicsClient
from conftest import Processes, free_port
from iochost.discovery import BeaconSchedule, CAEndpoint, NameTable, PortAllocator, SearchResponder
from iochost.discovery.beacons import FIRST_DELAY
from iochost.discovery.ports import ephemeral_range, free_port_block, overlaps_ephemeral, port_is_free
from iochost.discovery.responder import MAX_DATAGRAM
from iochost.errors import IochostError
from iochost.settings import Settings
from iochost.supervisor.epics import EpicsNetwork

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CLIENT = ("127.0.0.1", 40000)
DUPLICATE_WARNING = "Identical process variable names on multiple servers"


# --------------------------------------------------------------------------- helpers


def search_datagram(*names: str, cid0: int = 1, sequence: int = 7, reply: int = caproto.NO_REPLY,
                    version: int = 13) -> bytes:
    """What libca sends: VERSION (with its datagram sequence number) + SEARCHes."""
    hello = caproto.VersionRequest(0, version)
    hello.header.data_type = 1  # sequenceNoIsValid
    hello.header.parameter1 = sequence
    searches = [caproto.SearchRequest(name, cid0 + i, version, reply=reply) for i, name in enumerate(names)]
    return bytes(hello) + b"".join(bytes(s) for s in searches)


def parse_replies(datagram: bytes) -> list[Any]:
    return caproto.Broadcaster(caproto.CLIENT).recv(datagram, ("127.0.0.1", 5064))


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
    pva = pva_broadcast_port or free_port(socket.SOCK_DGRAM)
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


# ------------------------------------------------------------ sans-I/O: name table


def test_name_table_first_owner_keeps_duplicates_and_next_takes_over() -> None:
    table = NameTable()
    assert table.register("a", 5100, ["X:ONE", "X:TWO"]) == []
    conflicts = table.register("b", 5101, ["X:TWO", "X:THREE"])
    assert [(c.name, c.owner, c.rejected) for c in conflicts] == [("X:TWO", "a", "b")]
    assert table.lookup("X:TWO").port == 5100 and table.lookup("X:THREE").port == 5101
    assert table.unregister("a") is True and table.unregister("a") is False
    assert table.lookup("X:ONE") is None
    assert table.lookup("X:TWO").owner == "b"  # the remaining claimant serves it now
    assert len(table) == 2


def test_name_table_reregister_replaces_names_and_keeps_place() -> None:
    table = NameTable()
    table.register("a", 5100, ["X:ONE", "X:TWO"])
    table.register("b", 5101, ["X:TWO"])
    assert table.register("a", 5102, ["X:TWO", "X:NEW"]) == []  # restarted, new port, new set
    assert table.lookup("X:TWO") == table.lookup("X:NEW")
    assert table.lookup("X:TWO").port == 5102
    assert table.lookup("X:ONE") is None
    assert table.owners() == {"a": 5102, "b": 5101}


def test_name_table_resolves_fields_and_filters_by_record() -> None:
    table = NameTable()
    table.register("a", 5100, ["X:ONE"])
    for name in ("X:ONE", "X:ONE.VAL", "X:ONE.DESC", "X:ONE.NAME$", 'X:ONE.{"dbnd":{"abs":1}}'):
        assert table.lookup(name).owner == "a", name
    for name in ("X:ON", "X:ONEX", "X", ".X:ONE", ""):
        assert table.lookup(name) is None, name


# ------------------------------------------------------------ sans-I/O: responder


@pytest.fixture
def responder() -> SearchResponder:
    table = NameTable()
    table.register("a", 5101, ["A:ONE", "A:TWO"])
    table.register("b", 5102, ["B:ONE"])
    return SearchResponder(table)


def test_responder_answers_like_rsrv(responder: SearchResponder) -> None:
    replies = responder.datagram_received(search_datagram("A:ONE", cid0=42, sequence=99), CLIENT)
    assert len(replies) == 1
    version, found = parse_replies(replies[0])
    assert isinstance(version, caproto.VersionResponse)
    assert (version.version, version.header.data_type, version.header.parameter1) == (13, 1, 99)
    assert isinstance(found, caproto.SearchResponse)
    assert (found.port, found.ip, found.cid, found.version) == (5101, "255.255.255.255", 42, 13)
    assert found.header.payload_size == 8


def test_responder_ignores_the_addresses_it_is_told_to(responder: SearchResponder) -> None:
    """EPICS_CAS_IGNORE_ADDR_LIST: as rsrv, no answer at all to those clients, others as ever."""
    ignoring = SearchResponder(responder.table, ignore=frozenset({CLIENT[0]}))
    assert ignoring.datagram_received(search_datagram("A:ONE"), CLIENT) == []
    assert len(ignoring.datagram_received(search_datagram("A:ONE"), ("127.0.0.9", CLIENT[1]))) == 1


def test_responder_reply_is_byte_identical_to_rsrv() -> None:
    """Captured from a pythonSoftIOC (EPICS 7.0.10 rsrv) serving at port 0x98b3."""
    table = NameTable()
    table.register("ioc", 0x98B3, ["CHK:R1"])
    [reply] = SearchResponder(table).datagram_received(search_datagram("CHK:R1", cid0=3, sequence=5), CLIENT)
    assert reply.hex() == ("000000000001000d0000000500000000"
                           "0006000898b30000ffffffff00000003000d000000000000")


@pytest.mark.parametrize("cut", [1, 15, 17, 23])
def test_a_datagram_cut_short_gets_no_answer(responder: SearchResponder, cut: int) -> None:
    """Ends inside a header or a payload: nothing is answered from it (the names before the
    cut included), as with a datagram caproto's own parser refuses."""
    whole = search_datagram("A:ONE")[16:]  # SEARCH header + 8-byte payload, no VERSION
    assert responder.datagram_received(whole[:cut], CLIENT) == []
    assert responder.datagram_received(search_datagram("B:ONE") + whole[:cut], CLIENT) == []


def test_parse_datagram_reads_the_extended_header() -> None:
    from iochost.discovery import camessages as ca

    extended = ca.HEADER.pack(ca.SEARCH, 0xFFFF, 0, 0, 9, 9) + ca.EXTENDED_SIZES.pack(8, 13) + b"X:Y\0\0\0\0\0"
    [message] = ca.parse_datagram(extended + bytes(caproto.VersionRequest(0, 13)))[:1]
    assert (message.command, message.data_count, message.name, message.parameter2) == (ca.SEARCH, 13, "X:Y", 9)


def test_responder_packs_all_hits_of_a_datagram_in_one_reply(responder: SearchResponder) -> None:
    request = search_datagram("A:ONE", "NOPE", "B:ONE", "A:TWO.DESC", cid0=10)
    [reply] = responder.datagram_received(request, CLIENT)
    commands = parse_replies(reply)
    assert isinstance(commands[0], caproto.VersionResponse)
    assert [(c.cid, c.port) for c in commands[1:]] == [(10, 5101), (12, 5102), (13, 5101)]


def test_responder_echoes_m_available_as_cid(responder: SearchResponder) -> None:
    search = caproto.SearchRequest("B:ONE", 5, 13)
    search.header.parameter2 = 777  # rsrv answers with m_available, not m_cid
    [reply] = responder.datagram_received(bytes(caproto.VersionRequest(0, 13)) + bytes(search), CLIENT)
    assert parse_replies(reply)[1].cid == 777


@pytest.mark.parametrize("reply_flag", [caproto.NO_REPLY, caproto.DO_REPLY])
def test_responder_is_silent_for_unknown_names(responder: SearchResponder, reply_flag: int) -> None:
    # rsrv (EPICS 7) sends NOT_FOUND only on TCP name searches, never over UDP.
    assert responder.datagram_received(search_datagram("NOPE", "NOPE:2", reply=reply_flag), CLIENT) == []


def test_responder_ignores_old_clients_and_garbage(responder: SearchResponder) -> None:
    assert responder.datagram_received(search_datagram("A:ONE", version=3), CLIENT) == []
    assert responder.datagram_received(b"", CLIENT) == []
    assert responder.datagram_received(b"\x00\x06\x00", CLIENT) == []
    assert responder.datagram_received(b"\xff" * 16, CLIENT) == []
    assert responder.datagram_received(search_datagram(""), CLIENT) == []


def test_responder_stops_at_an_unexpected_command(responder: SearchResponder) -> None:
    request = (search_datagram("A:ONE", cid0=1) + bytes(caproto.EchoRequest())
               + bytes(caproto.SearchRequest("B:ONE", 2, 13)))
    [reply] = responder.datagram_received(request, CLIENT)
    assert [c.cid for c in parse_replies(reply)[1:]] == [1]


def test_responder_splits_replies_at_the_datagram_limit(responder: SearchResponder) -> None:
    request = search_datagram(*["A:ONE"] * 100, cid0=1000)
    replies = responder.datagram_received(request, CLIENT)
    assert len(replies) > 1
    cids = []
    for reply in replies:
        assert len(reply) <= MAX_DATAGRAM
        version, *found = parse_replies(reply)
        assert isinstance(version, caproto.VersionResponse)
        cids += [f.cid for f in found]
    assert cids == list(range(1000, 1100))


# ------------------------------------------------------------ sans-I/O: beacons


class LibcaBeaconHistory:
    """libca's bhe::updatePeriod (bhe.cpp) for one server: does a beacon mean 'anomaly'?"""

    def __init__(self, program_begin: float) -> None:
        self.program_begin = program_begin
        self.stamp: float | None = None
        self.average = -1.0
        self.last_id = 0

    def beacon(self, now: float, beacon_id: int) -> bool:
        if self.stamp is None:  # first beacon: the entry is created, nothing decided
            self.stamp, self.last_id = now, beacon_id
            return False
        advance = (beacon_id - self.last_id) % (1 << 32)
        self.last_id = beacon_id
        if advance == 0 or advance > (1 << 32) - 1 - 256 or 1 < advance < 4:
            return False
        period = now - self.stamp
        anomaly = False
        if self.average < 0:
            self.average = period
            anomaly = period <= self.stamp - self.program_begin
        else:
            if period >= self.average * 1.25:
                anomaly = period >= self.average * 3.25
            elif period <= self.average * 0.80:
                anomaly = True
            self.average = period * 0.125 + self.average * 0.875
        self.stamp = now
        return anomaly


def simulate(history: LibcaBeaconHistory, until: float, restart_at: float | None = None) -> list[tuple[float, bool]]:
    """Drive a fresh schedule like CAEndpoint does (restart = announce) from t=0 to ``until``;
    every beacon's time and whether libca saw an anomaly in it."""
    schedule = BeaconSchedule(5064, period=15.0)
    seen: list[tuple[float, bool]] = []
    now = 0.0
    while now < until:
        data, delay = schedule.next_beacon()
        seen.append((now, history.beacon(now, parse_replies(data)[0].beacon_id)))
        following = now + delay
        if restart_at is not None and now < restart_at <= following:
            schedule.restart()
            following, restart_at = restart_at, None
        now = following
    return seen


def test_beacons_follow_rsrv_cadence_with_consecutive_ids() -> None:
    schedule = BeaconSchedule(5064, period=15.0)
    delays, ids = [], []
    for _ in range(14):
        data, delay = schedule.next_beacon()
        [beacon] = parse_replies(data)
        assert isinstance(beacon, caproto.Beacon)
        assert (beacon.version, beacon.server_port, beacon.address) == (13, 5064, "0.0.0.0")
        ids.append(beacon.beacon_id)
        delays.append(delay)
    assert ids == list(range(14))
    assert delays[:4] == [FIRST_DELAY, 0.04, 0.08, 0.16] and delays[-3:] == [15.0] * 3
    schedule.restart()
    data, delay = schedule.next_beacon()
    assert (parse_replies(data)[0].beacon_id, delay) == (14, FIRST_DELAY)


@pytest.mark.parametrize("since_last", [0.5, 7.0, 14.9])
def test_announce_is_a_beacon_anomaly_for_libca(since_last: float) -> None:
    steady = [t for t, _ in simulate(LibcaBeaconHistory(program_begin=-1000.0), 600.0)]
    restart = max(t for t in steady if t < 500.0) + since_last
    seen = simulate(LibcaBeaconHistory(program_begin=-1000.0), 600.0, restart_at=restart)
    anomalies = [t for t, anomaly in seen if anomaly]
    # A new server's start-up burst is an anomaly (as for rsrv), then 15 s beacons are not.
    assert anomalies[0] < 0.1 and not [t for t in anomalies if 120.0 < t < restart]
    after = [t for t in anomalies if t >= restart]
    assert after and after[0] - restart <= FIRST_DELAY + 1e-9, (restart, after)


# ------------------------------------------------------------ ports


def test_port_allocator_is_stable_per_owner_and_probes_freedom() -> None:
    base = free_port()
    allocator = PortAllocator(base, base + 20, host="127.0.0.1")
    a = allocator.reserve("a")
    assert allocator.reserve("a") == a and allocator.port_of("a") == a
    b = allocator.reserve("b")
    assert b != a and base <= b <= base + 20
    allocator.release("a")
    c = allocator.reserve("c")
    assert c not in (a, b), "a new owner does not take a port a released owner may come back to"
    assert allocator.reserve("a") == a
    allocator.forget("c")
    assert allocator.port_of("c") is None


@pytest.mark.parametrize("kind", [socket.SOCK_DGRAM, socket.SOCK_STREAM])
def test_port_allocator_skips_ports_in_use(kind: int) -> None:
    port = free_port()
    allocator = PortAllocator(port, port, host="127.0.0.1")
    with socket.socket(socket.AF_INET, kind) as busy:
        busy.bind(("127.0.0.1", port))
        if kind == socket.SOCK_STREAM:
            busy.listen()
        with pytest.raises(IochostError) as excinfo:
            allocator.reserve("a")
        assert excinfo.value.code.value == "WORKER_START_FAILED"
    assert allocator.reserve("a") == port


def test_worker_port_blocks_stay_clear_of_the_ephemeral_range() -> None:
    """Any outgoing connection may take an ephemeral port between a worker's allocation
    and its bind (rsrv then stops the worker at iocInit): a block for tests and
    benchmarks lies below that range, and every port in it is free."""
    low, high = ephemeral_range()
    block_low, block_high = free_port_block(120)
    assert block_high - block_low == 119 and block_high < low
    assert all(port_is_free("127.0.0.1", port) for port in range(block_low, block_high + 1))
    assert overlaps_ephemeral(block_low, block_high) is None
    assert overlaps_ephemeral(low - 10, low) == (low, high)
    assert overlaps_ephemeral(high, high + 5) == (low, high)


def test_the_daemon_warns_of_worker_ports_in_the_ephemeral_range(caplog: pytest.LogCaptureFixture) -> None:
    low, _ = ephemeral_range()
    with caplog.at_level(logging.WARNING, logger="iochost.epics"):
        EpicsNetwork(Settings(worker_ports=f"{low}-{low + 99}"))
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and f"--worker-ports {low}-{low + 99} overlaps the ephemeral ports" in warned[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="iochost.epics"):
        EpicsNetwork(Settings())  # the defaults, 5100-5299 and 5300-5499, are clear of it
    assert caplog.records == []


# ------------------------------------------------------------ endpoint I/O, raw sockets


def test_endpoint_answers_unicast_and_broadcast_and_beacons() -> None:
    beacon_sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    beacon_sink.bind(("127.0.0.1", 0))
    beacon_port = beacon_sink.getsockname()[1]
    endpoint = EndpointThread(host="127.0.0.1", port=free_port(socket.SOCK_DGRAM),
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
                              beacon_port=free_port(socket.SOCK_DGRAM))
    pva_broadcast_port = free_port(socket.SOCK_DGRAM)
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


def test_registration_follows_iocs_coming_and_going(processes: Processes, tmp_path: Path) -> None:
    endpoint = EndpointThread(host="127.0.0.1", port=free_port(), beacon_addrs=["127.0.0.1"],
                              beacon_port=free_port(socket.SOCK_DGRAM))
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


def test_monitor_resumes_after_ioc_restart(processes: Processes, tmp_path: Path) -> None:
    endpoint = EndpointThread(host="127.0.0.1", port=free_port(), beacon_addrs=["127.0.0.1"],
                              beacon_port=free_port(socket.SOCK_DGRAM))
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
        env = ioc_env(endpoint.endpoint, ioc.port, free_port(socket.SOCK_DGRAM))
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


def test_announce_beacons_make_a_real_client_search_again(processes: Processes, tmp_path: Path) -> None:
    """caproto's client, like libca, stops searching for names nobody answered for a while
    and searches again when beacons show a new or restarted server. Here it has retired
    its search before the PV's worker is registered; only the endpoint's announce burst
    brings it back."""
    repeater_port = free_port(socket.SOCK_DGRAM)
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
