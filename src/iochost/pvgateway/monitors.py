"""The PV gateway's monitors as the daemon keeps them: which PV each key follows (the table
``GET /pvs/monitors`` lists), the latest value of each, and the streams following them.

Pure bookkeeping on the event loop: ``client.PVGateway`` asks the child to start or stop a
monitor and feeds its updates in here; a ``Closed`` ends each stream of a key that was
stopped or given to another PV.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

from iochost.pvgateway import protocol as p

FOLLOWER_QUEUE = 64  # updates a slow SSE reader may lag behind; the oldest go first


class Closed:
    """The end of a monitor's stream: the monitor was stopped, or the daemon stops."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class MonitorTable:
    """Monitor keys -> PV names, their latest values and their followers' queues."""

    def __init__(self) -> None:
        self._names: dict[str, str] = {}  # key -> pv_name, as the API asked
        self._latest: dict[str, p.Update] = {}
        self._followers: dict[str, set[asyncio.Queue[p.Update | Closed]]] = {}

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, key: object) -> bool:
        return key in self._names

    def get(self, key: str) -> str | None:
        """The PV monitor ``key`` follows, if there is one."""
        return self._names.get(key)

    def listing(self) -> dict[str, str]:
        """A copy of the table: key -> PV name."""
        return dict(self._names)

    def claim(self, key: str, pv_name: str) -> str | None:
        """``key`` follows ``pv_name`` from now on; returns the PV it followed (None: new).
        A key given to another PV ends its followers' streams and forgets its latest value."""
        previous = self._names.get(key)
        if previous not in (None, pv_name):
            self.end_followers(key, f"monitor {key!r} now follows {pv_name!r}")
            self._latest.pop(key, None)
        self._names[key] = pv_name
        return previous

    def undo(self, key: str, pv_name: str, previous: str | None) -> None:
        """A monitor start that failed: the key is as before (the child keeps what it had under it)."""
        if self._names.get(key) != pv_name:
            return  # changed again meanwhile
        if previous is None:
            del self._names[key]
            self._latest.pop(key, None)
        else:
            self._names[key] = previous

    def drop(self, key: str, reason: str) -> None:
        """Monitor ``key`` is gone; its followers' streams end with ``reason``."""
        del self._names[key]
        self._latest.pop(key, None)
        self.end_followers(key, reason)

    def deliver(self, update: p.Update) -> None:
        """An update from the child, to the followers of its key (a key no longer kept: dropped)."""
        if update.key not in self._names:
            return
        if update.connected:
            self._latest[update.key] = update
        for queue in self._followers.get(update.key, ()):
            offer(queue, update)

    def disconnected(self, reason: str) -> None:
        """The child died: every follower is told its PV is disconnected, and why."""
        for key in self._names:
            self.deliver(p.Update(key=key, connected=False, error=reason))

    def end_followers(self, key: str, reason: str) -> None:
        """Their streams end; no later update reaches them (a key given to another PV would
        otherwise push its values into a slow reader's queue, past the ``Closed``)."""
        for queue in self._followers.pop(key, ()):
            offer(queue, Closed(reason))

    def end_all(self, reason: str) -> None:
        """Every stream ends (the daemon stops)."""
        for key in list(self._followers):
            self.end_followers(key, reason)

    async def follow(self, key: str, keepalive: float) -> AsyncGenerator[p.Update | Closed | None, None]:
        """Monitor ``key``'s updates: the latest known first, then each new one; ``None``
        after ``keepalive`` seconds without one; a ``Closed`` last."""
        if key not in self._names:  # stopped since the caller looked
            yield Closed("the monitor was stopped")
            return
        queue: asyncio.Queue[p.Update | Closed] = asyncio.Queue(FOLLOWER_QUEUE)
        self._followers.setdefault(key, set()).add(queue)
        try:
            if key in self._latest:
                yield self._latest[key]
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), keepalive)
                except asyncio.TimeoutError:
                    yield None
                    continue
                yield item
                if isinstance(item, Closed):
                    return
        finally:
            followers = self._followers.get(key)
            if followers is not None:
                followers.discard(queue)
                if not followers:
                    del self._followers[key]


def offer(queue: asyncio.Queue[Any], item: Any) -> None:
    """Into a follower's queue; when it is full the oldest update makes room (a slow reader
    loses old values, never the daemon's time)."""
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(item)
