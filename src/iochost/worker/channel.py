"""The worker's end of the supervisor channel: thin I/O around messages.py."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable

from iochost.budget import LineBudget
from iochost.contract import messages

log = logging.getLogger("iochost.worker")


class Channel:
    """Send events on the event pipe; read commands from the command pipe on a thread.

    Without fds (``iochost run`` in a terminal) events are dropped and no commands come.
    """

    def __init__(self, event_fd: int | None, command_fd: int | None) -> None:
        self._event_fd = event_fd
        self._command_fd = command_fd
        self._lock = threading.Lock()
        self.broken = threading.Event()

    @property
    def supervised(self) -> bool:
        return self._event_fd is not None

    def send(self, message: messages.Message) -> None:
        if self._event_fd is None or self.broken.is_set():
            return
        data = messages.encode(message)
        with self._lock:
            try:
                view = memoryview(data)
                while view:
                    written = os.write(self._event_fd, view)
                    view = view[written:]
            except OSError:
                # The supervisor is gone; the command reader sees EOF and stops us.
                self.broken.set()

    def start_reader(
        self, on_command: Callable[[object], None], on_eof: Callable[[], None]
    ) -> None:
        """Deliver each command to ``on_command``; call ``on_eof`` when the supervisor is gone."""
        if self._command_fd is None:
            return
        fd = self._command_fd

        def read_loop() -> None:
            decoder = messages.command_decoder(lambda problem: log.error("from supervisor: %s", problem))
            while True:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    data = b""
                if not data:
                    self.broken.set()
                    on_eof()
                    return
                for command in decoder.feed(data):
                    on_command(command)

        threading.Thread(target=read_loop, name="iochost-commands", daemon=True).start()


class ChannelLogHandler(logging.Handler):
    """Forward log records to the supervisor so plugin logs reach the daemon's log.

    At most ``rate`` = (COUNT, SECONDS) records are forwarded; past that they are counted
    and a "N lines dropped" record follows at most once per SECONDS. Every record still
    reaches stderr, i.e. the plugin's own (rotated) log file.
    """

    def __init__(self, channel: Channel, level: int = logging.INFO,
                 rate: tuple[int, float] | None = None) -> None:
        super().__init__(level)
        self._channel = channel
        self._budget = LineBudget(*rate) if rate else None

    def emit(self, record: logging.LogRecord) -> None:
        if self._budget is not None:
            now = time.monotonic()
            dropped = self._budget.summary(now)
            if dropped:
                self._channel.send(messages.Log(
                    level="WARNING", logger="iochost.worker",
                    message=f"{dropped} log lines not forwarded (limit {self._budget.bucket.capacity} per "
                            f"{self._budget.period:g} s); all are in the plugin's log"))
            if not self._budget.allow(now):
                return
        try:
            message = self.format(record)
        except Exception:  # noqa: BLE001 - a log call must never raise into plugin code
            message = record.getMessage()
        self._channel.send(
            messages.Log(level=record.levelname, logger=record.name, message=message)
        )
