"""``/events``: plugin transitions, status changes and job runs as Server-Sent Events."""

from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncGenerator, AsyncIterator, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from iochost.api.auth import require_read
from iochost.api.deps import get_supervisor
from iochost.supervisor import Supervisor

router = APIRouter(tags=["events"])

SSE_KEEPALIVE = 15.0  # seconds between comments on a quiet stream, so proxies keep it open
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # and so no proxy buffers it
T = TypeVar("T")


async def until_stopping(stopping: asyncio.Event, items: AsyncGenerator[T, None]) -> AsyncIterator[T]:
    """``items`` until the server begins to stop (``stopping``, set by ``app.state.begin_stop``).

    uvicorn waits for open responses before the app's shutdown, then cancels them, which
    logs "Exception in ASGI application": an event stream must end by itself first."""
    stopped = asyncio.ensure_future(stopping.wait())
    following: asyncio.Future[T] | None = None
    try:
        while not stopping.is_set():
            following = asyncio.ensure_future(anext(items))
            await asyncio.wait({following, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not following.done():
                return
            try:
                item = following.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        stopped.cancel()
        if following is not None and not following.done():
            following.cancel()  # the generator ends at its await (its finally runs)
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await following
        await items.aclose()


@router.get("/events", dependencies=[Depends(require_read)],
            responses={200: {"content": {"text/event-stream": {}}, "description": "SSE stream of StreamEvent"}})
async def events(request: Request, sup: Supervisor = Depends(get_supervisor)) -> StreamingResponse:
    """One ``data:`` line of JSON per event; a comment every 15 s keeps proxies from closing it."""

    async def stream() -> AsyncIterator[bytes]:
        yield b": iochost events\n\n"
        async for event in until_stopping(request.app.state.stopping, sup.subscribe(keepalive=SSE_KEEPALIVE)):
            if await request.is_disconnected():
                return
            if event is None:
                yield b": keepalive\n\n"
            else:
                yield f"event: {event.type}\ndata: {event.model_dump_json()}\n\n".encode()

    return StreamingResponse(stream(), media_type="text/event-stream", headers=SSE_HEADERS)
