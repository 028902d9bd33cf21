"""``/events``: plugin transitions, status changes and job runs as Server-Sent Events."""

from __future__ import annotations

from typing import AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from iochost.api.auth import require_read
from iochost.api.deps import get_supervisor
from iochost.supervisor import Supervisor

router = APIRouter(tags=["events"])


@router.get("/events", dependencies=[Depends(require_read)],
            responses={200: {"content": {"text/event-stream": {}}, "description": "SSE stream of Event"}})
async def events(request: Request, sup: Supervisor = Depends(get_supervisor)) -> StreamingResponse:
    """One ``data:`` line of JSON per event; a comment every 15 s keeps proxies from closing it."""

    async def stream() -> AsyncIterator[bytes]:
        yield b": iochost events\n\n"
        async for event in sup.subscribe(keepalive=15.0):
            if await request.is_disconnected():
                return
            if event is None:
                yield b": keepalive\n\n"
            else:
                yield f"event: {event.type}\ndata: {event.model_dump_json()}\n\n".encode()

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
