"""``/health``: what a liveness probe and an operator's first curl want to know."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from iochost.api.deps import get_supervisor
from iochost.supervisor import Supervisor
from iochost.supervisor.models import Health

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
async def health(sup: Supervisor = Depends(get_supervisor)) -> Health:
    """Unauthenticated, so probes need no token; it names no plugin."""
    return sup.health()
