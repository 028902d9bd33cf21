"""iochost.discovery without processes: the name table, the sans-I/O responder and beacons
byte for byte, the port allocator. The endpoint with real soft IOC processes and real CA and
PVA clients is in test_discovery_endpoint.py."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from typing import Any

import caproto
import pytest

from conftest import free_port
from iochost.discovery import BeaconSchedule, NameTable, PortAllocator, SearchResponder
from iochost.discovery.beacons import FIRST_DELAY
from iochost.discovery.ports import ephemeral_range, free_port_block, overlaps_ephemeral, port_is_free
from iochost.discovery.responder import MAX_DATAGRAM
from iochost.errors import IochostError
from iochost.settings import Settings
from iochost.supervisor.epics import EpicsNetwork

CLIENT = ("127.0.0.1", 40000)


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


OUT_OF_FILES = """
import errno, os, resource, sys
from iochost.discovery import PortAllocator
port = int(sys.argv[1])
allocator = PortAllocator(port, port, host="127.0.0.1")
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
held = []
try:
    while True:
        held.append(os.open(os.devnull, os.O_RDONLY))
except OSError as exc:
    assert exc.errno == errno.EMFILE
try:
    allocator.reserve("a")
except OSError as exc:
    print("OSError", errno.errorcode[exc.errno])
except Exception as exc:
    print(type(exc).__name__, exc)
else:
    print("reserved")
for fd in held:
    os.close(fd)
print(allocator.reserve("a") == port)
"""


def test_a_port_probe_without_files_left_is_the_hosts_shortage_not_a_busy_port() -> None:
    """Out of open files, the probe's socket cannot be made: that says nothing of the port, so
    it is not "no free port left" (which would fail the plugin for good) but the EMFILE the
    daemon retries a spawn after; with files back, the same port is reserved."""
    port = free_port()
    done = subprocess.run([sys.executable, "-c", OUT_OF_FILES, str(port)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["OSError EMFILE", "True"], done.stdout


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

