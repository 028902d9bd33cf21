"""The standard EPICS server variables: honoured as settings, or refused with a reason."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import Processes, daemon_environ, free_port
from iochost.discovery import camessages
from iochost.epics_server_vars import VARIABLES, EpicsVariableError, settings_from_environ
from iochost.settings import Settings

# -- the table, as a pure function ------------------------------------------------------------------


def test_server_variables_become_settings_where_none_is_given() -> None:
    environ = {"EPICS_CAS_INTF_ADDR_LIST": " 10.0.0.5 ", "EPICS_CAS_SERVER_PORT": "5070",
               "EPICS_CAS_BEACON_ADDR_LIST": "10.0.0.255  10.1.0.255:5999", "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "no",
               "EPICS_CAS_BEACON_PERIOD": "5", "EPICS_CAS_IGNORE_ADDR_LIST": "10.0.0.9",
               "EPICS_PVAS_BROADCAST_PORT": "5086", "EPICS_PVAS_BEACON_ADDR_LIST": "10.0.0.255",
               "EPICS_CA_ADDR_LIST": "10.0.0.1"}  # a client variable: not the daemon's business
    assert settings_from_environ({}, environ) == {
        "epics_host": "10.0.0.5", "ca_port": 5070, "ca_beacon_addrs": "10.0.0.255 10.1.0.255:5999",
        "ca_auto_beacon_addrs": False, "ca_beacon_period": 5.0, "ca_ignore_addrs": "10.0.0.9", "pva_port": 5086,
    }
    settings = Settings.from_sources({}, {**environ, "IOCHOST_DATA_DIR": "/tmp/x"})
    assert (settings.epics_host, settings.ca_port, settings.pva_port) == ("10.0.0.5", 5070, 5086)


def test_a_setting_given_both_ways_must_agree() -> None:
    environ = {"EPICS_CAS_SERVER_PORT": "5070", "EPICS_CAS_INTF_ADDR_LIST": "10.0.0.5"}
    assert settings_from_environ({"ca_port": "5070", "epics_host": "10.0.0.5"}, environ) == {}
    with pytest.raises(EpicsVariableError) as refused:
        settings_from_environ({"ca_port": "5064"}, environ)
    assert "EPICS_CAS_SERVER_PORT='5070' disagrees with the setting ca_port='5064'" in str(refused.value)
    assert "--ca-port" in str(refused.value) and "IOCHOST_CA_PORT" in str(refused.value)
    with pytest.raises(EpicsVariableError, match="EPICS_CAS_INTF_ADDR_LIST='10.0.0.5' and "
                                                 "EPICS_PVAS_INTF_ADDR_LIST='10.0.0.6' disagree"):
        settings_from_environ({}, {"EPICS_CAS_INTF_ADDR_LIST": "10.0.0.5", "EPICS_PVAS_INTF_ADDR_LIST": "10.0.0.6"})


def test_client_variables_are_only_a_fallback(caplog: pytest.LogCaptureFixture) -> None:
    assert settings_from_environ({}, {"EPICS_CA_SERVER_PORT": "5070"}) == {"ca_port": 5070}
    # the server variable wins over the client one, as in rsrv
    assert settings_from_environ({}, {"EPICS_CA_SERVER_PORT": "5070", "EPICS_CAS_SERVER_PORT": "5080"}) == \
        {"ca_port": 5080}
    with caplog.at_level(logging.WARNING, logger="iochost.epics"):
        assert settings_from_environ({"ca_port": 5064}, {"EPICS_CA_SERVER_PORT": "5070"}) == {}
    assert "EPICS_CA_SERVER_PORT=5070 (a client variable) is not used" in caplog.text


@pytest.mark.parametrize("name, value, gist", [
    ("EPICS_PVAS_SERVER_PORT", "5075", "--worker-pva-ports"),
    ("EPICS_PVAS_TLS_PORT", "5076", "TLS port of its own"),
    ("EPICS_CAS_INTF_ADDR_LIST", "10.0.0.5 10.0.1.5", "give exactly one address"),
    ("EPICS_CAS_INTF_ADDR_LIST", "10.0.0.5:5064", "not one IPv4 address"),
    ("EPICS_CAS_SERVER_PORT", "70000", "not a port number"),
    ("EPICS_CAS_AUTO_BEACON_ADDR_LIST", "maybe", "EPICS reads YES or NO"),
    ("EPICS_CAS_BEACON_PERIOD", "-1", "not a positive number of seconds"),
    ("EPICS_CAS_BEACON_ADRR_LIST", "10.0.0.255", "not an EPICS server variable iochost knows"),
])
def test_what_cannot_be_honoured_is_refused_by_name(name: str, value: str, gist: str) -> None:
    with pytest.raises(EpicsVariableError) as refused:
        settings_from_environ({}, {name: value})
    assert name in str(refused.value) and gist in str(refused.value)


def test_every_setting_the_table_names_exists() -> None:
    assert {v.setting for v in VARIABLES if v.setting} <= set(Settings.model_fields)


# -- the daemon -------------------------------------------------------------------------------------


def test_the_daemon_refuses_a_per_worker_variable_before_it_starts(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "iochost", "serve", "--port", str(free_port()), "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=60, env=daemon_environ(EPICS_PVAS_SERVER_PORT="5075"))
    assert result.returncode == 2
    assert "EPICS_PVAS_SERVER_PORT cannot be honoured" in result.stderr and "--worker-pva-ports" in result.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.slow
def test_the_endpoint_takes_its_search_port_and_beacon_list_from_epics_variables(
        tmp_path: Path, processes: Processes) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(1.0)
    search_port = free_port()
    env = daemon_environ(EPICS_CAS_SERVER_PORT=str(search_port), EPICS_CAS_AUTO_BEACON_ADDR_LIST="NO",
                         EPICS_CAS_BEACON_ADDR_LIST=f"127.0.0.1:{listener.getsockname()[1]}",
                         EPICS_CAS_INTF_ADDR_LIST="127.0.0.1")
    with open(tmp_path / "daemon.log", "wb") as log:
        proc = processes.start([sys.executable, "-m", "iochost", "serve", "--port", str(free_port()),
                                "--data-dir", str(tmp_path / "data"), "--no-fork-server"],
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        beacon = None
        while beacon is None and time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "daemon.log").read_text()
            try:
                data, _ = listener.recvfrom(1024)
            except socket.timeout:
                continue
            beacon = camessages.parse_datagram(data)[0]
        assert beacon is not None, "no CA beacon reached the EPICS_CAS_BEACON_ADDR_LIST destination"
        assert beacon.command == camessages.RSRV_IS_UP
        assert beacon.data_count == search_port  # the endpoint's beacons name its search port
    finally:
        listener.close()
