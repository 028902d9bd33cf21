"""Plugins that ship inside iochost itself (loaded from the package, never from git)."""

from pathlib import Path

DAEMON_STATUS_DIR = Path(__file__).parent / "daemon_status"
