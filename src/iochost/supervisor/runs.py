"""Job runs of one job plugin, as the worker reports them: sans-I/O, never raises on a message.

The worker owns admission: it answers every run request with accepted or rejected, and
reports operator-started (RUN=1) runs as accepted too. The ledger is fed only by those
answers and by the worker's finish and exit, so it cannot disagree with the worker; a
message that does not fit (a finish for an unknown run, a second accept) is absorbed and
reported, not raised.
"""

from __future__ import annotations

import json
from collections import Counter, OrderedDict
from datetime import datetime
from typing import Any, get_args

from iochost.contract import messages as m
from iochost.errors import ErrorCode, IochostError
from iochost.supervisor import lifecycle_types as t
from iochost.supervisor.public import RunRecord, RunResult, RunState

MAX_RESULT_BYTES = 256 * 1024
# Every state a run can end in: the run states but "running".
RUN_OUTCOMES: tuple[str, ...] = tuple(state for state in get_args(RunState) if state != "running")


def run_state(result: RunResult, cancel_requested: bool) -> str:
    """A finished run's state, from its result: the one rule, so state and result agree."""
    if result.success:
        return "succeeded"  # it ran to the end: a cancel that came too late changes nothing
    return "cancelled" if cancel_requested else "failed"


class RunLedger:
    """What ran and what is running; the last ``keep`` runs with their results.

    ``finished_total`` counts the runs that ended, per outcome, since the plugin was added;
    it never decreases. It is the source of ``iochost_job_runs_total``, a Prometheus
    counter, which must not go down: counting the kept records would, once the oldest are
    dropped. The tally lives here rather than in a hook of the API because ``finished``
    is the one place every run reaches its outcome, whoever started it (REST, or an
    operator's RUN=1) and however it ended (its result, a cancel, its worker's exit); the
    ledger stays sans-I/O and the metrics read it at scrape time.
    """

    def __init__(self, job: str, keep: int) -> None:
        self.job = job
        self.keep = keep
        self.active: str | None = None
        self.finished_total: Counter[str] = Counter()
        self._cancel_requested: set[str] = set()
        self._runs: OrderedDict[str, RunRecord] = OrderedDict()
        self._requested: dict[str, dict[str, Any]] = {}  # REST runs sent, not yet answered

    # -- requests, and the worker's answers, as effects ----------------------------------------
    def request(self, gen: int, run_id: str, parameters: dict[str, Any]) -> list[t.Effect]:
        self._requested[run_id] = parameters
        return [t.Send(gen, m.RunJob(run_id=run_id, parameters=parameters))]

    def on_message(self, message: m.Message, at: datetime) -> list[t.Effect]:
        """RunAccepted, RunRejected or RunFinished from the worker; anything unexpected is absorbed."""
        if isinstance(message, m.RunAccepted):
            parameters = self._requested.pop(message.run_id, {})
            effects: list[t.Effect] = [t.RunUpdate(run) for run in
                                       self.accepted(message.run_id, message.origin, parameters, at)]
            if message.origin == "api":
                effects.append(t.RunAnswer(message.run_id, run=self._runs[message.run_id]))
            return effects
        if isinstance(message, m.RunRejected):
            if self._requested.pop(message.run_id, None) is None:
                return []
            locked = IochostError(ErrorCode.EXECUTION_LOCKED, f"job {self.job!r} is already running run "
                                  f"{message.active_run_id}", active_run_id=message.active_run_id)
            return [t.RunAnswer(message.run_id, error=locked)]
        if isinstance(message, m.RunFinished):
            run = self.finished(message.run_id, message.outcome == "cancelled", message.result, at)
            return [t.RunUpdate(run)] if run is not None else []
        return []

    def cancel(self, gen: int, run_id: str, grace: float) -> list[t.Effect]:
        """Ask the worker to cancel the active run; if it is still active after ``grace``, kill."""
        if run_id not in self._runs:
            raise IochostError(ErrorCode.RUN_NOT_FOUND, f"job {self.job!r} has no run {run_id!r}")
        if self.active != run_id:
            raise IochostError(ErrorCode.RUN_ID_MISMATCH, f"run {run_id} is not the active run of "
                               f"{self.job!r} (active: {self.active})", active_run_id=self.active)
        self._cancel_requested.add(run_id)
        return [t.Send(gen, m.CancelRun(run_id=run_id)), t.Later(grace, t.CancelOverdue(gen, run_id))]

    def worker_gone(self, reason: str, at: datetime) -> list[t.Effect]:
        """Every waiting request is answered, the active run ends: the worker is not coming back."""
        effects: list[t.Effect] = [t.RunAnswer(run_id, error=IochostError(ErrorCode.INVALID_STATE, reason))
                                   for run_id in self._requested]
        self._requested.clear()
        abandoned = self.abandon(reason, at)
        return effects + ([t.RunUpdate(abandoned)] if abandoned is not None else [])

    # -- the records ----------------------------------------------------------------------------

    def accepted(self, run_id: str, origin: str, parameters: dict[str, Any], at: datetime) -> list[RunRecord]:
        """The worker admitted ``run_id``; returns every record that changed."""
        changed = []
        if self.active is not None and self.active != run_id:  # the worker says the old one is over
            ended = self.finished(self.active, False, {"success": False, "message": "superseded by run " + run_id}, at)
            changed += [ended] if ended else []
        run = RunRecord(run_id=run_id, job=self.job, state="running", origin=origin,  # type: ignore[arg-type]
                        parameters=parameters, started_at=at)
        self._runs[run_id] = run
        self._runs.move_to_end(run_id)
        while len(self._runs) > self.keep:
            self._runs.popitem(last=False)
        self.active = run_id
        return changed + [run]

    def finished(self, run_id: str, cancelled: bool, result: dict[str, Any], at: datetime) -> RunRecord | None:
        """The run ended (``cancelled``: the worker says so); ``None`` if it is not running here."""
        run = self._runs.get(run_id)
        if run is None or run.state != "running":
            return None
        run.result = bounded_result(result)
        if run.result.timestamp is None:  # a result the daemon made: stamped as JobResult stamps (local, no zone)
            run.result.timestamp = at.astimezone().replace(tzinfo=None).isoformat()
        run.state = run_state(run.result, cancelled or run_id in self._cancel_requested)  # type: ignore[assignment]
        run.finished_at = at
        self.finished_total[run.state] += 1
        self._cancel_requested.discard(run_id)
        if self.active == run_id:
            self.active = None
        return run

    def abandon(self, reason: str, at: datetime) -> RunRecord | None:
        """The worker went away mid-run: the active run ends now, failed or cancelled."""
        if self.active is None:
            return None
        return self.finished(self.active, False, {"success": False, "message": reason}, at)

    def find(self, run_id: str) -> RunRecord | None:
        return self._runs.get(run_id)

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
