"""The states of a plugin and every named set of them: the one place each set is defined.

Which event moves which state where is ``lifecycle.TABLE`` (drawn in docs/reference/lifecycle.md):

    pending -> fetching -> validating -> starting -> running <-> paused
    starting/running/paused -> stopping -> stopped -> starting
    starting/running/paused -> crashed -> (backoff) starting
    any -> failed (with a reason); a failed add, and every delete, end in deleted
"""

from __future__ import annotations

from enum import Enum


class State(str, Enum):
    PENDING = "pending"
    FETCHING = "fetching"
    VALIDATING = "validating"
    STARTING = "starting"  # worker spawned, records up once READY; until initialize() returns
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"
    STOPPED = "stopped"
    CRASHED = "crashed"
    FAILED = "failed"
    DELETED = "deleted"  # the end of every story: nothing of it is left


S = State

# An add (or a restore) has not brought it in yet: no checkout in place, no worker.
ADDING = frozenset({S.PENDING, S.FETCHING, S.VALIDATING})

# Its worker's initialize() returned: the plugin serves (paused: ENABLE=0).
UP = frozenset({S.RUNNING, S.PAUSED})

# A worker process exists (or is being started, or stopped).
LIVE = frozenset({S.STARTING, S.RUNNING, S.PAUSED, S.STOPPING})

# No worker, and none coming by itself but a crashed one's restart: a start request is taken.
IDLE = frozenset({S.STOPPED, S.CRASHED, S.FAILED})

# Still being brought back by a restore (or any start): the daemon is not ready while one is.
UNSETTLED = frozenset({S.PENDING, S.STARTING})

# Where a stop, start or restart request has ended, one way or another: its caller is answered.
SETTLED = frozenset({S.RUNNING, S.PAUSED, S.STOPPED, S.CRASHED, S.FAILED, S.DELETED})

# The states a listed plugin can be in, which /health and /metrics count: a deleted plugin is
# gone (forgotten in the same step it becomes deleted), so neither counts "deleted". In the
# enum's order: the order of /health's counts and of the metric's samples.
LISTED: tuple[State, ...] = tuple(state for state in State if state is not S.DELETED)
