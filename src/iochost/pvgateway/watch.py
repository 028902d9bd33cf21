"""Watches: the PV gateway's monitors a web page follows while it is open.

A plugin's page in the dashboard follows all of that plugin's PVs. Each PV gets one
gateway monitor under the key ``watch:<PV name>``, shared by every page that shows it and
stopped when the last one closes, so two open tabs cost the IOC one subscription, not two,
and ``GET /pvs/monitors`` (and the gateway's monitor cap) count what the pages hold.
A read token may watch: a watch only reads, and only the PVs the daemon names.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator

from iochost.pvgateway import protocol as p
from iochost.pvgateway.client import PVGateway
from iochost.pvgateway.monitors import FOLLOWER_QUEUE, Closed, offer

log = logging.getLogger("iochost.pvgateway")

WATCH_KEY = "watch:"  # the prefix of the monitor keys watches hold


class Watches:
    """How many open watches follow each PV; the first starts its monitor, the last stops it."""

    def __init__(self, gateway: PVGateway) -> None:
        self._gateway = gateway
        self._count: dict[str, int] = {}  # monitor key -> watches following it
        self._stopping: set[asyncio.Task[None]] = set()

    async def follow(self, pv_names: list[str], keepalive: float
                     ) -> AsyncGenerator[tuple[str, p.Update | Closed] | None, None]:
        """Each PV's updates as ``(pv_name, update)``, the latest known of each first; ``None``
        after ``keepalive`` seconds without one. A PV whose monitor cannot start yields one
        disconnected update carrying the reason (the page shows it; the others go on)."""
        keys = {WATCH_KEY + name: name for name in dict.fromkeys(pv_names)}
        merged: asyncio.Queue[tuple[str, p.Update | Closed]] = asyncio.Queue(FOLLOWER_QUEUE * max(1, len(keys)))
        pumps: list[asyncio.Task[None]] = []
        for key in keys:
            self._count[key] = self._count.get(key, 0) + 1  # before any await: a concurrent page shares it
        try:
            started = await asyncio.gather(*(self._start(key, name) for key, name in keys.items()))
            for (key, name), problem in zip(keys.items(), started, strict=True):
                if problem is not None:
                    merged.put_nowait((name, p.Update(key=key, connected=False, error=problem)))
                else:
                    pumps.append(asyncio.ensure_future(self._pump(key, name, merged)))
            while True:
                try:
                    yield await asyncio.wait_for(merged.get(), keepalive)
                except asyncio.TimeoutError:
                    yield None
        finally:  # no await here: a stream whose client left is cancelled, again at each await
            for pump in pumps:
                pump.cancel()
            for key in keys:
                self._release(key)

    async def _start(self, key: str, pv_name: str) -> str | None:
        """The monitor under ``key`` runs (started unless another watch holds it); else why not."""
        if self._gateway.has_monitor(key):
            return None
        try:
            answer = await self._gateway.monitor(key, pv_name)
        except Exception as exc:  # noqa: BLE001 - the cap, the child's failure: shown on the PV
            return str(exc)
        return None if answer.ok else answer.error or "the monitor did not start"

    async def _pump(self, key: str, pv_name: str, merged: asyncio.Queue[tuple[str, p.Update | Closed]]) -> None:
        async for item in self._gateway.follow(key, keepalive=3600.0):
            if item is None:
                continue
            offer(merged, (pv_name, item))
            if isinstance(item, Closed):
                return

    def _release(self, key: str) -> None:
        """One watch fewer on ``key``; the last one's leaving stops the monitor, in a task of
        its own (the stream that left is being cancelled)."""
        left = self._count.get(key, 1) - 1
        if left > 0:
            self._count[key] = left
            return
        self._count.pop(key, None)
        task = asyncio.ensure_future(self._stop(key))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def _stop(self, key: str) -> None:
        if self._count.get(key) or not self._gateway.has_monitor(key):
            return  # a page opened meanwhile holds it again, or it is gone already
        try:
            await self._gateway.unmonitor(key)
        except Exception as exc:  # noqa: BLE001 - the child went away: nothing left to stop
            log.debug("stopping watch monitor %s: %s", key, exc)
