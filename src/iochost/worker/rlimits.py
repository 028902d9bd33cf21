"""Per-process resource limits (rlimits) a worker, or a validation probe, sets on itself before plugin code loads.

Memory is limited with RLIMIT_DATA (private writable memory: heap, anonymous mmaps,
thread stacks), not RLIMIT_AS: a soft IOC reserves ~1.2 GB of address space it never
uses (thread arenas, numpy, EPICS) against ~150 MB of data, so an address-space limit
either fails at start or limits nothing. The cgroup v2 ``memory.max`` of the container
(Kubernetes ``resources.limits``) still bounds the whole pod; this limit is per plugin.

When the limit is hit, the allocation fails and Python raises MemoryError. The worker
then exits at once with ``WorkerExit.OUT_OF_MEMORY`` (from the plugin thread, any other
thread, or the main thread), which the supervisor reports as ``crashed`` with an
out-of-memory reason and restarts with backoff, like any crash. A MemoryError is not
treated as an ordinary plugin exception (STATUS=ERROR, process kept): the process is
at its limit, and anything it does next may fail anywhere.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
from typing import Any, NoReturn

from iochost.contract.exits import WorkerExit

MB = 1024 * 1024


def set_rlimits(memory_limit_mb: int | None, max_open_files: int | None) -> None:
    """Set RLIMIT_DATA and RLIMIT_NOFILE (soft and hard) for this process and its children."""
    if memory_limit_mb:
        limit = memory_limit_mb * MB
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    if max_open_files:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max_open_files, max_open_files))


def exit_out_of_memory(where: str) -> NoReturn:
    """Leave now: one preformatted line on stderr (no allocation to speak of), exit code 5."""
    try:
        os.write(2, f"iochost worker: MemoryError in {where}: memory limit reached; exiting\n".encode())
    except OSError:
        pass
    try:
        from iochost.proctree import kill_descendants

        kill_descendants()  # best effort at the limit; the supervisor sweeps what is left
    except BaseException:  # noqa: BLE001 - nothing may stop this exit
        pass
    os._exit(WorkerExit.OUT_OF_MEMORY)


def exit_on_memory_error() -> None:
    """Make a MemoryError that no code caught, in any thread, end the worker with code 5."""
    previous_thread_hook = threading.excepthook
    previous_hook = sys.excepthook

    def thread_hook(args: Any) -> None:
        if isinstance(args.exc_value, MemoryError):
            exit_out_of_memory(f"thread {getattr(args.thread, 'name', '?')}")
        previous_thread_hook(args)

    def hook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        if isinstance(value, MemoryError):
            exit_out_of_memory("the main thread")
        previous_hook(kind, value, tb)

    threading.excepthook = thread_hook
    sys.excepthook = hook
