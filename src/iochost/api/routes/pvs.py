"""``/pvs/*``: iocmng 2.7's REST PV gateway on iochost's own design (``iochost.pvgateway``).

iocmng's paths, bodies and answer fields: a PV's trouble (no such PV, a timeout, a refused
put) is ``200 {ok: false, error}`` as iocmng answers it, so its scripts keep testing
``ok``. iochost's differences: reads need the read token and every write (put, monitor
start and stop) the admin token; a put goes only to PVs matching ``--pv-gateway-allow``
(``403 PV_NOT_ALLOWED``); monitors and requests in progress are capped
(``429 PV_GATEWAY_LIMIT``); and a monitor streams its values as server-sent events.
"""

from __future__ import annotations

import json
import math
from typing import Any, AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, StrictBool, StrictFloat, StrictInt, StrictStr, field_validator

from iochost.api.auth import require_admin, require_read
from iochost.api.deps import get_gateway
from iochost.api.routes.events import SSE_HEADERS, SSE_KEEPALIVE
from iochost.pvgateway.client import PVGateway
from iochost.pvgateway.monitors import Closed
from iochost.pvgateway.protocol import PVName, Timeout
from iochost.sdk.pv_client import DEFAULT_TIMEOUT

router = APIRouter(prefix="/pvs", tags=["pv gateway"])

Scalar = StrictBool | StrictInt | StrictFloat | StrictStr


class PvGetRequest(BaseModel):
    model_config = {"extra": "forbid"}

    pv_name: PVName = Field(description="the full PV name")
    timeout: Timeout = Field(default=DEFAULT_TIMEOUT, description="seconds to wait for the value")


class PvPutRequest(BaseModel):
    model_config = {"extra": "forbid"}

    pv_name: PVName = Field(description="the full PV name; must match a --pv-gateway-allow pattern")
    value: Scalar | list[Scalar] = Field(description="a number, text, boolean, or an array of them")
    timeout: Timeout = Field(default=DEFAULT_TIMEOUT, description="seconds to wait for the server")

    @field_validator("value", mode="before")
    @classmethod
    def _one_problem(cls, value: Any) -> Any:
        """One clear error instead of one per member of the union. NaN and infinities, which
        Python's JSON reader lets in, would reach the gateway's process as null."""
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, float) and not math.isfinite(item):
                raise ValueError(f"{item} cannot be written: JSON has no NaN or infinity")
            if not isinstance(item, (bool, int, float, str)):
                raise ValueError(f"a number, text, boolean, or a flat array of them, not {type(item).__name__}")
        return value


class PvMonitorRequest(BaseModel):
    model_config = {"extra": "forbid"}

    pv_name: PVName = Field(description="the full PV name")
    name: PVName | None = Field(default=None, description="the monitor's key (default: pv_name); a key in use "
                                "is replaced")


class PvValueResponse(BaseModel):
    ok: bool
    pv_name: str
    value: Any = Field(default=None, description="JSON-safe: NaN and infinities as the strings \"NaN\", "
                       "\"Infinity\", \"-Infinity\"; bytes that are not UTF-8 as U+FFFD; arrays as lists")
    error: str | None = None


class PvPutResponse(BaseModel):
    ok: bool
    pv_name: str
    error: str | None = None


class PvMonitorResponse(BaseModel):
    ok: bool
    key: str | None = None
    message: str


class PvMonitorListResponse(BaseModel):
    monitors: dict[str, str] = Field(description="key -> PV name")
    count: int


class GatewayStatus(BaseModel):
    running: bool = Field(description="the gateway's process runs (it starts on the first request)")
    pid: int | None
    pending: int = Field(description="gets, puts and monitor changes in progress (--pv-gateway-max-pending)")
    monitors: int = Field(description="monitors (--pv-gateway-max-monitors)")
    restarts: int = Field(description="times the process ended without being asked, since the daemon started")
    last_failure: str | None = Field(description="how the process last ended unasked")
    last_failure_at: float | None = Field(description="when, seconds since 1970")


class PvProviderResponse(BaseModel):
    provider: str = Field(description="pva or ca (--pv-gateway-pva, IOCMNG_PVA)")
    gateway: GatewayStatus
    writable: list[str] = Field(description="the patterns of PVs a put may write (--pv-gateway-allow)")


