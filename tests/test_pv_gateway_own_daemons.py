"""The REST PV gateway (``/api/v1/pvs/*``) on daemons of their own: the PVA provider, shutdown with open streams and
requests leaving no child, monitor events with alarm and time, a stream ended getting no later update, the gateway's
line limit.

Real daemons and a real standalone soft IOC (tests/fixtures/device_ioc.py); the tests sharing one CA daemon are in
test_pv_gateway.py.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from daemon_harness import Daemon, EventStream, live_processes, wait_until
from iochost.alarms import STATUSES
from iochost.errors import ErrorCode
from iochost.pvgateway import protocol
from iochost.pvgateway.monitors import FOLLOWER_QUEUE, Closed, MonitorTable
from test_pv_gateway import (
    DEV,
    ORIGIN,
    device,  # noqa: F401 - a fixture
    gateway_status,
    get_value,
    put_value,
)

DEVICE_SEGMENT = "GWD"  # the device's PVs here: test_pv_gateway's device serves the same under GW (see there)


@pytest.mark.slow
def test_pva_gateway_and_shutdown_leaves_no_child(tmp_path: Path, device: str, ca: Any) -> None:
    """The default provider (PVA), no tokens (loopback), no CORS, small caps; SIGTERM ends the child."""
    caps = ("--pv-gateway-max-monitors", "1", "--pv-gateway-max-pending", "1")
    with Daemon(tmp_path / "data", *caps).serving() as daemon, daemon.client() as api:
        assert gateway_status(api)["provider"] == "pva" and not gateway_status(api)["gateway"]["running"]
        put_value(api, device + "F", -3.25)
        assert ca.caget(device + "F", timeout=5) == -3.25
        assert get_value(api, device + "F") == -3.25
        put_value(api, device + "W", [4, 3, 2, 1.5])
        assert get_value(api, device + "W") == [4.0, 3.0, 2.0, 1.5]
        put_value(api, device + "S", "über")
        assert get_value(api, device + "S") == "über"
        assert api.post("/pvs/monitor", json={"pv_name": device + "F"}).json()["key"] == device + "F"
        over = api.post("/pvs/monitor", json={"pv_name": device + "S"})
        assert over.status_code == 429 and over.json()["code"] == ErrorCode.PV_GATEWAY_LIMIT.value, over.text
        waiting = threading.Thread(target=lambda: api.post("/pvs/get", json={"pv_name": DEV + "NOBODY", "timeout": 10}))
        waiting.start()  # one get in progress: the cap
        try:
            wait_until(lambda: gateway_status(api)["gateway"]["pending"] == 1, what="the get in progress")
            busy = api.post("/pvs/get", json={"pv_name": device + "F"})
            assert busy.status_code == 429 and busy.json()["code"] == ErrorCode.PV_GATEWAY_LIMIT.value, busy.text
        finally:
            waiting.join(60)
        with EventStream(daemon, f"/api/v1/pvs/monitor/{device}F/events") as stream:
            put_value(api, device + "F", 8.5)
            wait_until(lambda: any(n == "value" and d["value"] == 8.5 for n, d in stream.named), what="the PVA event")
        no_cors = httpx.options(daemon.url + "/api/v1/pvs/get",
                                headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in no_cors.headers
        child = gateway_status(api)["gateway"]["pid"]
        assert child in live_processes()
    wait_until(lambda: child not in live_processes(), what="the gateway process gone with the daemon")


@pytest.mark.slow
def test_shutdown_ends_open_streams_and_requests(tmp_path: Path) -> None:
    """SIGTERM with a /events stream, a monitor's stream and a get in progress: each ends at
    once (the get answered, the monitor's stream told), none is left for uvicorn to cancel
    (which logged "Exception in ASGI application" after its 5 s graceful wait)."""
    with Daemon(tmp_path / "data", env={"IOCMNG_PVA": "false"}).serving() as daemon, daemon.client() as api:
        assert api.post("/pvs/monitor", json={"pv_name": DEV + "NOBODY", "name": "k"}).json()["ok"]
        answers: list[httpx.Response] = []
        waiting = threading.Thread(target=lambda: answers.append(
            httpx.post(daemon.url + "/api/v1/pvs/get", json={"pv_name": DEV + "NOBODY", "timeout": 60}, timeout=90)))
        with EventStream(daemon), EventStream(daemon, "/api/v1/pvs/monitor/k/events") as monitor:
            waiting.start()
            try:
                wait_until(lambda: gateway_status(api)["gateway"]["pending"] == 1, what="the get in progress")
                assert daemon.terminate() == 0, daemon.log()[-2000:]
            finally:
                waiting.join(90)
            wait_until(lambda: ("closed", {"key": "k", "reason": "the daemon stops"}) in monitor.named,
                       what="the monitor's stream told")
    assert len(answers) == 1 and answers[0].json() == {"ok": False, "pv_name": DEV + "NOBODY", "value": None,
                                                       "error": "the daemon stops"}, answers
    assert "Exception in ASGI application" not in daemon.log()
    assert "timeout graceful shutdown exceeded" not in daemon.log()


@pytest.mark.slow
@pytest.mark.parametrize("pva", ["true", "false"])
def test_monitor_events_carry_alarm_and_time(tmp_path: Path, device: str, ca: Any, pva: str) -> None:
    """A monitor's value events give the record's alarm severity and status and its timestamp,
    as a CA client reads them (FORMAT_TIME), over either provider: an HIHI alarm, then none."""
    with Daemon(tmp_path / "data", env={"IOCMNG_PVA": pva}).serving() as daemon, daemon.client() as api:
        assert api.post("/pvs/monitor", json={"pv_name": device + "F", "name": "alarmed"}).json()["ok"]
        try:
            ca.caput(device + "F.HIHI", 100, wait=True, timeout=5)
            ca.caput(device + "F.HHSV", "MAJOR", wait=True, timeout=5)
            with EventStream(daemon, "/api/v1/pvs/monitor/alarmed/events") as stream:
                for value, severity, alarm in ((150.5, 2, "HIHI"), (1.5, 0, ""), (-150.25, 0, "")):
                    seen = len(stream.named)  # the PV may hold the value already: its event is the one after
                    put_value(api, device + "F", value)
                    event = wait_until(lambda: next((data for name, data in stream.named[seen:] if name == "value"
                                                     and data["value"] == value), None), what=f"{value}'s event")
                    read = ca.caget(device + "F", format=ca.FORMAT_TIME, timeout=5)
                    assert (event["severity"], event["alarm"]) == (severity, alarm)
                    assert (read.severity, STATUSES[read.status] if read.status else "") == (severity, alarm)
                    assert event["timestamp"] == pytest.approx(read.timestamp, abs=1e-6), (event, read.timestamp)
        finally:
            ca.caput(device + "F.HHSV", "NO_ALARM", wait=True, timeout=5)


def test_a_stream_ended_gets_no_later_update() -> None:
    """A monitor's key given to another PV ends its followers' streams; a reader too slow to
    have read that end yet must still get it, not the new PV's values under the old name (its
    queue kept taking updates, whose overflow pushed the ``Closed`` out). Pure: the updates
    are fed as the child's reader feeds them."""
    async def scenario() -> list[Any]:
        monitors = MonitorTable()
        monitors.claim("k", "A:OLD")
        updates = monitors.follow("k", keepalive=60)
        first = asyncio.ensure_future(anext(updates))
        await asyncio.sleep(0)  # the follower is registered
        monitors.deliver(protocol.Update(key="k", value=1))
        seen = [await first]
        monitors.claim("k", "A:NEW")  # what PVGateway.monitor does with a key in use
        for value in range(FOLLOWER_QUEUE + 1):
            monitors.deliver(protocol.Update(key="k", value=100 + value))
        seen.append(await anext(updates))
        await updates.aclose()
        return seen

    first, then = asyncio.run(scenario())
    assert first.value == 1 and isinstance(then, Closed) and "A:NEW" in then.reason, then


