"""The worker's end of the supervisor channel: thin I/O around protocol.py."""

from __future__ import annotations

import logging
import os
import threading
from typing import Callable

from iochost.worker import protocol

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

    def send(self, message: protocol._Msg) -> None:
        if self._event_fd is None or self.broken.is_set():
            return
        data = protocol.encode(message)
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
            decoder = protocol.command_decoder()
            while True:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    data = b""
                if not data:
                    self.broken.set()
                    on_eof()
                    return
                try:
                    commands = decoder.feed(data)
                except ValueError as exc:
                    log.error("bad command from supervisor: %s", exc)
                    continue
                for command in commands:
                    on_command(command)

        threading.Thread(target=read_loop, name="iochost-commands", daemon=True).start()


class ChannelLogHandler(logging.Handler):
    """Forward log records to the supervisor so plugin logs reach the daemon's log."""

    def __init__(self, channel: Channel, level: int = logging.INFO) -> None:
        super().__init__(level)
        self._channel = channel

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
        except Exception:  # noqa: BLE001 - a log call must never raise into plugin code
            message = record.getMessage()
        self._channel.send(
            protocol.Log(level=record.levelname, logger=record.name, message=message)
        )
