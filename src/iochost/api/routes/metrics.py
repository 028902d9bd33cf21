"""``/metrics``: the daemon's state for Prometheus, at the root path scrapers expect.

It names plugins, so it takes the read token like every GET (open when no token is set).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from iochost.api.auth import require_read
from iochost.api.deps import get_metrics
from iochost.api.prometheus import Metrics

router = APIRouter(tags=["metrics"])

_EXPOSITION = {"schema": {"type": "string"}}  # errors stay JSON (``response_class=Response`` keeps them so)


@router.get("/metrics", dependencies=[Depends(require_read)], response_class=Response,
            responses={200: {"description": "Prometheus text format, or OpenMetrics when the Accept header "
                                            "asks for it (as Prometheus does)",
                             "content": {"text/plain": _EXPOSITION, "application/openmetrics-text": _EXPOSITION}}})
async def metrics(request: Request, registry: Metrics = Depends(get_metrics)) -> Response:
    """Plugins per state, restarts, job runs per outcome, worker memory, REST requests and
    latency, and the daemon's own process. ``async``: the collector reads the supervisor's
    state on the event loop, where it changes."""
    body, content_type = registry.exposition(request.headers.get("accept"))
    return Response(body, media_type=content_type)
