"""A worker's exit codes: the one list, shared by the worker and the supervisor that
turns them into the ``last_error`` an operator reads."""

from __future__ import annotations

from enum import IntEnum


class WorkerExit(IntEnum):
    OK = 0
    FATAL = 2  # the plugin cannot load (import error, bad class): no restart helps
    GRACE_EXCEEDED = 3  # cleanup() did not return within the grace period
    INTERNAL = 4  # the plugin thread died of an iochost bug
    OUT_OF_MEMORY = 5  # the plugin hit its memory limit (memory_limit_mb)
    CA_PORT_BUSY = 6  # the CA server port the supervisor assigned is held by another process
    INIT_FAILED = 7  # initialize() raised (the Initialized message says what); cleanup() has run


def describe_exit(code: int, memory_limit_mb: int | None = None) -> str:
    """The supervisor's reason for a worker exit code (negative: killed by that signal)."""
    if code == WorkerExit.OUT_OF_MEMORY:
        limit = f" of {memory_limit_mb} MB" if memory_limit_mb else ""
        return (f"out of memory: the plugin exceeded its memory limit{limit} "
                f"(memory_limit_mb); worker exited with code {code}")
    if code == WorkerExit.CA_PORT_BUSY:
        return f"its CA server port is held by another process; worker exited with code {code}"
    if code == WorkerExit.GRACE_EXCEEDED:
        return f"cleanup() outlived the grace period; worker exited with code {code}"
    if code == WorkerExit.INIT_FAILED:
        return f"initialize() raised (see the plugin's log); worker exited with code {code}"
    if code == WorkerExit.INTERNAL:
        return f"internal error in the worker (see its log); worker exited with code {code}"
    if code < 0:
        return f"worker killed by signal {-code}"
    return f"worker exited with code {code}"
