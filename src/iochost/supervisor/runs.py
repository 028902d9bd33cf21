"""Job runs of one job plugin: one active run at a time, the last N kept with their results."""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from datetime import datetime, timezone
from typing import Any

from iochost.errors import ErrorCode, IochostError
from iochost.supervisor.models import RunRecord, RunResult


def _now() -> datetime:
    return datetime.now(timezone.utc)


MAX_RESULT_BYTES = 256 * 1024


class RunLedger:
    """Who is running, what ran, and a future per run for callers that wait on it."""

    def __init__(self, job: str, keep: int) -> None:
        self.job = job
        self.keep = keep
        self.active: str | None = None
        self.cancel_requested: set[str] = set()
        self._runs: OrderedDict[str, RunRecord] = OrderedDict()
        self._done: dict[str, asyncio.Future[RunRecord]] = {}

    def begin(self, run_id: str, parameters: dict[str, Any], origin: str) -> RunRecord:
        if self.active is not None and self.active != run_id:
            raise IochostError(
                ErrorCode.EXECUTION_LOCKED,
                f"job {self.job!r} is already running run {self.active}",
                active_run_id=self.active,
            )
        run = self._runs.get(run_id)
        if run is None:
            run = RunRecord(run_id=run_id, job=self.job, state="running", origin=origin,  # type: ignore[arg-type]
                            parameters=parameters, started_at=_now())
            self._runs[run_id] = run
            self._done[run_id] = asyncio.get_running_loop().create_future()
            while len(self._runs) > self.keep:
                old, _ = self._runs.popitem(last=False)
                self._done.pop(old, None)
        self.active = run_id
        return run

    def finish(self, run_id: str, outcome: str, result: dict[str, Any]) -> RunRecord | None:
        run = self._runs.get(run_id)
        if run is None:
            return None
        if run_id in self.cancel_requested and outcome != "succeeded":
            outcome = "cancelled"
        run.state = outcome  # type: ignore[assignment]
        run.result = bounded_result(result)
        if not run.result.success and outcome == "succeeded":
            run.state = "failed"
        run.finished_at = _now()
        if self.active == run_id:
            self.active = None
        self.cancel_requested.discard(run_id)
        future = self._done.get(run_id)
        if future is not None and not future.done():
            future.set_result(run)
        return run

    def reject(self, run_id: str, active_run_id: str) -> None:
        """The worker refused the run (an EPICS-started run got there first): forget it."""
        self._runs.pop(run_id, None)
        future = self._done.pop(run_id, None)
        if self.active == run_id:
            self.active = active_run_id or None
        if future is not None and not future.done():
            future.set_exception(IochostError(
                ErrorCode.EXECUTION_LOCKED, f"job {self.job!r} is already running run {active_run_id}",
                active_run_id=active_run_id,
            ))

    def abandon(self, reason: str) -> None:
        """The worker went away mid-run: the active run ends now, as failed or cancelled."""
        if self.active is not None:
            self.finish(self.active, "failed", {"success": False, "data": {}, "message": reason})

    async def wait(self, run_id: str) -> RunRecord:
        return await asyncio.shield(self._done[run_id])

    def get(self, run_id: str) -> RunRecord:
        try:
            return self._runs[run_id]
        except KeyError:
            raise IochostError(ErrorCode.RUN_NOT_FOUND, f"job {self.job!r} has no run {run_id!r}") from None

    def all(self) -> list[RunRecord]:
        return list(reversed(self._runs.values()))


def bounded_result(result: dict[str, Any]) -> RunResult:
    """The worker's result, or a failure saying why it cannot be kept: results are kept in
    the daemon's memory (``runs_kept`` per job), so each is capped at MAX_RESULT_BYTES."""
    size = len(json.dumps(result, default=str))
    if size > MAX_RESULT_BYTES:
        return RunResult(success=False, message=f"result of {size} bytes not kept: the limit is "
                                                 f"{MAX_RESULT_BYTES // 1024} KiB (JSON)")
    try:
        return RunResult(**result)
    except (TypeError, ValueError) as exc:
        return RunResult(success=False, message=f"malformed result from the worker: {str(exc)[:200]}")
