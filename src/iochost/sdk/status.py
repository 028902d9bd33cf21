"""STATUS values of the default PVs; the order is the mbbi state order operators see."""

from __future__ import annotations

from enum import IntEnum


class TaskStatus(IntEnum):
    """A task's STATUS PV (iocmng order: INIT / RUN / PAUSED / END / ERROR)."""

    INIT = 0
    RUN = 1
    PAUSED = 2
    END = 3
    ERROR = 4


class JobStatus(IntEnum):
    """A job's STATUS PV."""

    IDLE = 0
    RUNNING = 1
    SUCCESS = 2
    FAILED = 3


def coerce_status(enum: type[IntEnum], status: "str | int | IntEnum") -> IntEnum:
    """Accept a name ('run'), a number or an enum member, as iocmng plugins pass any of them."""
    if isinstance(status, enum):
        return status
    if isinstance(status, str):
        try:
            return enum[status.strip().upper()]
        except KeyError:
            names = ", ".join(m.name for m in enum)
            raise ValueError(f"unknown status {status!r}; expected one of {names}") from None
    return enum(int(status))
