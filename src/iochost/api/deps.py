"""FastAPI dependencies that hand routes the daemon's objects."""

from __future__ import annotations

from fastapi import Request

from iochost.api.prometheus import Metrics
from iochost.pvgateway.client import PVGateway
from iochost.pvgateway.watch import Watches
from iochost.supervisor import Supervisor


async def get_supervisor(request: Request) -> Supervisor:
    """``async`` so FastAPI calls it on the event loop, not in its thread pool."""
    return request.app.state.supervisor


async def get_metrics(request: Request) -> Metrics:
    """The app's Prometheus registry and request metrics (``api.prometheus``)."""
    return request.app.state.metrics


async def get_gateway(request: Request) -> PVGateway:
    """The PV gateway (``pvgateway.client``); its process starts on first use."""
    return request.app.state.pv_gateway


async def get_watches(request: Request) -> Watches:
    """The PV gateway's monitors that open web pages share (``pvgateway.watch``)."""
    return request.app.state.pv_watches
