"""Each plugin's log: ``logs/<name>.log`` plus numbered older files, bounded by size.

A worker's stdout and stderr are one pipe that the daemon reads, so whatever writes to
fd 1 or 2 (print, the logging module, C libraries, the interpreter's fatal-error dump)
lands here, and the file rotates by size *while* the worker runs: ``<name>.log`` ->
``<name>.log.1`` -> ... -> ``<name>.log.<files-1>``, the oldest dropped. No file ever
exceeds ``max_bytes``, so a plugin can fill at most ``max_bytes * files`` of disk.
The naming is the stdlib ``RotatingFileHandler``'s, which rotates the daemon's own log.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

TAIL_READ_BYTES = 256 * 1024  # what ``tail`` reads at most, however long the log


def rotated(path: Path, index: int) -> Path:
    return path if index == 0 else path.with_name(f"{path.name}.{index}")


class RotatingFile:
    """Append bytes to ``path``, rotating before a write would make it exceed ``max_bytes``."""

    def __init__(self, path: Path, max_bytes: int, files: int) -> None:
        self.path, self.max_bytes, self.files = path, max_bytes, max(2, files)
        self.on_write: Callable[[bytes], None] | None = None  # told each write, once on disk (LogFeed)
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            room = self.max_bytes - self._size
            if room <= 0:
                self.rotate()
                room = self.max_bytes
            chunk = view[:room]
            written = os.write(self._fd, chunk)
            self._size += written
            if self.on_write is not None:
                self.on_write(bytes(chunk[:written]))
            view = view[written:]

    def rotate(self) -> None:
        os.close(self._fd)
        for index in range(self.files - 1, 0, -1):
            older = rotated(self.path, index - 1)
            if older.exists():
                older.replace(rotated(self.path, index))
        self._fd = self._open()
        self._size = 0

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def tail(path: Path, lines: int, files: int) -> list[str]:
    """The last ``lines`` lines across the current and older files, reading at most
    ``TAIL_READ_BYTES``, so a request stays fast whatever the log holds."""
    collected: list[str] = []
    budget = TAIL_READ_BYTES
    for index in range(files):
        if len(collected) >= lines or budget <= 0:
            break
        try:
            with open(rotated(path, index), "rb") as f:
                size = f.seek(0, os.SEEK_END)
                start = max(0, size - budget)
                f.seek(start)
                data = f.read()
        except FileNotFoundError:
            continue
        budget -= len(data)
        text = data.decode(errors="replace").splitlines()
        if start > 0 and text:
            text = text[1:]  # a line cut by the read window
        collected = text + collected
    return collected[-lines:] if lines > 0 else []


def remove(path: Path) -> None:
    """The log and every rotated file of it, however many the settings kept then."""
    path.unlink(missing_ok=True)
    for older in path.parent.glob(path.name + ".*"):
        if older.name[len(path.name) + 1:].isdigit():
            older.unlink(missing_ok=True)
