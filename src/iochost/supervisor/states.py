"""The states of a plugin; which event moves which state where is ``lifecycle.TABLE``.

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


# States of a plugin still being brought back by a restore (or any start): not yet settled.
UNSETTLED = frozenset({State.PENDING, State.STARTING})

# States in which a worker process exists (or is being started).
LIVE = frozenset({State.STARTING, State.RUNNING, State.PAUSED, State.STOPPING})
