"""Job runs through the lifecycle and its ``RunLedger`` (runs.py): answers in any order,
unexpected messages, a storm of runs, a worker's exit, an ignored cancel (pure: no processes)."""

from __future__ import annotations

import random
from datetime import datetime, timezone

import pytest

from iochost.contract import messages as m
from iochost.errors import ErrorCode, IochostError
from iochost.supervisor import lifecycle_types as t
from iochost.supervisor.public import RunResult
from iochost.supervisor.runs import RunLedger, run_state
from iochost.supervisor.states import State
from test_lifecycle import exited, feed, of, running, worker

S = State


def test_runs_answer_in_either_order_and_never_wedge() -> None:
    lc = running("job")
    effects = feed(lc, t.RunRequested("rest-1", {"x": 1}))
    assert of(effects, t.Send) == [t.Send(lc.gen, m.RunJob(run_id="rest-1", parameters={"x": 1}))]
    worker(lc, m.RunAccepted(run_id="epics-1", origin="epics"))  # an operator's RUN=1 got there first
    (answer,) = of(worker(lc, m.RunRejected(run_id="rest-1", active_run_id="epics-1")), t.RunAnswer)
    assert answer.error is not None and answer.error.code == ErrorCode.EXECUTION_LOCKED
    worker(lc, m.RunFinished(run_id="epics-1", outcome="succeeded", result={"success": True}))
    assert lc.runs.active is None
    feed(lc, t.RunRequested("rest-2", {}))
    (answer,) = of(worker(lc, m.RunAccepted(run_id="rest-2")), t.RunAnswer)
    assert answer.run is not None and answer.run.state == "running"
    (update,) = of(worker(lc, m.RunFinished(run_id="rest-2", outcome="succeeded",
                                            result={"success": True, "message": "done"})), t.RunUpdate)
    assert update.run.state == "succeeded" and lc.runs.active is None


def test_unexpected_run_messages_are_absorbed() -> None:
    lc = running("job")
    assert worker(lc, m.RunFinished(run_id="nobody", outcome="failed", result={})) == []
    assert worker(lc, m.RunRejected(run_id="nobody", active_run_id="")) == []
    worker(lc, m.RunAccepted(run_id="a", origin="epics"))
    effects = worker(lc, m.RunAccepted(run_id="b", origin="epics"))  # the worker says a is over
    assert [(u.run.run_id, u.run.state) for u in of(effects, t.RunUpdate)] == [("a", "failed"), ("b", "running")]
    worker(lc, m.RunFinished(run_id="b", outcome="succeeded", result={"success": True}))
    assert lc.runs.active is None


def test_a_run_storm_in_any_order_leaves_the_job_able_to_run() -> None:
    rng = random.Random(7)
    for _ in range(200):
        lc = running("job")
        accepted: list[str] = []
        script: list[m.Message] = []
        for i in range(6):  # the worker's answers, in the order its run lock decided them
            run_id = f"r{i}"
            if accepted and rng.random() < 0.5:
                script.append(m.RunRejected(run_id=run_id, active_run_id=accepted[-1]))
            else:
                origin = rng.choice(["api", "epics"])
                script += [m.RunAccepted(run_id=run_id, origin=origin),
                           m.RunFinished(run_id=run_id, outcome="succeeded", result={"success": True})]
                accepted.append(run_id)
        for i in range(6):
            feed(lc, t.RunRequested(f"r{i}", {}))
        for message in script:
            worker(lc, message)
        assert lc.runs.active is None
        assert all(run.state == "succeeded" for run in lc.runs.all())


def test_a_worker_exit_answers_every_waiting_run_request() -> None:
    lc = running("job")
    feed(lc, t.RunRequested("r1", {}))
    worker(lc, m.RunAccepted(run_id="epics-1", origin="epics"))
    effects = exited(lc, -9)
    (answer,) = of(effects, t.RunAnswer)
    assert answer.run_id == "r1" and answer.error is not None
    (update,) = of(effects, t.RunUpdate)
    assert update.run.run_id == "epics-1" and update.run.state == "failed"


def test_cancel_that_is_ignored_kills_the_worker() -> None:
    lc = running("job")
    worker(lc, m.RunAccepted(run_id="r1", origin="epics"))
    with pytest.raises(IochostError) as mismatch:
        feed(lc, t.CancelRequested("r0"))
    assert mismatch.value.code == ErrorCode.RUN_NOT_FOUND
    effects = feed(lc, t.CancelRequested("r1"))
    assert of(effects, t.Send) == [t.Send(lc.gen, m.CancelRun(run_id="r1"))]
    (kill,) = of(feed(lc, t.CancelOverdue(lc.gen, "r1")), t.Kill)
    assert "ignored cancel" in kill.reason
    (update,) = of(exited(lc, -9), t.RunUpdate)
    assert update.run.state == "cancelled"


@pytest.mark.parametrize("success,cancel,state", [
    (True, False, "succeeded"), (True, True, "succeeded"), (False, True, "cancelled"), (False, False, "failed")])
def test_run_state_follows_the_result(success: bool, cancel: bool, state: str) -> None:
    assert run_state(RunResult(success=success), cancel) == state


def test_a_run_that_finished_during_a_restart_is_recorded_as_it_ended() -> None:
    ledger = RunLedger("j", keep=5)
    now = datetime.now(timezone.utc)
    ledger.accepted("r1", "api", {}, now)
    run = ledger.finished("r1", True, {"success": True, "message": "done"}, now)  # the worker saw the stop
    assert run is not None and (run.state, run.result.success) == ("succeeded", True)


def test_the_ledger_keeps_the_last_runs() -> None:
    ledger = RunLedger("j", keep=3)
    now = datetime.now(timezone.utc)
    for i in range(5):
        ledger.accepted(f"r{i}", "api", {}, now)
        ledger.finished(f"r{i}", False, {"success": True}, now)
    assert [run.run_id for run in ledger.all()] == ["r4", "r3", "r2"]
