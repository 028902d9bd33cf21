"""The plugin lifecycle: one transition table, every transition an event.

    pending -> fetching -> validating -> starting -> running <-> paused
    running/paused -> stopping -> stopped -> starting
    starting/running/paused -> crashed -> (backoff) starting
    any -> failed (with a reason)
"""

from __future__ import annotations

from enum import Enum


class State(str, Enum):
    PENDING = "pending"
    FETCHING = "fetching"
    VALIDATING = "validating"
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"
    STOPPED = "stopped"
    CRASHED = "crashed"
    FAILED = "failed"


S = State
TRANSITIONS: dict[State, frozenset[State]] = {
    S.PENDING: frozenset({S.FETCHING, S.STARTING, S.STOPPED, S.FAILED}),
    S.FETCHING: frozenset({S.VALIDATING, S.FAILED}),
    S.VALIDATING: frozenset({S.STARTING, S.STOPPED, S.FAILED}),
    S.STARTING: frozenset({S.RUNNING, S.STOPPING, S.CRASHED, S.FAILED}),
    S.RUNNING: frozenset({S.PAUSED, S.STOPPING, S.CRASHED, S.FAILED}),
    S.PAUSED: frozenset({S.RUNNING, S.STOPPING, S.CRASHED, S.FAILED}),
    S.STOPPING: frozenset({S.STOPPED, S.FAILED}),
    S.STOPPED: frozenset({S.STARTING, S.FAILED}),
    S.CRASHED: frozenset({S.STARTING, S.STOPPED, S.FAILED}),
    S.FAILED: frozenset({S.STARTING, S.STOPPED}),
}

# States in which a worker process exists (or is being started).
LIVE = frozenset({S.STARTING, S.RUNNING, S.PAUSED, S.STOPPING})


class IllegalTransition(RuntimeError):
    """A bug, not a user error: the supervisor asked for a move the table forbids."""


def check_transition(current: State, new: State) -> None:
    if new not in TRANSITIONS[current]:
        raise IllegalTransition(f"illegal plugin state transition {current.value} -> {new.value}")