@pytest.mark.slow
def test_put_over_the_gateways_line_limit_is_refused(tmp_path: Path, device: str, ca: Any) -> None:
    """A body the daemon takes (--max-body-bytes raised) whose put is longer than a line the
    gateway's process reads: 413 naming both sizes, at once. It was sent, dropped by the
    process unanswered, and the process killed as hung (its monitors cut) once the timeout passed."""
    with Daemon(tmp_path / "data", "--max-body-bytes", str(3 * protocol.MAX_REQUEST_BYTES),
                env={"IOCMNG_PVA": "false"}).serving() as daemon, daemon.client() as api:
        put_value(api, device + "S", "small")
        before = gateway_status(api)["gateway"]
        answer = api.post("/pvs/put", json={"pv_name": device + "S", "value": "x" * 2 * protocol.MAX_REQUEST_BYTES,
                                             "timeout": 1})
        assert answer.status_code == 413 and answer.json()["code"] == ErrorCode.PAYLOAD_TOO_LARGE.value, answer.text
        assert str(protocol.MAX_REQUEST_BYTES) in answer.json()["message"]
        assert get_value(api, device + "S") == "small"
        after = gateway_status(api)["gateway"]
        assert after["pid"] == before["pid"] and after["restarts"] == 0 and after["pending"] == 0

