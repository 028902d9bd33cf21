"""``/health``: what Kubernetes probes and an operator's first curl want to know.

Unauthenticated, so probes need no token; nothing here names a plugin.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from iochost.api.deps import get_supervisor
from iochost.supervisor import Supervisor
from iochost.supervisor.models import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
async def health(sup: Supervisor = Depends(get_supervisor)) -> Health:
    """Counts per state, ``degraded`` when a plugin crashed or failed (iocmng's path)."""
    return sup.health()


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
