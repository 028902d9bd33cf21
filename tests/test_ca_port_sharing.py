"""One daemon per CA search port: `iochost serve` refuses a search port another CA server
already receives searches on (a unicast search reaches only one of them), names the port
and the other server, and starts beside it only with --allow-shared-ca-port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from conftest import ca_search, free_port, wait_for
from daemon_harness import Daemon
from iochost.cli import build_parser, ca_port_problem
from iochost.discovery.holders import PortHolder, UdpSocket, describe_holders, search_port_holders, udp_sockets
from iochost.settings import Settings

FIXTURES = Path(__file__).resolve().parent / "fixtures"
LOOPBACK_BROADCAST = "127.255.255.255"
FIRST = "IOCHTSA"  # the first daemon's PV prefix; each daemon's own IOC serves PREFIX:IOCHOST:VERSION


def version_pv(prefix: str) -> str:
    return f"{prefix}:IOCHOST:VERSION"


def refused(daemon: Daemon) -> str:
    """Start ``daemon`` expecting the refusal: its exit status must be 2; its output."""
    try:
        with pytest.raises(AssertionError, match="exited with"):
            daemon.start()
    finally:
        daemon.cleanup()
    assert daemon.proc is not None and daemon.proc.returncode == 2, daemon.log()
    return daemon.log()


@pytest.fixture(scope="module")
def shared_port() -> int:
    """A CA search port of this module's own: no other module's daemon or IOC is on it."""
    return free_port()


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory, shared_port: int) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("first")
    with Daemon(root / "data", "--prefix", FIRST, "--ca-port", str(shared_port)).serving() as daemon:
        wait_for(lambda: ca_search([version_pv(FIRST)], shared_port) == {version_pv(FIRST)}, timeout=60,
                 what="the first daemon's own PVs on its search port")
        yield daemon


@pytest.mark.slow
def test_a_second_daemon_on_the_port_exits_2_naming_the_port_and_the_first(
        first: Daemon, shared_port: int, tmp_path: Path) -> None:
    second = Daemon(tmp_path / "data", "--prefix", "IOCHTSB", "--ca-port", str(shared_port))
    message = refused(second)
    assert f"ca_port {shared_port}: another CA server already receives name searches on " \
           f"UDP 127.0.0.1:{shared_port}: 127.0.0.1:{shared_port} (pid {first.proc.pid}: " in message, message
    assert "iochost serve" in message and "--allow-shared-ca-port" in message
    assert not second.data_dir.exists()  # refused before anything was made
    # the first still gets every unicast search: nobody took them from it
    assert ca_search([version_pv(FIRST)], shared_port) == {version_pv(FIRST)}


@pytest.mark.slow
def test_allowed_sharing_starts_and_a_unicast_search_reaches_only_one(
        first: Daemon, shared_port: int, tmp_path: Path) -> None:
    second = Daemon(tmp_path / "data", "--prefix", "IOCHTSC", "--ca-port", str(shared_port),
                    "--allow-shared-ca-port")
    with second.serving():
        assert f"is shared (--allow-shared-ca-port) with 127.0.0.1:{shared_port} (pid {first.proc.pid}: " \
            in second.log(), second.log()
        both = {version_pv(FIRST), version_pv("IOCHTSC")}
        wait_for(lambda: ca_search(sorted(both), shared_port, host=LOOPBACK_BROADCAST) == both, timeout=60,
                 what="both daemons answering a broadcast search")
        # what sharing costs: both serve, and a unicast search reaches one of them only
        assert len(ca_search(sorted(both), shared_port, timeout=2.0)) == 1


def _lone_softioc(processes, port: int) -> tuple[subprocess.Popen[str], str]:
    proc = processes.start([sys.executable, str(FIXTURES / "device_ioc.py"), "LONEIOC", "VALUE"],
                           env={**os.environ, "EPICS_CAS_SERVER_PORT": str(port)}, stdout=subprocess.PIPE,
                           text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == "READY":
            return proc, "LONEIOC:VALUE"
    raise AssertionError("the lone soft IOC exited before READY")


def _lone_caproto(processes, port: int) -> tuple[subprocess.Popen[str], str]:
    proc = processes.start([sys.executable, "-m", "caproto.ioc_examples.simple", "--prefix", "LONECAP:",
                            "--interfaces", "127.0.0.1"],
                           env={**os.environ, "EPICS_CA_SERVER_PORT": str(port)},  # caproto's server port
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    return proc, "LONECAP:A"


@pytest.mark.parametrize("start_ioc", [_lone_softioc, _lone_caproto], ids=["pythonSoftIOC", "caproto"])
def test_a_lone_ca_server_on_the_port_is_found_and_named(processes, tmp_path: Path, start_ioc) -> None:
    port = free_port()
    ioc, pv = start_ioc(processes, port)
    wait_for(lambda: ca_search([pv], port) == {pv}, timeout=30, what=f"{pv} on port {port}")
    message = refused(Daemon(tmp_path / "data", "--ca-port", str(port)))
    assert f"ca_port {port}: another CA server already receives name searches on UDP 127.0.0.1:{port}: " \
        in message, message
    assert f":{port} (pid {ioc.pid}: {sys.executable} " in message, message
    assert ca_search([pv], port) == {pv}  # the IOC keeps its unicast clients


@pytest.mark.slow
def test_a_free_port_starts_as_before_beside_an_ioc_on_another_port(processes, tmp_path: Path) -> None:
    ioc_port, port = free_port(), free_port()
    _, pv = _lone_softioc(processes, ioc_port)
    with Daemon(tmp_path / "data", "--prefix", "IOCHTSD", "--ca-port", str(port)).serving() as daemon:
        wait_for(lambda: ca_search([version_pv("IOCHTSD")], port) == {version_pv("IOCHTSD")}, timeout=60,
                 what="the daemon's own PVs on its search port")
        assert "is shared" not in daemon.log()
        assert ca_search([pv], ioc_port) == {pv}  # and the IOC beside it keeps its own


# -- the check itself, in this process -------------------------------------------------


def _bound(family: int, host: str, port: int, reuse: bool = True) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    if reuse:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def test_proc_net_udp_lists_a_bound_socket_with_its_address_uid_and_inode() -> None:
    port = free_port()
    with _bound(socket.AF_INET, "127.0.0.1", port) as v4, _bound(socket.AF_INET6, "::1", port) as v6:
        listed = {(s.address, s.port, s.uid, s.inode) for s in udp_sockets()}
        assert ("127.0.0.1", port, os.getuid(), os.fstat(v4.fileno()).st_ino) in listed
        assert ("::1", port, os.getuid(), os.fstat(v6.fileno()).st_ino) in listed


@pytest.mark.parametrize("family, bound_on, searched_on", [
    (socket.AF_INET, "127.0.0.1", "127.0.0.1"),
    (socket.AF_INET, "0.0.0.0", "127.0.0.1"),  # a wildcard holder receives unicast to every address
    (socket.AF_INET, "127.0.0.1", "0.0.0.0"),  # and the daemon's wildcard search port covers loopback
    (socket.AF_INET6, "::", "127.0.0.1"),  # a dual-stack socket takes IPv4 datagrams too
])
def test_a_holder_is_found_with_this_process_as_its_owner(family: int, bound_on: str, searched_on: str) -> None:
    port = free_port()
    with _bound(family, bound_on, port):
        holders = search_port_holders(searched_on, port)
    assert holders is not None and [h.pid for h in holders] == [os.getpid()], holders
    assert holders[0].socket.address == bound_on
    argv0 = Path("/proc/self/cmdline").read_bytes().split(b"\0")[0].decode()  # under xdist: its process title
    assert f"{holders[0].socket.endpoint} (pid {os.getpid()}: {argv0}" in holders[0].describe()


def test_a_holder_whose_process_is_out_of_sight_is_named_by_address_and_uid() -> None:
    hidden = PortHolder(UdpSocket("0.0.0.0", 5064, 10001, 4242), pid=None, command=None)
    assert describe_holders([hidden]) == "0.0.0.0:5064 (a process of uid 10001 not visible here)"
    assert describe_holders([]) == "a socket /proc/net/udp does not list"


def test_nothing_on_the_port_or_only_on_other_ports_is_no_holder() -> None:
    port = free_port()
    assert search_port_holders("127.0.0.1", port) is None
    with _bound(socket.AF_INET, "127.0.0.1", free_port()):  # an IOC on another port
        assert search_port_holders("127.0.0.1", port) is None
        assert search_port_holders("0.0.0.0", port) is None


def _settings(tmp_path: Path, port: int, host: str = "127.0.0.1", **fields: object) -> Settings:
    return Settings(data_dir=tmp_path / "data", epics_host=host, ca_port=port, **fields)


def test_serve_refuses_unless_sharing_is_allowed_and_never_a_port_held_without_reuse(tmp_path: Path) -> None:
    port = free_port()
    assert ca_port_problem(_settings(tmp_path, port)) is None
    with _bound(socket.AF_INET, "127.0.0.1", port):
        assert "another CA server already receives name searches" in ca_port_problem(_settings(tmp_path, port))
        assert ca_port_problem(_settings(tmp_path, port, allow_shared_ca_port=True)) is None
    with _bound(socket.AF_INET, "127.0.0.1", port, reuse=False):
        problem = ca_port_problem(_settings(tmp_path, port, allow_shared_ca_port=True))
        assert problem is not None and f"UDP 127.0.0.1:{port} is held without address reuse by " \
            f"127.0.0.1:{port} (pid {os.getpid()}: " in problem, problem
    assert f"epics_host 192.0.2.1: cannot bind UDP 192.0.2.1:{port}: " in \
        ca_port_problem(_settings(tmp_path, port, host="192.0.2.1"))  # TEST-NET-1: no local address


def test_the_flag_and_the_environment_variable_allow_sharing() -> None:
    args = build_parser().parse_args(["serve", "--allow-shared-ca-port"])
    assert Settings.from_sources(vars(args), environ={}).allow_shared_ca_port is True
    args = build_parser().parse_args(["serve"])
    assert Settings.from_sources(vars(args), environ={"IOCHOST_ALLOW_SHARED_CA_PORT": "1"}).allow_shared_ca_port
    assert Settings.from_sources(vars(args), environ={}).allow_shared_ca_port is False