@router.get("/provider", response_model=PvProviderResponse, dependencies=[Depends(require_read)])
async def provider(gw: PVGateway = Depends(get_gateway)) -> PvProviderResponse:
    """The client's provider, and whether the gateway's process is well."""
    return PvProviderResponse(provider=gw.provider, gateway=GatewayStatus(**gw.status()), writable=gw.patterns)


@router.post("/get", response_model=PvValueResponse, dependencies=[Depends(require_read)])
async def get(body: PvGetRequest, gw: PVGateway = Depends(get_gateway)) -> PvValueResponse:
    """The PV's current value; ``ok: false`` with the error when it cannot be read in time."""
    answer = await gw.get(body.pv_name, body.timeout)
    return PvValueResponse(ok=answer.ok, pv_name=body.pv_name, value=answer.value, error=answer.error)


@router.post("/put", response_model=PvPutResponse, dependencies=[Depends(require_admin)])
async def put(body: PvPutRequest, gw: PVGateway = Depends(get_gateway)) -> PvPutResponse:
    """Write the value; only PVs matching ``--pv-gateway-allow`` (default: this daemon's prefix)."""
    answer = await gw.put(body.pv_name, body.value, body.timeout)
    return PvPutResponse(ok=answer.ok, pv_name=body.pv_name, error=answer.error)


@router.post("/monitor", response_model=PvMonitorResponse, dependencies=[Depends(require_admin)])
async def monitor(body: PvMonitorRequest, gw: PVGateway = Depends(get_gateway)) -> PvMonitorResponse:
    """Subscribe; follow it with ``GET /pvs/monitor/{key}/events``."""
    key = body.name or body.pv_name
    answer = await gw.monitor(key, body.pv_name)
    if not answer.ok:
        return PvMonitorResponse(ok=False, key=key, message=answer.error or "")
    return PvMonitorResponse(ok=True, key=key, message=f"Monitoring {body.pv_name}")


@router.get("/monitors", response_model=PvMonitorListResponse, dependencies=[Depends(require_read)])
async def monitors(gw: PVGateway = Depends(get_gateway)) -> PvMonitorListResponse:
    table = gw.monitors()
    return PvMonitorListResponse(monitors=table, count=len(table))


@router.delete("/monitor/{key:path}", response_model=PvMonitorResponse, dependencies=[Depends(require_admin)])
async def unmonitor(key: str, gw: PVGateway = Depends(get_gateway)) -> PvMonitorResponse:
    """Stop it (``404 PV_MONITOR_NOT_FOUND`` if there is none); its event streams end. ``key``
    may hold ``/`` (a PV name may), as it is or percent-encoded."""
    await gw.unmonitor(key)
    return PvMonitorResponse(ok=True, key=key, message=f"Stopped monitoring {key}")


@router.get("/monitor/{key:path}/events", dependencies=[Depends(require_read)],
            responses={200: {"content": {"text/event-stream": {}}, "description": "SSE stream of the PV's values"}})
async def monitor_events(key: str, request: Request, gw: PVGateway = Depends(get_gateway)) -> StreamingResponse:
    """The monitor's values as server-sent events, the latest known first: ``event: value``
    with ``{key, pv_name, value, severity, alarm, timestamp}``, ``event: disconnected`` when the PV
    (or the gateway's process) goes away, ``event: closed`` when the monitor is stopped."""
    pv_name = gw.monitored(key)  # PV_MONITOR_NOT_FOUND now, as an error answer, not inside a stream
    updates = gw.follow(key, keepalive=SSE_KEEPALIVE)

    async def stream() -> AsyncIterator[bytes]:
        try:
            yield f": iochost pv monitor {key}\n\n".encode()
            async for item in updates:
                if await request.is_disconnected():
                    return
                if item is None:
                    yield b": keepalive\n\n"
                elif isinstance(item, Closed):
                    yield f"event: closed\ndata: {_json({'key': key, 'reason': item.reason})}\n\n".encode()
                    return
                else:
                    kind = "value" if item.connected else "disconnected"
                    data = {"key": key, "pv_name": pv_name, "value": item.value, "severity": item.severity,
                            "alarm": item.alarm, "timestamp": item.timestamp}
                    if item.error:
                        data["error"] = item.error
                    yield f"event: {kind}\ndata: {_json(data)}\n\n".encode()
        finally:
            await updates.aclose()

    return StreamingResponse(stream(), media_type="text/event-stream", headers=SSE_HEADERS)


def _json(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, allow_nan=False)
