"""errno values of the host running short, as opposed to a request or a plugin at fault.

A failure with one of these passes once the host has room again: the daemon retries it
with backoff and says so on ``/health``, and never marks a plugin FAILED for it.
"""

from __future__ import annotations

import errno

OUT_OF_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})  # no blocks or no inodes left, or over quota
# Open files (the process's or the system's), processes or memory: a spawn, a pipe, a socket.
EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM})
