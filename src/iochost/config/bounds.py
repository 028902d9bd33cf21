"""The bounds of a worker's limits, each defined once and refused the same way on every path
that sets it: the POST body (``api/bodies.py``), config.yaml's ``parameters:``
(``config/parameters.py``) and the daemon's flags (``settings.py``, where 0 means no limit of
the daemon's own). How the values are resolved is ``config/limits.py``.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Field, TypeAdapter, ValidationError

MAX_GRACE_PERIOD = 600.0  # seconds cleanup() may get on stop
MIN_MEMORY_LIMIT_MB, MAX_MEMORY_LIMIT_MB = 64, 1024 * 1024  # below 64 MB Python and softioc do not start
MIN_OPEN_FILES, MAX_OPEN_FILES = 32, 1024 * 1024  # the IOC's own sockets and files need a few dozen

GracePeriod = Annotated[float, Field(gt=0, le=MAX_GRACE_PERIOD)]
MemoryLimitMB = Annotated[int, Field(ge=MIN_MEMORY_LIMIT_MB, le=MAX_MEMORY_LIMIT_MB)]
OpenFilesLimit = Annotated[int, Field(ge=MIN_OPEN_FILES, le=MAX_OPEN_FILES)]
Watchdog = Annotated[float, Field(gt=0)]


def _zero_or(limit: Any, zero: str) -> AfterValidator:
    """A daemon flag: 0 (``zero`` says what it means), else a value within ``limit``'s bounds,
    refused with the words the other paths use."""
    adapter: TypeAdapter[int] = TypeAdapter(limit)

    def check(value: int) -> int:
        if value != 0:
            try:
                adapter.validate_python(value)
            except ValidationError as exc:
                raise ValueError(f"{exc.errors()[0]['msg']} (or 0: {zero})") from None
        return value
    return AfterValidator(check)


DaemonMemoryLimitMB = Annotated[int, _zero_or(MemoryLimitMB, "no limit")]
DaemonOpenFilesLimit = Annotated[int, _zero_or(OpenFilesLimit, "the limit the daemon has")]
