"""Child processes iochost must not leave behind (git, pip, the validation probe): each
runs in its own session, and this ends its whole process group for sure."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL ``proc`` and every process it started, then wait until none of them runs."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    deadline = time.monotonic() + 5.0
    while group_running(proc.pid) and time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.01)


def group_running(pgid: int) -> bool:
    """Whether a non-zombie process is in group `pgid` (orphaned zombies wait for init)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False
