"""A worker process as the supervisor sees it: spawn, event stream, commands, stop.

Thin asyncio I/O around ``worker.protocol``. Each worker gets two pipes: events come in
on one; commands go out on the other, whose end-of-file tells the worker its supervisor
is gone, so even ``kill -9`` of the daemon leaves no IOC behind.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

from iochost.worker import protocol
from iochost.worker.spec import WorkerSpec

log = logging.getLogger("iochost.supervisor")

LOG_ROTATE_BYTES = 5 * 1024 * 1024


class _EventProtocol(asyncio.Protocol):
    def __init__(self, on_event: Callable[[Any], None], name: str) -> None:
        self._decoder = protocol.event_decoder()
        self._on_event = on_event
        self._name = name

    def data_received(self, data: bytes) -> None:
        try:
            messages = self._decoder.feed(data)
        except ValueError as exc:  # a malformed line is a worker bug; say so, keep going
            log.error("%s: bad message from worker: %s", self._name, exc)
            return
        for message in messages:
            self._on_event(message)


class WorkerProcess:
    """One spawned worker. ``wait()`` returns its exit code; ``stop()`` ends it for sure."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, commands: asyncio.WriteTransport,
                 spec: WorkerSpec) -> None:
        self.name = name
        self.proc = proc
        self.pid = proc.pid
        self._commands = commands
        self.spec = spec

    @classmethod
    async def spawn(
        cls,
        spec: WorkerSpec,
        *,
        run_dir: Path,
        log_path: Path,
        env: dict[str, str],
        on_event: Callable[[Any], None],
        python: str | None = None,
    ) -> "WorkerProcess":
        """Start ``python -m iochost.worker`` (``python``: a plugin's own environment, default ours)."""
        loop = asyncio.get_running_loop()
        event_read, event_write = os.pipe()
        command_read, command_write = os.pipe()
        spec = spec.model_copy(update={"event_fd": event_write, "command_fd": command_read})
        spec_file = run_dir / f"{spec.name}.json"
        spec_file.write_text(spec.model_dump_json())
        _rotate(log_path)
        try:
            with open(log_path, "ab") as log_file:
                proc = await asyncio.create_subprocess_exec(
                    python or sys.executable, "-m", "iochost.worker", str(spec_file),
                    pass_fds=(event_write, command_read), stdin=subprocess.DEVNULL,
                    stdout=log_file, stderr=subprocess.STDOUT, env=env,
                    start_new_session=True,  # its own process group: stop() kills plugin children too
                )
        except BaseException:
            for fd in (event_read, event_write, command_read, command_write):
                os.close(fd)
            raise
        os.close(event_write)
        os.close(command_read)
        await loop.connect_read_pipe(
            lambda: _EventProtocol(on_event, spec.name), os.fdopen(event_read, "rb", buffering=0)
        )
        commands, _ = await loop.connect_write_pipe(
            asyncio.Protocol, os.fdopen(command_write, "wb", buffering=0)
        )
        return cls(spec.name, proc, commands, spec)

    def send(self, command: Any) -> None:
        if not self._commands.is_closing():
            self._commands.write(protocol.encode(command))

    async def wait(self) -> int:
        code = await self.proc.wait()
        self._commands.close()
        return code

    def kill(self) -> None:
        """SIGKILL the worker's whole process group (hung plugin, watchdog, grace exceeded)."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    async def stop(self, grace: float) -> int:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns the exit code."""
        if self.proc.returncode is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                return await asyncio.wait_for(asyncio.shield(self.proc.wait()), grace)
            except asyncio.TimeoutError:
                log.warning("%s: no exit %.1f s after SIGTERM; sending SIGKILL", self.name, grace)
                self.kill()
        code = await self.proc.wait()
        self.kill()  # anything the plugin left in its process group goes too
        return code


def _rotate(log_path: Path) -> None:
    """Keep one previous log so a crash loop cannot fill the disk."""
    try:
        if log_path.stat().st_size > LOG_ROTATE_BYTES:
            log_path.replace(log_path.with_suffix(".log.1"))
    except FileNotFoundError:
        pass
