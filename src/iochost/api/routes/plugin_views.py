"""What a plugin's page shows beyond its record: its PVs described and followed live, its log
followed live, and the config.yaml it runs. All read-only (a read token suffices); the web
dashboard (``/ui/``) is built on these, and scripts may use them as well."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, AsyncIterator

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from iochost.api.auth import require_read
from iochost.api.deps import get_supervisor, get_watches
from iochost.api.routes.events import SSE_HEADERS, SSE_KEEPALIVE, until_stopping
from iochost.config import ConfigError, PluginConfig, PVGroup, load_config, plugin_mode
from iochost.config.issues import CONFIG_FILE
from iochost.display.pv_list import PanelPV, plugin_pv_list
from iochost.errors import ErrorCode, IochostError
from iochost.kinds import Kind
from iochost.pvgateway.monitors import Closed
from iochost.pvgateway.watch import Watches
from iochost.supervisor import Supervisor

router = APIRouter(prefix="/plugins", tags=["plugins"])
_SSE_DOC: dict[int | str, dict[str, Any]] = {200: {"content": {"text/event-stream": {}}}}


class PVList(BaseModel):
    name: str
    pvs: list[PanelPV]


class ConfigText(BaseModel):
    name: str
    commit: str | None = Field(description="the commit of the checkout it runs")
    file: str = Field(description="the file's name in the plugin's folder")
    text: str | None = Field(description="its text (null while no checkout is in place)")


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False, allow_nan=False)}\n\n".encode()


def _pv_list(name: str, prefix: str, kind: Kind, plugin_dir: Path | None, parameters: dict[str, Any],
             served: list[str]) -> list[PanelPV]:
    config = PluginConfig(pvs=PVGroup()) if plugin_dir is None else load_config(plugin_dir)
    if parameters:
        config = config.with_parameters(parameters)
    return plugin_pv_list(name, prefix, kind, plugin_mode(kind, config.parameters), config, served)


async def _pvs_of(sup: Supervisor, name: str) -> list[PanelPV]:
    view = sup.view(name)  # PLUGIN_NOT_FOUND: 404
    try:
        return await asyncio.to_thread(_pv_list, name, sup.settings.prefix, view.entry.kind, view.plugin_dir,
                                       dict(view.entry.parameters), list(view.record.pvs))
    except ConfigError as exc:  # a checkout changed underneath: validated at add
        raise IochostError(ErrorCode.INTERNAL_ERROR, f"{name}: its checkout's config.yaml no longer loads: {exc}",
                           plugin=name) from None


@router.get("/{name}/pvs", response_model=PVList, dependencies=[Depends(require_read)])
async def plugin_pvs(name: str, sup: Supervisor = Depends(get_supervisor)) -> PVList:
    """Every PV of the plugin with its group, label, type, unit, limits and whether an
    operator may write it: what its Phoebus panel shows, as data."""
    return PVList(name=name, pvs=await _pvs_of(sup, name))


@router.get("/{name}/pvs/events", dependencies=[Depends(require_read)], responses=_SSE_DOC)
async def plugin_pv_events(name: str, request: Request, sup: Supervisor = Depends(get_supervisor),
                           watches: Watches = Depends(get_watches)) -> StreamingResponse:
    """The plugin's PVs live, through the PV gateway: ``event: value`` with ``{pv_name, value,
    severity, alarm, timestamp}`` (the latest known of each first), ``event: disconnected``
    with ``error``. The monitors (keys ``watch:<PV>``) are shared by every open stream."""
    names = [pv.pv for pv in await _pvs_of(sup, name)]

    async def stream() -> AsyncIterator[bytes]:
        yield f": iochost pvs of {name}\n\n".encode()
        updates = watches.follow(names, keepalive=SSE_KEEPALIVE)
        async for item in until_stopping(request.app.state.stopping, updates):
            if item is None:
                yield b": keepalive\n\n"
                continue
            pv_name, update = item
            if isinstance(update, Closed):
                yield _sse("disconnected", {"pv_name": pv_name, "error": update.reason})
            elif update.connected:
                yield _sse("value", {"pv_name": pv_name, "value": update.value, "severity": update.severity,
                                     "alarm": update.alarm, "timestamp": update.timestamp})
            else:
                yield _sse("disconnected", {"pv_name": pv_name, "error": update.error})

    return StreamingResponse(stream(), media_type="text/event-stream", headers=SSE_HEADERS)


@router.get("/{name}/logs/events", dependencies=[Depends(require_read)], responses=_SSE_DOC)
async def plugin_log_events(name: str, request: Request,
                            lines: int = Query(default=200, ge=0, le=5000, description="the tail sent first"),
                            sup: Supervisor = Depends(get_supervisor)) -> StreamingResponse:
    """The log followed: ``event: tail`` with the last ``lines``, then ``event: lines`` with each
    new line as the worker writes it; ``event: dropped`` when this reader fell behind."""
    sup.view(name)  # PLUGIN_NOT_FOUND: 404, not an empty stream

    async def stream() -> AsyncIterator[bytes]:
        tail, follower = sup.follow_log(name, lines, SSE_KEEPALIVE)
        yield _sse("tail", {"lines": tail[-lines:] if lines else []})
        async for item in until_stopping(request.app.state.stopping, follower):
            if item is None:
                yield b": keepalive\n\n"
            elif isinstance(item, int):
                yield _sse("dropped", {"writes": item})
            else:
                yield _sse("lines", {"lines": item})

    return StreamingResponse(stream(), media_type="text/event-stream", headers=SSE_HEADERS)


@router.get("/{name}/config", response_model=ConfigText, dependencies=[Depends(require_read)])
async def plugin_config(name: str, sup: Supervisor = Depends(get_supervisor)) -> ConfigText:
    """The config.yaml of the checkout the plugin runs, as written (parameter overrides are
    in the record's ``parameters``)."""
    view = sup.view(name)
    text = None
    if view.plugin_dir is not None:
        try:
            text = await asyncio.to_thread((view.plugin_dir / CONFIG_FILE).read_text, "utf-8", "replace")
        except FileNotFoundError:
            text = ""
    return ConfigText(name=name, commit=view.entry.commit, file=CONFIG_FILE, text=text)
