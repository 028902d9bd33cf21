"""Shared test harness: loopback-only EPICS, free ports, real clients, no stray processes.

The EPICS environment is set at import time, before any CA or PVA client library reads
it, so every client in the test process and every IOC it starts talks only to loopback
on ports chosen free for this session.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "plugins-example"


# Ports are claimed, not just found free: every test process (each pytest-xdist worker, and
# any other pytest session of this user on the machine) takes a POSIX record lock on the bytes
# [port, port + count) of one shared file, held until the process exits. A port found free
# and released by one process cannot be handed to a test of another before its server binds it.
_CLAIMS = open(Path(tempfile.gettempdir()) / f"iochost-test-ports-{os.getuid()}.lock", "a+b")  # held for the session
_claimed: set[int] = set()  # this process's claims: the lock does not stop a process from itself


def claim_ports(first: int, count: int = 1) -> bool:
    """Claim ``first .. first + count - 1`` for this test process; False if any of them is
    claimed already (by this process or another)."""
    wanted = set(range(first, first + count))
    if wanted & _claimed:
        return False
    try:
        fcntl.lockf(_CLAIMS, fcntl.LOCK_EX | fcntl.LOCK_NB, count, first, os.SEEK_SET)
    except OSError:
        return False
    _claimed.update(wanted)
    return True


def release_ports(first: int, count: int = 1) -> None:
    """Give back a claim of ``claim_ports`` once nothing uses those ports any more."""
    fcntl.lockf(_CLAIMS, fcntl.LOCK_UN, count, first, os.SEEK_SET)
    _claimed.difference_update(range(first, first + count))


def _port_regions() -> tuple[range, range]:
    """Below the kernel's ephemeral range, from 10000: the lower 40% for ``free_port``, whose
    ports stay claimed for the session, the rest for ``free_port_block``, whose blocks are
    given back. Kept apart, a thousand single ports (a long run in one process) cannot leave
    the blocks no room: strewn over the whole space they would, gaps of 120 becoming rare."""
    from iochost.discovery.ports import ephemeral_range

    lowest, top = 10000, ephemeral_range()[0]
    split = lowest + (top - lowest) * 4 // 10
    return range(lowest, split), range(split, top)


def free_port() -> int:
    """A port free for both TCP and UDP right now (EPICS servers bind both), claimed for this
    test process (``claim_ports``) until it ends. Taken below the kernel's ephemeral range:
    a port from that range that a test binds again after a pause (a daemon restarted) may
    meanwhile be any process's outgoing socket, such as a CA client's search socket."""
    from iochost.discovery.ports import port_is_free

    singles, _ = _port_regions()
    for _ in range(1000):
        port = random.choice(singles)
        if port not in _claimed and port_is_free("127.0.0.1", port) and claim_ports(port):
            return port
    raise AssertionError("no free port below the ephemeral range that no other test process has claimed")


def free_port_block(size: int) -> tuple[int, int]:
    """``size`` consecutive free ports below the ephemeral range (a daemon's worker ranges),
    claimed for this test process; ``release_ports(low, size)`` gives them back. Drawn among
    the gaps between this process's blocks in use."""
    from iochost.discovery.ports import port_is_free

    _, blocks = _port_regions()
    for _ in range(200):
        edges = [blocks.start - 1, *sorted(p for p in _claimed if p in blocks), blocks.stop]
        gaps = [(a + 1, b - size) for a, b in itertools.pairwise(edges) if b - a - 1 >= size]
        if not gaps:
            break
        first, last = random.choices(gaps, weights=[last - first + 1 for first, last in gaps])[0]
        low = random.randint(first, last)
        if all(port_is_free("127.0.0.1", port) for port in range(low, low + size)) and claim_ports(low, size):
            return low, low + size - 1
    raise AssertionError(f"no block of {size} ports that no other test process has claimed")


def free_ports(count: int) -> tuple[int, ...]:
    """``count`` different ports, each free for TCP and UDP right now."""
    ports: list[int] = []
    while len(ports) < count:
        if (port := free_port()) not in ports:
            ports.append(port)
    return tuple(ports)


# CA search ports, each with one server at a time: a unicast search reaches only one of the
# servers on a port (`iochost serve` refuses a taken one). The suite's daemons take the
# first of DAEMON_CA_PORTS no other daemon holds (daemon_harness: CA_PORT for one alone, up
# to four at once); lone IOCs (`iochost run`, workers started by hand, device IOCs) take
# IOC_CA_PORT. Every client here searches them all.
*DAEMON_CA_PORTS, IOC_CA_PORT = free_ports(5)
CA_PORT = DAEMON_CA_PORTS[0]
CA_PORTS = (*DAEMON_CA_PORTS, IOC_CA_PORT)
PVA_PORT = free_port()
PVA_BROADCAST_PORT = free_port()
EPICS_ENV = {
    # "127.0.0.1" is CA_PORT here: a client given another EPICS_CA_SERVER_PORT searches that one
    "EPICS_CA_ADDR_LIST": " ".join(["127.0.0.1", *(f"127.0.0.1:{port}" for port in CA_PORTS[1:])]),
    "EPICS_CA_AUTO_ADDR_LIST": "NO",
    "EPICS_CA_SERVER_PORT": str(CA_PORT),
    "EPICS_CAS_SERVER_PORT": str(IOC_CA_PORT),
    "EPICS_CAS_INTF_ADDR_LIST": "127.0.0.1",
    "EPICS_CAS_BEACON_ADDR_LIST": "127.0.0.1",
    "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
    "EPICS_CA_REPEATER_PORT": str(free_port()),
    "EPICS_PVA_ADDR_LIST": "127.0.0.1",
    "EPICS_PVA_AUTO_ADDR_LIST": "NO",
    "EPICS_PVA_SERVER_PORT": str(PVA_PORT),
    "EPICS_PVAS_SERVER_PORT": str(PVA_PORT),
    "EPICS_PVA_BROADCAST_PORT": str(PVA_BROADCAST_PORT),
    "EPICS_PVAS_BROADCAST_PORT": str(PVA_BROADCAST_PORT),
    "EPICS_PVAS_INTF_ADDR_LIST": "127.0.0.1",
    "OPENBLAS_NUM_THREADS": "1",
}
os.environ.update(EPICS_ENV)
# Client variables set above that an EPICS server, and so the daemon, falls back on.
DAEMON_FALLBACK_VARIABLES = ("EPICS_CA_SERVER_PORT", "EPICS_CA_REPEATER_PORT", "EPICS_PVA_BROADCAST_PORT")


def daemon_environ(**extra: str) -> dict[str, str]:
    """This environment for an ``iochost serve``, without the EPICS server variables set
    above for the suite's lone IOCs: the daemon takes those as its own settings (or
    refuses them, as EPICS_PVAS_SERVER_PORT), and the tests configure it by flags."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("EPICS_CAS_", "EPICS_PVAS_")) and k not in DAEMON_FALLBACK_VARIABLES}
    env.update(extra)
    return env


class Processes:
    """Every process a test starts, each in its own process group, killed at teardown."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[Any]] = []

    def start(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        kwargs.setdefault("start_new_session", True)
        kwargs.setdefault("env", {**os.environ})
        proc = subprocess.Popen(argv, **kwargs)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.procs.clear()


@pytest.fixture
def processes() -> Iterator[Processes]:
    procs = Processes()
    try:
        yield procs
    finally:
        procs.stop_all()


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05, what: str = "",
             sleep: Callable[[float], None] | None = None) -> Any:
    """Poll ``predicate`` until truthy and return its value. Sleeps with cothread by
    default, so CA callbacks in this process keep flowing while we wait."""
    if sleep is None:
        import cothread

        sleep = cothread.Sleep
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 - keep polling; report the last failure
            last = exc
        sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}; last: {last!r}")


