"""Start a real worker process the way the supervisor does: JSON spec + two pipes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from iochost.contract import messages
from iochost.contract.worker_spec import WorkerSpec


class StandaloneWorker:
    """A worker plus a thread collecting its events, for asserting on the channel."""

    def __init__(self, processes: Any, tmp_path: Path, env: dict[str, str] | None = None,
                 **spec_fields: Any) -> None:
        event_read, event_write = os.pipe()
        command_read, command_write = os.pipe()
        spec_fields.setdefault("grace_period", 10.0)  # what the supervisor resolves for a plugin setting none
        self.spec = WorkerSpec(event_fd=event_write, command_fd=command_read, **spec_fields)
        spec_file = tmp_path / f"{self.spec.name}.spec.json"
        spec_file.write_text(self.spec.model_dump_json())
        self.log_file = tmp_path / f"{self.spec.name}.log"
        with open(self.log_file, "wb") as log:
            self.proc: subprocess.Popen[Any] = processes.start(
                [sys.executable, "-m", "iochost.worker", str(spec_file)],
                pass_fds=(event_write, command_read), stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )
        os.close(event_write)
        os.close(command_read)
        self._command_fd = command_write
        self.events: list[Any] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, args=(event_read,), daemon=True).start()

    def _read(self, fd: int) -> None:
        decoder = messages.event_decoder()
        while data := os.read(fd, 65536):
            received = decoder.feed(data)
            with self._cond:
                self.events.extend(received)
                self._cond.notify_all()
        os.close(fd)

    def wait_event(self, kind: type, predicate: Callable[[Any], bool] = lambda m: True, timeout: float = 15.0,
                   since: int = 0) -> Any:
        """The first ``kind`` event from index ``since`` on (see ``mark``) that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for message in self.events[since:]:
                    if isinstance(message, kind) and predicate(message):
                        return message
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.proc.poll() is not None and not self._pending(kind, predicate, since):
                    raise AssertionError(
                        f"no {kind.__name__} event; exit={self.proc.poll()} log:\n{self.log()}"
                    )
                self._cond.wait(min(remaining, 0.2))

    def _pending(self, kind: type, predicate: Callable[[Any], bool], since: int) -> bool:
        return any(isinstance(m, kind) and predicate(m) for m in self.events[since:])

    def mark(self) -> int:
        """An index for ``wait_event(since=...)``: only events from now on."""
        with self._cond:
            return len(self.events)

    def heartbeat_periods(self, count: int = 1, timeout: float = 15.0) -> messages.Heartbeat:
        """Wait until ``count`` whole heartbeat periods passed from now (``count + 1``
        heartbeats sent after this call) and return the last: the positive signal a check that
        "nothing happened" waits for, proving the worker was alive and time went by."""
        beat = None
        for _ in range(count + 1):
            beat = self.wait_event(messages.Heartbeat, timeout=timeout, since=self.mark())
        assert beat is not None
        return beat

    def send(self, command: Any) -> None:
        os.write(self._command_fd, messages.encode(command))

    def close_commands(self) -> None:
        """What a dying supervisor does to its workers: the pipe ends."""
        os.close(self._command_fd)

    def terminate(self, timeout: float = 15.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")
