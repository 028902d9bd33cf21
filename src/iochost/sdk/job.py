"""JobBase: a plugin that runs once per request and returns a JobResult."""

from __future__ import annotations

import datetime
import threading
from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Any

from iochost.sdk.base import PluginBase
from iochost.sdk.status import JobStatus, coerce_status


@dataclass
class JobResult:
    """What a job run produced; ``data`` must be JSON-serialisable to reach REST clients.
    ``timestamp``: when the result was made, local time in ISO 8601 without a zone
    (``2026-01-31T14:05:09.123456``), as iocmng's JobResult stamps it."""

    success: bool
    data: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    timestamp: str = field(default_factory=lambda: datetime.datetime.now().isoformat())

    def to_dict(self) -> dict[str, Any]:
        """iocmng's keys: success, data, message, timestamp."""
        return {"success": self.success, "data": self.data, "message": self.message, "timestamp": self.timestamp}


class JobCancelled(Exception):
    """Raised by ``JobBase.check_cancelled()`` to end a run the user cancelled."""


class JobBase(PluginBase):
    """Derive from this for a job: ``execute()`` runs once per REST run or RUN=1 write.

    Cancellation is cooperative: long jobs call ``self.check_cancelled()`` (or read
    ``self.cancel_requested``) between steps; a job that ignores it is stopped by the
    supervisor restarting its worker.
    """

    kind = "job"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cancel = threading.Event()

    @abstractmethod
    def initialize(self) -> None:
        """Prepare resources; runs once on the plugin thread after the IOC is up."""

    @abstractmethod
    def execute(self) -> JobResult:
        """Do the work of one run and say how it went."""

    def cleanup(self) -> None:
        """Release resources when the worker stops; optional for jobs."""

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def check_cancelled(self) -> None:
        """Raise JobCancelled if the current run was cancelled."""
        if self._cancel.is_set():
            raise JobCancelled("run cancelled")

    def set_status(self, status: str | int | JobStatus) -> None:
        """Set STATUS to IDLE, RUNNING, SUCCESS or FAILED (name, number or JobStatus)."""
        self._runtime.set_pv("STATUS", int(coerce_status(JobStatus, status)))
