"""FastAPI dependencies that hand routes the daemon's objects."""

from __future__ import annotations

from fastapi import Request

from iochost.supervisor import Supervisor


def get_supervisor(request: Request) -> Supervisor:
    return request.app.state.supervisor