@pytest.fixture(scope="session")
def ca() -> Any:
    """cothread.catools: the real libca client, as CS-Studio's CA layer behaves."""
    from cothread import catools

    return catools


@pytest.fixture(scope="session")
def pva() -> Iterator[Any]:
    from p4p.client.thread import Context

    ctx = Context("pva", unwrap=False)
    try:
        yield ctx
    finally:
        ctx.close()


def python() -> str:
    return sys.executable


def ca_search(names: list[str], port: int | None = None, timeout: float = 1.0,
              host: str = "127.0.0.1") -> set[str]:
    """The names a CA server answers for on ``host``:``port`` (default: on every port of
    CA_PORTS, as the suite's libca searches; ``host`` may be a broadcast address): one real
    search datagram per port, as libca sends it, with no client-side channel cache in the way."""
    import caproto

    ports = CA_PORTS if port is None else (port,)
    requests = [caproto.VersionRequest(priority=0, version=13)]
    requests += [caproto.SearchRequest(name, cid, 13) for cid, name in enumerate(names)]
    answered: set[str] = set()
    parser = caproto.Broadcaster(caproto.CLIENT)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.bind(("127.0.0.1", 0))
        for each in ports:
            sock.sendto(b"".join(bytes(r) for r in requests), (host, each))
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0 and len(answered) < len(names):
            sock.settimeout(remaining)
            try:
                data, sender = sock.recvfrom(65536)
            except socket.timeout:
                break
            for message in parser.recv(data, sender):
                if isinstance(message, caproto.SearchResponse):
                    answered.add(names[message.cid])
    return answered


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One real `iochost serve` per test module; everything it started is killed after."""
    from daemon_harness import Daemon

    root = tmp_path_factory.mktemp("daemon")
    with Daemon(root / "data", "--backoff-initial", "1", "--heartbeat-interval", "0.5").serving() as d:
        yield d


@pytest.fixture(scope="module")
def api(daemon: Any) -> Iterator[Any]:
    with daemon.client() as client:
        yield client


@pytest.fixture
def repos(tmp_path: Path) -> Path:
    """Where a test creates its git repositories."""
    return tmp_path


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules with the most ``slow`` tests first, each module's tests in their order.

    pytest-xdist's ``--dist loadfile`` hands out modules in collection order: a long module
    taken last keeps one process busy while the others have finished. Started first, the
    long ones overlap each other and the many quick modules fill the end. Only in xdist's
    processes: a single process keeps pytest's own order."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return

    def module(item: pytest.Item) -> str:
        return item.nodeid.split("::", 1)[0]

    slow: dict[str, int] = {}
    for item in items:
        slow.setdefault(module(item), 0)
        if item.get_closest_marker("slow") is not None:
            slow[module(item)] += 1
    place = {name: index for index, name in enumerate(slow)}
    items.sort(key=lambda item: (-slow[module(item)], place[module(item)]))


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: two test processes per core. Most of an
    end-to-end test's time is spent waiting on the processes it started (a soft IOC's start,
    a CA search, a restart's backoff), so one per core leaves the cores half idle; more than
    two per core slows the timing-sensitive tests enough to fail them."""
    return 2 * (len(os.sched_getaffinity(0)) or 1)
