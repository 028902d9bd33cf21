"""FastAPI dependencies that hand routes the daemon's objects."""

from __future__ import annotations

from fastapi import Request

from iochost.supervisor import Supervisor


async def get_supervisor(request: Request) -> Supervisor:
    """``async`` so FastAPI calls it on the event loop, not in its thread pool."""
    return request.app.state.supervisor
