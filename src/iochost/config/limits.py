"""A worker's limits, resolved once, in one documented order.

    request options (the POST's top-level ``grace_period``)
      -> the plugin's parameters (config.yaml, with the POST's ``parameters`` merged over it)
        -> the daemon's settings (``--grace-period``, ``--worker-memory-mb``, ``--worker-max-files``)

Each limit's bound is defined once, in ``config/bounds.py``; the daemon's limits come from
its settings (``Settings.daemon_limits``, ``settings.limits_outside_daemon``).

The supervisor builds the worker spec *and* times the stop from the same ``WorkerLimits``;
the validation probe runs under the same memory limit (``resolve_memory_limit``); ``iochost run``
resolves the same way with its own flags as the request.
"""

from __future__ import annotations

from dataclasses import dataclass

from iochost.config.parameters import Parameters

MIN_WATCHDOG = 30.0  # a plugin call may always take this long
WATCHDOG_INTERVALS = 10  # ... or this many cycle intervals, whichever is longer


@dataclass(frozen=True)
class DaemonLimits:
    """The daemon's limits (its settings), for plugins that set none; ``None``: no limit.
    No defaults here: the daemon's are its settings' (``settings.py``)."""

    grace_period: float
    memory_limit_mb: int | None
    max_open_files: int | None


@dataclass(frozen=True)
class WorkerLimits:
    grace_period: float  # seconds cleanup() gets on stop before the worker is killed
    memory_limit_mb: int | None  # RLIMIT_DATA of the worker (and of the validation probe)
    max_open_files: int | None  # RLIMIT_NOFILE
    watchdog: float  # longest one plugin call may run before the worker is killed


def resolve_limits(parameters: Parameters, daemon: DaemonLimits, grace_period: float | None = None) -> WorkerLimits:
    """The limits one worker runs under; ``grace_period`` is the request's own override."""
    return WorkerLimits(
        grace_period=grace_period or parameters.grace_period or daemon.grace_period,
        memory_limit_mb=resolve_memory_limit(parameters, daemon.memory_limit_mb),
        max_open_files=parameters.max_open_files or daemon.max_open_files,
        watchdog=parameters.watchdog or max(MIN_WATCHDOG, WATCHDOG_INTERVALS * parameters.interval),
    )


def resolve_memory_limit(parameters: Parameters | None, daemon_memory_limit_mb: int | None) -> int | None:
    """The memory limit of a plugin's worker, and of the probe that validates it: its
    parameters' (``None`` when config.yaml could not be read), else the daemon's."""
    return (parameters.memory_limit_mb if parameters is not None else None) or daemon_memory_limit_mb
