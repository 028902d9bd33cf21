"""Each plugin's log as it is written, for the streams that follow it (``GET .../logs/events``).

The daemon itself writes every worker's output to the plugin's log file
(``process._OutputProtocol``, on the event loop), so following a log is hearing those
writes: no file is polled. A follower gets whole lines; one that cannot keep up loses its
oldest lines (and is told how many), never slowing the writer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable

FOLLOWER_CHUNKS = 256  # writes a slow reader may lag behind before the oldest are dropped


class LogFeed:
    """Writes to each plugin's log, handed to the queues of whoever follows it."""

    def __init__(self) -> None:
        self._followers: dict[str, set[asyncio.Queue[bytes]]] = {}
        self._dropped: dict[asyncio.Queue[bytes], int] = {}  # writes dropped since its reader last took one

    def publisher(self, name: str) -> Callable[[bytes], None]:
        """What the log file calls with each write of plugin ``name``'s output."""
        return lambda data: self._publish(name, data)

    def _publish(self, name: str, data: bytes) -> None:
        for queue in self._followers.get(name, ()):
            if queue.full():
                queue.get_nowait()
                self._dropped[queue] = self._dropped.get(queue, 0) + 1
            queue.put_nowait(data)

    def follow(self, name: str, keepalive: float) -> AsyncGenerator[list[str] | int | None, None]:
        """Plugin ``name``'s log lines written from this call on (the queue is in place before
        it returns), a list per write that ended one or more (text, each byte that is not
        UTF-8 as U+FFFD); an int when that many writes were dropped (a slow reader); ``None``
        after ``keepalive`` seconds without a line."""
        queue: asyncio.Queue[bytes] = asyncio.Queue(FOLLOWER_CHUNKS)
        self._followers.setdefault(name, set()).add(queue)
        return self._lines(name, queue, keepalive)

    async def _lines(self, name: str, queue: asyncio.Queue[bytes], keepalive: float
                     ) -> AsyncGenerator[list[str] | int | None, None]:
        partial = b""
        try:
            while True:
                try:
                    data = await asyncio.wait_for(queue.get(), keepalive)
                except asyncio.TimeoutError:
                    yield None
                    continue
                lost = self._dropped.pop(queue, 0)
                if lost:
                    partial = b""
                    yield lost
                *lines, partial = (partial + data).split(b"\n")
                if lines:
                    yield [line.decode("utf-8", "replace").rstrip("\r") for line in lines]
        finally:
            followers = self._followers.get(name)
            if followers is not None:
                followers.discard(queue)
                if not followers:
                    del self._followers[name]
            self._dropped.pop(queue, None)
