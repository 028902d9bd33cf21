"""``/health``: what Kubernetes probes and an operator's first curl want to know.

Unauthenticated, so probes need no token. ``/health/live`` and ``/health/ready`` name no
plugin; ``/health`` names every plugin that makes it degraded, with its last error, to a
caller the read token admits (everyone, when no token is configured), as ``GET /plugins`` would.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from iochost.api.auth import may_read
from iochost.api.deps import get_supervisor
from iochost.supervisor import Supervisor
from iochost.supervisor.public import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
async def health(sup: Supervisor = Depends(get_supervisor), reader: bool = Depends(may_read)) -> Health:
    """Counts per state; ``degraded`` while a plugin failed, crashed, crash-loops, shows STATUS
    ERROR/FAILED or is not running as meant (iocmng's path), naming each in ``problems``."""
    return sup.health(named=reader)


@router.get("/health/live", response_model=Readiness)
async def live(sup: Supervisor = Depends(get_supervisor)) -> Readiness:
    """200 as soon as the API runs (Kubernetes livenessProbe): restoring plugins is not dying."""
    return sup.readiness()


@router.get("/health/ready", response_model=Readiness, responses={503: {"model": Readiness}})
async def ready(sup: Supervisor = Depends(get_supervisor)) -> Readiness | JSONResponse:
    """200 once the registry's plugins are restored, 503 until then (Kubernetes readinessProbe)."""
    answer = sup.readiness()
    if not answer.ready:
        return JSONResponse(answer.model_dump(), status_code=503)
    return answer
