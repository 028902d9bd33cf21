"""The event stream of ``GET /api/v1/events``: subscribers' queues, and effects as events."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import AsyncGenerator

from iochost.supervisor import lifecycle_types as t
from iochost.supervisor.public import StreamEvent

log = logging.getLogger("iochost.supervisor")

EVENT_QUEUE_SIZE = 1000


class EventBus:
    """Hands every published event to every subscriber; one too slow to keep up is dropped,
    never waited for (the event loop routes every plugin's messages)."""

    def __init__(self) -> None:
        self._subscribers: set[asyncio.Queue[StreamEvent]] = set()

    def publish(self, event: StreamEvent) -> None:
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                log.warning("event subscriber too slow; dropping it")
                self._subscribers.discard(queue)

    async def subscribe(self, keepalive: float | None = None) -> AsyncGenerator[StreamEvent | None, None]:
        """Every event from now on; ``None`` after ``keepalive`` seconds without one."""
        queue: asyncio.Queue[StreamEvent] = asyncio.Queue(EVENT_QUEUE_SIZE)
        self._subscribers.add(queue)
        try:
            while True:
                try:
                    yield await asyncio.wait_for(queue.get(), keepalive)
                except asyncio.TimeoutError:
                    yield None
        finally:
            self._subscribers.discard(queue)


def stream_event(plugin: str, effect: t.Effect) -> StreamEvent | None:
    """What clients see of one lifecycle effect, or None for an effect they do not see."""
    now = datetime.now(timezone.utc)
    if isinstance(effect, t.Transitioned):
        return StreamEvent(type="transition", plugin=plugin, at=effect.transition.at,
                           data=effect.transition.model_dump(mode="json"))
    if isinstance(effect, t.StatusUpdate):
        return StreamEvent(type="status", plugin=plugin, at=now,
                           data={"status": effect.status, "message": effect.message})
    if isinstance(effect, t.RunUpdate):
        return StreamEvent(type="run", plugin=plugin, at=now, data=effect.run.model_dump(mode="json"))
    if isinstance(effect, t.UpgradeUpdate):
        return StreamEvent(type="upgrade", plugin=plugin, at=now, data={
            "phase": effect.phase, "from_commit": effect.from_commit, "to_commit": effect.to_commit,
            "reason": effect.reason})
    return None
