"""The daemon's EPICS access security file, checked once at start before any worker loads it.

``check_file`` asks EPICS's own parser, in a child process (``python -m
iochost.access_security_check FILE``): EPICS's libraries start threads, which the daemon
must not have (it forks its workers). Neutral ground, so the daemon never imports the
worker package; ``worker/access_security.py`` loads the file in each worker.
"""

from __future__ import annotations

import ctypes
import re
import subprocess
import sys
from pathlib import Path


def check_file(path: Path) -> str | None:
    """Why asInit would reject the ACF at ``path`` (EPICS's parser message, with its line),
    or None."""
    try:
        result = subprocess.run([sys.executable, "-m", __name__, str(path)], capture_output=True, text=True,
                                timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"access security file {path} could not be checked: {exc}"
    if result.returncode == 0:
        return None
    said = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)  # errlog colours ERROR
    detail = "; ".join(line.strip() for line in said.splitlines() if line.strip()) or f"exit {result.returncode}"
    return f"access security file {path} is refused by EPICS: {detail} (--epics-access-security)"


def _parse(path: str) -> int:
    """check_file's child: 0 when EPICS's parser accepts the file."""
    from epicscorelibs.ioc import Com

    init_file = Com.asInitFile
    init_file.argtypes, init_file.restype = (ctypes.c_char_p, ctypes.c_char_p), ctypes.c_long
    return 0 if init_file(path.encode(), None) == 0 else 1


if __name__ == "__main__":  # check_file's child
    sys.exit(_parse(sys.argv[1]))
