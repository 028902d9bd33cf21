"""The REST PV gateway on iocmng 2.7.9's paths (issue 30): ``/api/v1/pvs/*``.

Real daemons, a real standalone soft IOC (tests/fixtures/device_ioc.py), read and written
through the gateway over CA and over PVA, checked with a real CA client; the monitor's
server-sent events observed for a put; tokens, the write allow-list, CORS; the gateway's
child process killed (restarted, the failure shown) and gone after the daemon's shutdown.
The request bodies and answer fields are iocmng's (its api/bodies.py: PvGetRequest,
PvPutRequest, PvMonitorRequest and their responses; MANUAL "REST API", the /pvs rows).
The tests here share one CA daemon (``ca_daemon``); those on daemons of their own (PVA, shutdown,
the line limit) are in test_pv_gateway_own_daemons.py.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import Processes
from daemon_harness import Daemon, EventStream, bearer, live_processes, wait_until
from iochost.errors import ErrorCode, IochostError
from iochost.pvgateway import protocol
from iochost.pvgateway.client import PVGateway
from iochost.pvgateway.values import json_safe
from iochost.settings import Settings

FIXTURES = Path(__file__).parent / "fixtures"
READ, ADMIN = "gw-read-" + secrets.token_hex(8), "gw-admin-" + secrets.token_hex(8)
ORIGIN = "http://dashboard.example:3000"
DEV = "IOCHT:GW:"  # under the daemons' prefix IOCHT: writable by default


# -- pure parts ---------------------------------------------------------------------------------
def test_values_become_json() -> None:
    assert json_safe([float("nan"), float("inf"), -math.inf, 1.5, 2]) == ["NaN", "Infinity", "-Infinity", 1.5, 2]
    assert json_safe("caf\udce9") == "caf\ufffd"  # a CA string's byte that is not UTF-8 (surrogate-escaped)
    assert json_safe(b"caf\xe9") == "caf\ufffd" and json_safe("a\ud800b") == "a\ufffdb"
    assert json_safe({1: (True, None)}) == {"1": [True, None]}


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                    max_leaves=20))
def test_any_value_is_strict_json(value: Any) -> None:
    """Whatever a client library hands back, the answer is valid JSON in UTF-8 (no NaN literal)."""
    json.dumps(json_safe(value), allow_nan=False).encode("utf-8")


def test_settings_name_origins_patterns_and_iocmng_provider() -> None:
    settings = Settings.from_sources({}, {"IOCMNG_PVA": "false", "IOCHOST_CORS_ORIGIN": f"{ORIGIN},https://b.example"})
    assert not settings.pv_gateway_pva and settings.cors_origin == [ORIGIN, "https://b.example"]
    assert Settings().pv_gateway_pva and Settings(prefix="BL7").pv_gateway_write_patterns == ["BL7:*"]
    assert Settings(pv_gateway_allow=["A:*", "B:C"]).pv_gateway_write_patterns == ["A:*", "B:C"]
    for origin in ("*", "http://a.example/", "a.example"):  # would match no browser's Origin, or any
        with pytest.raises(ValueError, match="cors_origin"):
            Settings(cors_origin=[origin])
    with pytest.raises(ValueError, match="pv_gateway_allow"):
        Settings(pv_gateway_allow=["A B"])


def test_writes_only_to_allowed_patterns() -> None:
    gateway = PVGateway(Settings(pv_gateway_allow=["BL1:MOT*", "BL1:SHUTTER"]))
    for allowed in ("BL1:MOT1:VAL", "BL1:MOT", "BL1:SHUTTER"):
        gateway.check_writable(allowed)
    for refused in ("BL1:SHUTTER2", "bl1:MOT1", "BL2:MOT1", "XBL1:MOT1"):
        with pytest.raises(IochostError) as refusal:
            gateway.check_writable(refused)
        assert refusal.value.code == ErrorCode.PV_NOT_ALLOWED and refusal.value.details["patterns"] == [
            "BL1:MOT*", "BL1:SHUTTER"]


def test_protocol_lines_round_trip() -> None:
    problems: list[str] = []
    decoder = protocol.request_decoder(problems.append)
    sent = [protocol.GetPV(id=1, pv_name="A:B", timeout=2),
            protocol.PutPV(id=2, pv_name="A:B", value=[1, 2], timeout=1),
            protocol.StartMonitor(id=3, key="k", pv_name="A:B"), protocol.StopMonitor(id=4, key="k")]
    data = b"".join(protocol.encode(m) for m in sent)
    assert decoder.feed(data[:7]) == [] and decoder.feed(data[7:] + b'{"type":"get","id":5}\n') == sent
    assert len(problems) == 1 and "pv_name" in problems[0]


def test_daemon_imports_no_epics_client() -> None:
    """The gateway's client lives in its child: the daemon's modules load none of it."""
    code = ("import sys, iochost.server, iochost.api.app, iochost.pvgateway.client, iochost.api.routes.pvs; "
            "print(sorted({m.split('.')[0] for m in sys.modules}"
            " & {'cothread', 'p4p', 'caproto', 'numpy', 'softioc'}))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


# -- a real device IOC, real daemons ---------------------------------------------------------------
@pytest.fixture(scope="module")
def device(request: pytest.FixtureRequest) -> Iterator[str]:
    """A standalone soft IOC serving IOCHT:GW:F (ao), :S (stringout), :W (4 doubles), CA and PVA;
    GW is the requesting module's DEVICE_SEGMENT when it has one: the test process's CA client
    keeps the channels of every name it has used and finds a name on a new IOC only after
    libca's search back-off, so modules xdist runs one after the other in one process each
    have names of their own."""
    segment = getattr(request.module, "DEVICE_SEGMENT", "GW")
    procs = Processes()
    try:
        proc = procs.start([sys.executable, str(FIXTURES / "device_ioc.py"), "IOCHT", f"{segment}:F",
                            f"{segment}:S=string", f"{segment}:W=floats"], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and any(line.strip() == "READY" for line in proc.stdout), "device IOC died"
        yield f"IOCHT:{segment}:"
    finally:
        procs.stop_all()


@pytest.fixture(scope="module")
def ca_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """Its gateway on Channel Access (iocmng's IOCMNG_PVA=false), tokens, one CORS origin."""
    root = tmp_path_factory.mktemp("pvgw-ca")
    with Daemon(root / "data", "--cors-origin", ORIGIN, env={"IOCMNG_PVA": "false", "IOCHOST_READ_TOKEN": READ,
                                                            "IOCHOST_ADMIN_TOKEN": ADMIN}).serving() as daemon:
        yield daemon


@pytest.fixture(scope="module")
def admin(ca_daemon: Daemon) -> Iterator[httpx.Client]:
    with ca_daemon.client(token=ADMIN) as client:
        yield client


@pytest.fixture(scope="module")
def reader(ca_daemon: Daemon) -> Iterator[httpx.Client]:
    with ca_daemon.client(token=READ) as client:
        yield client


def get_value(api: httpx.Client, pv_name: str, timeout: float = 5) -> Any:
    answer = api.post("/pvs/get", json={"pv_name": pv_name, "timeout": timeout})
    assert answer.status_code == 200 and answer.json()["ok"], answer.text
    return answer.json()["value"]


def put_value(api: httpx.Client, pv_name: str, value: Any) -> None:
    answer = api.post("/pvs/put", json={"pv_name": pv_name, "value": value, "timeout": 5})
    assert answer.status_code == 200 and answer.json() == {"ok": True, "pv_name": pv_name, "error": None}, answer.text


def gateway_status(api: httpx.Client) -> dict[str, Any]:
    answer = api.get("/pvs/provider")
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.mark.slow
def test_get_and_put_over_ca(device: str, admin: httpx.Client, reader: httpx.Client, ca: Any) -> None:
    assert gateway_status(reader)["provider"] == "ca" and gateway_status(reader)["writable"] == ["IOCHT:*"]
    put_value(admin, device + "F", 2.5)
    assert ca.caget(device + "F", timeout=5) == 2.5  # the IOC holds it, as a real CA client reads it
    assert get_value(reader, device + "F") == 2.5
    put_value(admin, device + "S", "héllo")
    assert get_value(reader, device + "S") == "héllo"
    put_value(admin, device + "W", [1.5, 2, 3, 4])
    assert get_value(reader, device + "W") == [1.5, 2.0, 3.0, 4.0]
    for written, shown in ((math.nan, "NaN"), (math.inf, "Infinity"), (-math.inf, "-Infinity")):
        ca.caput(device + "F", written, wait=True, timeout=5)  # values JSON has no literal for
        assert get_value(reader, device + "F") == shown
    status = gateway_status(reader)["gateway"]
    assert status["running"] and status["restarts"] == 0 and status["last_failure"] is None


def test_missing_pv_answers_within_its_timeout(reader: httpx.Client) -> None:
    answer = reader.post("/pvs/get", json={"pv_name": DEV + "NOBODY", "timeout": 1})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["ok"] is False and body["value"] is None and body["pv_name"] == DEV + "NOBODY"
    assert "TimeoutError" in body["error"] and DEV + "NOBODY" in body["error"]
    assert reader.post("/pvs/get", json={"pv_name": "bad name", "timeout": 1}).json()["code"] == "INVALID_REQUEST"
    assert reader.post("/pvs/get", json={"pv_name": DEV + "F", "timeout": 600}).json()["code"] == "INVALID_REQUEST"


def test_values_json_cannot_carry_are_refused(device: str, admin: httpx.Client, ca: Any) -> None:
    ca.caput(DEV + "F", 1.0, wait=True, timeout=5)
    for value in ("NaN", "[1.0, Infinity]", '{"a": 1}', "null", "[[1]]"):  # Python's JSON reader takes NaN
        answer = admin.post("/pvs/put", content=f'{{"pv_name": "{DEV}F", "value": {value}}}',
                            headers={"Content-Type": "application/json"})
        assert answer.status_code == 422 and answer.json()["code"] == ErrorCode.INVALID_REQUEST.value, answer.text
        assert answer.json()["errors"][0]["field"].endswith("value"), answer.text
    assert ca.caget(DEV + "F", timeout=5) == 1.0


def test_tokens_reads_and_writes(ca_daemon: Daemon, reader: httpx.Client) -> None:
    with ca_daemon.client() as anonymous:
        for answer in (anonymous.get("/pvs/provider"), anonymous.get("/pvs/monitors"),
                       anonymous.post("/pvs/get", json={"pv_name": DEV + "F"})):
            assert answer.status_code == 401 and answer.json()["code"] == ErrorCode.UNAUTHORIZED.value, answer.text
    assert reader.get("/pvs/monitors").json() == {"monitors": {}, "count": 0}
    for answer in (reader.post("/pvs/put", json={"pv_name": DEV + "F", "value": 1}),
                   reader.post("/pvs/monitor", json={"pv_name": DEV + "F"}), reader.delete("/pvs/monitor/x")):
        assert answer.status_code == 403 and answer.json()["code"] == ErrorCode.FORBIDDEN.value, answer.text


def test_put_outside_the_allow_list_is_refused(device: str, admin: httpx.Client, ca: Any) -> None:
    ca.caput(device + "F", 1.0, wait=True, timeout=5)
    for pv_name in ("OTHER:GW:F", "IOCHTX:F", "iocht:GW:F"):  # another prefix; a longer one; case matters
        answer = admin.post("/pvs/put", json={"pv_name": pv_name, "value": 5})
        assert answer.status_code == 403, answer.text
        body = answer.json()
        assert body["code"] == ErrorCode.PV_NOT_ALLOWED.value and body["ok"] is False
        assert body["patterns"] == ["IOCHT:*"] and pv_name in body["message"]
    assert ca.caget(device + "F", timeout=5) == 1.0


def test_monitor_streams_a_put_as_server_sent_events(ca_daemon: Daemon, device: str, admin: httpx.Client,
                                                     reader: httpx.Client) -> None:
    answer = admin.post("/pvs/monitor", json={"pv_name": device + "F", "name": "gwf"})
    assert answer.json() == {"ok": True, "key": "gwf", "message": f"Monitoring {device}F"}, answer.text
    assert reader.get("/pvs/monitors").json() == {"monitors": {"gwf": device + "F"}, "count": 1}
    with EventStream(ca_daemon, "/api/v1/pvs/monitor/gwf/events", bearer(READ)) as stream:
        wait_until(lambda: any(name == "value" for name, _ in stream.named), what="the monitor's first value")
        put_value(admin, device + "F", 42.25)
        event = wait_until(lambda: next((data for name, data in stream.named
                                         if name == "value" and data["value"] == 42.25), None), what="the put's event")
        assert event["key"] == "gwf" and event["pv_name"] == device + "F"
        assert {"severity", "timestamp"} <= set(event)
        answer = admin.delete("/pvs/monitor/gwf")
        assert answer.json() == {"ok": True, "key": "gwf", "message": "Stopped monitoring gwf"}, answer.text
        wait_until(lambda: any(name == "closed" for name, _ in stream.named), what="the stream's end")
    again = admin.delete("/pvs/monitor/gwf")
    assert again.status_code == 404 and again.json()["code"] == ErrorCode.PV_MONITOR_NOT_FOUND.value
    missing = reader.get("/pvs/monitor/gwf/events")
    assert missing.status_code == 404 and missing.json()["code"] == ErrorCode.PV_MONITOR_NOT_FOUND.value


def test_cors_for_the_named_origin_only(ca_daemon: Daemon, reader: httpx.Client) -> None:
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    allowed = httpx.options(ca_daemon.url + "/api/v1/pvs/get", headers={"Origin": ORIGIN, **preflight})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in allowed.headers["access-control-allow-methods"]
    for path in ("/pvs/provider", "/plugins", "/nowhere"):  # the list's fast lane and a 404 too
        answer = reader.get(path, headers={"Origin": ORIGIN})
        assert answer.headers.get("access-control-allow-origin") == ORIGIN, (path, answer.headers)
    other = "http://elsewhere.example"
    refused = httpx.options(ca_daemon.url + "/api/v1/pvs/get", headers={"Origin": other, **preflight})
    assert "access-control-allow-origin" not in refused.headers
    for origin, method, headers, named in ((other, "POST", "content-type", other), (ORIGIN, "PUT", "", "'PUT'"),
                                           (ORIGIN, "POST", "authorization,X-Evil", "x-evil")):
        asked = {"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers}
        refused = httpx.options(ca_daemon.url + "/api/v1/pvs/get", headers=asked)
        assert refused.status_code == 403 and refused.json()["code"] == ErrorCode.FORBIDDEN.value, refused.text
        assert named in refused.json()["message"] and refused.json()["ok"] is False, refused.text
    for path in ("/pvs/provider", "/plugins"):
        assert "access-control-allow-origin" not in reader.get(path, headers={"Origin": other}).headers


def gateway_restarts_metric(api: httpx.Client) -> float:
    """``iochost_pv_gateway_restarts_total`` from ``GET /metrics`` (at the root)."""
    answer = api.get(str(api.base_url).removesuffix("/api/v1/") + "/metrics")
    assert answer.status_code == 200, answer.text
    line = next(line for line in answer.text.splitlines() if line.startswith("iochost_pv_gateway_restarts_total "))
    return float(line.split()[1])


def test_killed_gateway_process_is_restarted_and_shown(ca_daemon: Daemon, device: str, admin: httpx.Client,
                                                       reader: httpx.Client) -> None:
    assert admin.post("/pvs/monitor", json={"pv_name": device + "F", "name": "survivor"}).json()["ok"]
    before, counted = gateway_status(reader)["gateway"], gateway_restarts_metric(reader)
    assert before["running"] and before["pid"]
    with EventStream(ca_daemon, "/api/v1/pvs/monitor/survivor/events", bearer(READ)) as stream:
        wait_until(lambda: any(name == "value" for name, _ in stream.named), what="the monitor's first value")
        os.kill(before["pid"], signal.SIGKILL)
        wait_until(lambda: any(name == "disconnected" for name, _ in stream.named), what="the stream told")
        after = wait_until(lambda: (s := gateway_status(reader)["gateway"])["running"] and s, what="a new process")
        assert after["pid"] != before["pid"] and after["restarts"] == before["restarts"] + 1
        assert "SIGKILL" in after["last_failure"] and str(before["pid"]) in after["last_failure"]
        assert f"PV gateway process (pid {before['pid']}) was killed by signal SIGKILL" in ca_daemon.log()
        assert gateway_restarts_metric(reader) == counted + 1
        assert reader.get("/pvs/monitors").json()["monitors"] == {"survivor": device + "F"}

        def resumed() -> bool:  # the new process subscribed again: a put reaches the same stream
            put_value(admin, device + "F", value := float(len(stream.named)))
            return wait_until(lambda: any(n == "value" and d["value"] == value for n, d in stream.named[-3:]),
                              timeout=5, what="a value after the restart")
        wait_until(resumed, timeout=60, interval=0.5, what="the monitor resumed")
    assert admin.delete("/pvs/monitor/survivor").json()["ok"]


@pytest.mark.slow
def test_stopped_gateway_process_is_killed_as_hung(ca_daemon: Daemon, device: str, reader: httpx.Client) -> None:
    """A child that answers nothing (SIGSTOP) never holds the API: the get answers ok false
    once its timeout and the margin passed, and the child is replaced."""
    get_value(reader, device + "F")
    before = gateway_status(reader)["gateway"]
    os.kill(before["pid"], signal.SIGSTOP)
    try:
        answer = reader.post("/pvs/get", json={"pv_name": device + "F", "timeout": 1})
    finally:
        try:
            os.kill(before["pid"], signal.SIGCONT)  # if the daemon has not killed it, this test's failure shows
        except ProcessLookupError:
            pass
    assert answer.status_code == 200 and answer.json()["ok"] is False, answer.text
    assert "no answer from the PV gateway" in answer.json()["error"]
    assert get_value(reader, device + "F") is not None  # at once: a new process answers
    wait_until(lambda: before["pid"] not in live_processes(), what="the hung process killed")
    assert "killing it as hung" in ca_daemon.log()
    after = gateway_status(reader)["gateway"]
    assert after["pid"] != before["pid"] and after["restarts"] == before["restarts"] + 1


def test_monitor_keys_with_slash_and_percent(ca_daemon: Daemon, device: str, admin: httpx.Client) -> None:
    """A key is any PV name, and a PV name may hold '/' and '%': such a monitor can be followed
    and stopped (it could not: its slot stayed taken), with the key as it is or percent-encoded."""
    for key, path in (("dev/a%b", "dev/a%25b"), ("dev/c", "dev%2Fc")):
        assert admin.post("/pvs/monitor", json={"pv_name": device + "F", "name": key}).json()["key"] == key
        with EventStream(ca_daemon, f"/api/v1/pvs/monitor/{path}/events", bearer(ADMIN)) as stream:
            wait_until(lambda: any(name == "value" and data["key"] == key for name, data in stream.named),
                       what="the monitor's first value")
            answer = admin.delete(f"/pvs/monitor/{path}")
            assert answer.json() == {"ok": True, "key": key, "message": f"Stopped monitoring {key}"}, answer.text
            wait_until(lambda: any(name == "closed" for name, _ in stream.named), what="the stream's end")
    assert admin.get("/pvs/monitors").json() == {"monitors": {}, "count": 0}


@pytest.mark.slow
def test_stopped_gateway_process_with_only_monitors_is_replaced(ca_daemon: Daemon, device: str, admin: httpx.Client,
                                                                reader: httpx.Client) -> None:
    """SIGSTOP while monitors exist and nothing is asked: the streams would stay silent for
    good, the process shown running. Its missed ping gets it killed as hung; the stream is
    told, and the monitor resumes in a new process."""
    assert admin.post("/pvs/monitor", json={"pv_name": device + "F", "name": "frozen"}).json()["ok"]
    before = gateway_status(reader)["gateway"]
    with EventStream(ca_daemon, "/api/v1/pvs/monitor/frozen/events", bearer(READ)) as stream:
        wait_until(lambda: any(name == "value" for name, _ in stream.named), what="the monitor's first value")
        os.kill(before["pid"], signal.SIGSTOP)
        try:
            wait_until(lambda: any(name == "disconnected" for name, _ in stream.named), timeout=60,
                       what="the stream told of the stopped process")
        finally:
            try:
                os.kill(before["pid"], signal.SIGCONT)  # if the daemon has not killed it, this test's failure shows
            except ProcessLookupError:
                pass
        wait_until(lambda: before["pid"] not in live_processes(), what="the stopped process killed")
        after = wait_until(lambda: (s := gateway_status(reader)["gateway"])["running"] and s, what="a new process")
        assert after["pid"] != before["pid"] and after["restarts"] == before["restarts"] + 1
        assert f"PV gateway process (pid {before['pid']}) gave no answer" in ca_daemon.log()

        def resumed() -> bool:  # the new process subscribed again: a put reaches the same stream
            put_value(admin, device + "F", value := 1000.0 + len(stream.named))
            return wait_until(lambda: any(n == "value" and d["value"] == value for n, d in stream.named[-3:]),
                              timeout=5, what="a value after the restart")
        wait_until(resumed, timeout=60, interval=0.5, what="the monitor resumed")
    assert admin.delete("/pvs/monitor/frozen").json()["ok"]

