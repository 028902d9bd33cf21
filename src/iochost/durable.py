"""Files that survive a crash or a power cut whole: the registry, autosaved values, displays.

A reader (a restarting daemon, a Phoebus host sharing the folder) sees the old content or
the new one, never a torn file: the data goes to a temp file beside the target, is
fsynced, renamed over it, and the rename is made durable by an fsync of the folder. A
crash between the two leaves only a temp file named by ``temp_pattern``, which the file's
one writer removes before its first write (``remove_stale_temps``). A reader never does:
the writer may be between its write and its rename.
"""

from __future__ import annotations

import errno
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, Field

from iochost.errors import ErrorCode, IochostError
from iochost.shortages import OUT_OF_SPACE


class StorageProblem(BaseModel):
    """Why the daemon's state cannot be made durable now: the write that failed, for
    ``/health`` while it lasts (the next write that succeeds clears it)."""

    path: str = Field(description="the file or folder the failed write was for")
    error: str = Field(description="the OS error, e.g. [Errno 28] No space left on device")
    since: datetime


def storage_error(path: Path | str, exc: OSError, doing: str) -> IochostError:
    """STORAGE_FULL for a write the OS refused: ``doing`` (what could not be saved), the
    path and the OS error first, and that nothing was changed."""
    error = f"[Errno {exc.errno}] {exc.strerror}" if exc.errno is not None else str(exc) or type(exc).__name__
    return IochostError(ErrorCode.STORAGE_FULL, f"{doing}: cannot write {path}: {error}; nothing was changed, "
                        "retry once space is freed", path=str(path), error=error,
                        since=datetime.now(timezone.utc).isoformat())


def no_room(folder: Path, output: str = "") -> OSError | None:
    """The OSError a write in ``folder`` hit, when a child process's ``output`` (git's
    stderr) says it ran out of room, or the file system has no block or inode left: then
    that output may be empty, since its own file could not be written."""
    for code in OUT_OF_SPACE:
        if os.strerror(code) in output:
            return OSError(code, os.strerror(code))
    try:
        stats = os.statvfs(folder)
    except OSError:
        return None
    if stats.f_bavail == 0 or stats.f_favail == 0:
        code = errno.ENOSPC
        return OSError(code, os.strerror(code))
    return None


def storage_problem(error: IochostError) -> StorageProblem:
    """The problem a STORAGE_FULL error reports (what ``/health`` shows)."""
    details = error.details
    return StorageProblem(path=details["path"], error=details["error"], since=datetime.fromisoformat(details["since"]))


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_pattern(path: Path) -> str:
    """The glob of the temp files a write of ``path`` can leave (in its folder)."""
    return f".{path.name}.*.tmp"


def remove_stale_temps(path: Path) -> int:
    """Delete the temp files earlier writes of ``path`` left (a crash between write and
    rename); how many. Only the writer of ``path`` calls it, before it writes."""
    if not path.parent.is_dir():
        return 0
    removed = 0
    for leftover in path.parent.glob(temp_pattern(path)):
        leftover.unlink(missing_ok=True)
        removed += 1
    return removed


def write_atomically(path: Path, data: bytes, *, file_mode: int = 0o600, folder_mode: int = 0o700) -> None:
    """Replace ``path`` with ``data``; the folder is created with ``folder_mode`` if missing."""
    folder = path.parent
    folder.mkdir(mode=folder_mode, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")  # 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if file_mode != 0o600:
            os.chmod(tmp, file_mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(folder)
