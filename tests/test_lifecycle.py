"""The plugin lifecycle without processes or sockets: event sequences in, effects out.

Every row of ``lifecycle.TABLE`` is exercised (``test_every_table_row``), and the stories
that went wrong in the daemon are replayed step by step: crash and backoff, a hang, a stop
during a start, a delete during an add, a start that never completes, runs whose messages
arrive out of order, grace resolution.
"""

from __future__ import annotations

import random
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pytest

from iochost.config.limits import WorkerLimits
from iochost.contract import messages as m
from iochost.errors import ErrorCode, IochostError
from iochost.store import PluginSource, RegistryEntry
from iochost.supervisor import lifecycle_types as t
from iochost.supervisor.lifecycle import TABLE, PluginLifecycle
from iochost.supervisor.runs import RunLedger, run_state
from iochost.supervisor.models import RunResult
from iochost.supervisor.states import State

S = State
TIMINGS = t.Timings(start_timeout=60.0, heartbeat_timeout=15.0, backoff_initial=1.0,
                    backoff_max=8.0, backoff_reset=60.0, cancel_grace=5.0, stop_margin=2.0)
LIMITS = WorkerLimits(grace_period=20.0, memory_limit_mb=None, max_open_files=None, watchdog=30.0)
PLUGIN_DIR = Path("/plugins/p")


def entry(kind: str = "task", desired: str = "running") -> RegistryEntry:
    now = datetime.now(timezone.utc)
    return RegistryEntry(name="p", kind=kind, class_name="P", source=PluginSource(local_path="/src/p"),  # type: ignore[arg-type]
                         commit=None, module_file="p.py", parameters={}, desired_state=desired,  # type: ignore[arg-type]
                         created_at=now, updated_at=now, options={})


def fresh(kind: str = "task", desired: str = "running") -> PluginLifecycle:
    return PluginLifecycle(entry(kind, desired), "IOCHOST:P", TIMINGS, runs_kept=20)


def of(effects: list[t.Effect], kind: type) -> list[Any]:
    return [effect for effect in effects if isinstance(effect, kind)]


def states(effects: list[t.Effect]) -> list[str]:
    return [effect.transition.to_state.value for effect in of(effects, t.Transitioned)]


def worker(lc: PluginLifecycle, message: m.Message, now: float = 0.0) -> list[t.Effect]:
    return lc.handle(t.FromWorker(lc.gen, message, now))


def exited(lc: PluginLifecycle, code: int = 1, now: float = 0.0) -> list[t.Effect]:
    return lc.handle(t.WorkerExited(lc.gen, code, now))


# -- getting a lifecycle into each state ------------------------------------------------------
def starting(kind: str = "task") -> PluginLifecycle:
    lc = fresh(kind)
    lc.handle(t.RestoreRequested())
    effects = lc.handle(t.Restored(PLUGIN_DIR))
    assert of(effects, t.Spawn) == [t.Spawn(1)] and lc.state == S.STARTING
    return lc


def running(kind: str = "task", now: float = 0.0) -> PluginLifecycle:
    lc = starting(kind)
    lc.handle(t.Spawned(lc.gen, 100, LIMITS))
    worker(lc, m.Ready(pid=100, pvs=["IOCHOST:P:STATUS"]), now)
    worker(lc, m.Initialized(), now)
    assert lc.state == S.RUNNING
    return lc


def adding(step: str = "fetching") -> PluginLifecycle:
    lc = fresh()
    lc.handle(t.AddRequested())
    if step == "validating":
        lc.handle(t.Fetched("abc"))
    return lc


def reach(state: State, kind: str = "task") -> PluginLifecycle:
    if state == S.PENDING:
        return fresh(kind)
    if state in (S.FETCHING, S.VALIDATING):
        return adding(state.value)
    if state == S.STARTING:
        return starting(kind)
    lc = running(kind)
    if state == S.PAUSED:
        worker(lc, m.StatusChanged(status="PAUSED"))
    elif state == S.STOPPING:
        lc.handle(t.StopRequested())
    elif state == S.STOPPED:
        lc.handle(t.StopRequested())
        exited(lc, 0)
    elif state == S.CRASHED:
        exited(lc, 1)
    elif state == S.FAILED:
        worker(lc, m.Fatal(message="cannot load"))
        exited(lc, 2)
    assert lc.state == state
    return lc


def with_active_run(state: State) -> PluginLifecycle:
    """A job in ``state`` (running, paused or stopping) with run r0 in flight."""
    lc = running("job")
    worker(lc, m.RunAccepted(run_id="r0", origin="epics"))
    if state == S.PAUSED:
        worker(lc, m.StatusChanged(status="PAUSED"))
    elif state == S.STOPPING:
        lc.handle(t.StopRequested())
    assert lc.state == state and lc.runs.active == "r0"
    return lc


def sample(event: type, lc: PluginLifecycle) -> Any:
    """An instance of ``event`` that fits ``lc`` (its current worker generation)."""
    g = lc.gen
    samples: dict[type, Callable[[], Any]] = {
        t.AddRequested: t.AddRequested, t.RestoreRequested: t.RestoreRequested,
        t.StartRequested: t.StartRequested, t.StopRequested: t.StopRequested,
        t.RestartRequested: t.RestartRequested, t.DeleteRequested: t.DeleteRequested,
        t.RunRequested: lambda: t.RunRequested("r1", {}), t.Closing: t.Closing,
        t.CancelRequested: lambda: t.CancelRequested(lc.runs.active or "none"),
        t.Fetched: lambda: t.Fetched("abc"), t.TornDown: t.TornDown,
        t.Prepared: lambda: t.Prepared(entry(), PLUGIN_DIR, []),
        t.PrepareFailed: lambda: t.PrepareFailed(IochostError(ErrorCode.VALIDATION_FAILED, "bad")),
        t.Restored: lambda: t.Restored(PLUGIN_DIR), t.RestoreFailed: lambda: t.RestoreFailed("gone"),
        t.Spawned: lambda: t.Spawned(g, 100, LIMITS), t.SpawnFailed: lambda: t.SpawnFailed(g, "no python"),
        t.WorkerExited: lambda: t.WorkerExited(g, 1, 100.0), t.Tick: lambda: t.Tick(100.0),
        t.RestartDue: lambda: t.RestartDue(g), t.StartOverdue: lambda: t.StartOverdue(g),
        t.StopOverdue: lambda: t.StopOverdue(g), t.CancelOverdue: lambda: t.CancelOverdue(g, lc.runs.active or ""),
        t.UpgradeRequested: t.UpgradeRequested, t.UpgradePrepared: lambda: t.UpgradePrepared(None),
        t.UpgradePrepareFailed: lambda: t.UpgradePrepareFailed(IochostError(ErrorCode.VALIDATION_FAILED, "bad")),
        t.Swapped: lambda: t.Swapped(True, PLUGIN_DIR), t.ProbationOver: lambda: t.ProbationOver(g),
        t.Dropped: t.Dropped,
        m.Ready: lambda: t.FromWorker(g, m.Ready(pid=100, pvs=[]), 0.0),
        m.Initialized: lambda: t.FromWorker(g, m.Initialized(), 0.0),
        m.StatusChanged: lambda: t.FromWorker(g, m.StatusChanged(status="PAUSED"), 0.0),
    }
    return samples[event]()


@pytest.mark.parametrize("state,event", sorted(TABLE, key=lambda key: (key[0].value, key[1].__name__)),
                         ids=lambda value: getattr(value, "value", getattr(value, "__name__", str(value))))
def test_every_table_row(state: State, event: type) -> None:
    kind = "job" if event in (t.RunRequested, t.CancelRequested, t.CancelOverdue) else "task"
    lc = reach(state, kind)
    if event in (t.CancelRequested, t.CancelOverdue) and state != S.STARTING:
        lc = with_active_run(state)
    _, targets = TABLE[(state, event)]
    lc.handle(sample(event, lc))  # a move outside the row's targets raises IllegalTransition
    assert lc.state == state or lc.state in targets


def test_a_request_a_state_does_not_take_is_refused_with_its_state() -> None:
    lc = running()
    with pytest.raises(IochostError) as error:
        lc.handle(t.StartRequested())
    assert error.value.code == ErrorCode.INVALID_STATE and "running" in error.value.message


def test_events_of_a_replaced_worker_are_dropped() -> None:
    lc = running()
    old = lc.gen
    exited(lc, 1)
    lc.handle(t.RestartDue(lc.gen))
    assert lc.gen == old + 1
    assert lc.handle(t.FromWorker(old, m.Initialized(), 0.0)) == [] and lc.state == S.STARTING


# -- stories ------------------------------------------------------------------------------
def test_crash_backs_off_doubling_then_restarts_and_resets_after_a_good_run() -> None:
    lc = running()
    delays = []
    for _ in range(5):
        effects = exited(lc, 1, now=1.0)
        assert lc.state == S.CRASHED and "exited with code 1" in (lc.last_error or "")
        (later,) = of(effects, t.Later)
        assert later.event == t.RestartDue(lc.gen)
        delays.append(later.delay)
        assert of(lc.handle(later.event), t.Spawn) == [t.Spawn(lc.gen)] and lc.state == S.STARTING
        lc.handle(t.Spawned(lc.gen, 101, LIMITS))
        worker(lc, m.Initialized(), now=1.0)
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0] and lc.restarts == 5
    (later,) = of(exited(lc, 1, now=1.0 + TIMINGS.backoff_reset), t.Later)  # it ran a minute: fresh start
    assert later.delay == 1.0


def test_a_silent_worker_and_a_stuck_call_are_killed_then_restarted() -> None:
    lc = running(now=0.0)
    assert lc.handle(t.Tick(10.0)) == []
    (kill,) = of(lc.handle(t.Tick(16.0)), t.Kill)
    assert "no heartbeat for 16.0 s" in kill.reason
    assert of(lc.handle(t.Tick(17.0)), t.Kill) == []  # one kill per worker
    exited(lc, -9, now=17.0)
    assert lc.state == S.CRASHED and "no heartbeat" in (lc.last_error or "")

    lc = running(now=0.0)
    worker(lc, m.Heartbeat(busy_in="execute", busy_for=29.0), now=0.0)
    (kill,) = of(lc.handle(t.Tick(1.5)), t.Kill)
    assert "watchdog: execute() busy for 30.5 s (limit 30 s)" in kill.reason


def test_stop_during_start_stops_the_worker_once_it_exists() -> None:
    lc = starting()
    effects = lc.handle(t.StopRequested())
    assert lc.state == S.STOPPING and of(effects, t.StopWorker) == []  # no worker yet to stop
    assert lc.entry.desired_state == "stopped" and of(effects, t.Persist)
    assert of(lc.handle(t.Spawned(lc.gen, 100, LIMITS)), t.StopWorker) == [t.StopWorker(lc.gen, 20.0)]
    assert worker(lc, m.Initialized()) == [] and lc.state == S.STOPPING  # too late to count
    exited(lc, 0)
    assert lc.state == S.STOPPED


def test_a_daemon_stop_during_a_restores_start_times_cleanup_with_the_plugins_grace() -> None:
    """The daemon stops (SIGTERM) while a restored worker is being spawned: its grace (20 s,
    config.yaml) is known only at Spawned. The one kill deadline is 20 s + the margin from
    then, never the daemon's default grace armed before it."""
    lc = starting()  # restored, its worker being spawned
    effects = lc.handle(t.Closing()) + lc.handle(t.StopRequested(keep_desired=True))
    effects += lc.handle(t.Spawned(lc.gen, 100, LIMITS))
    assert of(effects, t.Later) == [t.Later(20.0 + TIMINGS.stop_margin, t.StopOverdue(lc.gen))]
    assert of(effects, t.StopWorker) == [t.StopWorker(lc.gen, 20.0)]
    (kill,) = of(lc.handle(t.StopOverdue(lc.gen)), t.Kill)
    assert kill.reason == "cleanup() did not return within the grace period of 20 s"
    exited(lc, -9)
    assert lc.state == S.STOPPED and lc.entry.desired_state == "running"


def test_a_stop_before_a_restarts_spawn_waits_for_the_new_workers_grace() -> None:
    """A restart whose new worker has another grace (an upgrade changed config.yaml): a stop
    before it is spawned is timed with the new worker's grace, not the previous worker's."""
    lc = running()  # LIMITS: grace 20 s
    exited(lc, 1, now=1.0)
    lc.handle(t.RestartDue(lc.gen))
    effects = lc.handle(t.StopRequested())
    longer = WorkerLimits(grace_period=45.0, memory_limit_mb=None, max_open_files=None, watchdog=30.0)
    effects += lc.handle(t.Spawned(lc.gen, 101, longer))
    assert of(effects, t.Later) == [t.Later(45.0 + TIMINGS.stop_margin, t.StopOverdue(lc.gen))]
    assert of(effects, t.StopWorker) == [t.StopWorker(lc.gen, 45.0)]


def test_stop_uses_the_grace_period_the_worker_was_started_with() -> None:
    lc = running()  # LIMITS: grace 20 s, from config.yaml or the request
    effects = lc.handle(t.StopRequested())
    assert of(effects, t.StopWorker) == [t.StopWorker(lc.gen, 20.0)]
    assert of(effects, t.Later) == [t.Later(22.0, t.StopOverdue(lc.gen))]
    (kill,) = of(lc.handle(t.StopOverdue(lc.gen)), t.Kill)
    assert "grace period of 20 s" in kill.reason


def test_delete_during_add_cancels_it_and_keeps_nothing() -> None:
    lc = adding()
    assert lc.handle(t.DeleteRequested()) == [] and lc.state == S.FETCHING
    lc.handle(t.Fetched("abc"))
    effects = lc.handle(t.Prepared(entry(), PLUGIN_DIR, []))
    assert of(effects, t.Teardown) and not of(effects, t.Persist) and not of(effects, t.Spawn)
    effects = lc.handle(t.TornDown())
    assert states(effects) == ["deleted"] and of(effects, t.Forget)
    assert lc.add_error is not None and lc.add_error.code == ErrorCode.ADD_CANCELLED


def test_delete_during_the_adds_first_start_stops_then_tears_down() -> None:
    lc = adding("validating")
    lc.handle(t.Prepared(entry(), PLUGIN_DIR, []))
    lc.handle(t.Spawned(lc.gen, 100, LIMITS))
    effects = lc.handle(t.DeleteRequested())
    assert lc.state == S.STOPPING and of(effects, t.StopWorker)
    assert of(exited(lc, 0), t.Teardown) and lc.state == S.STOPPED
    lc.handle(t.TornDown())
    assert lc.state == S.DELETED and lc.add_error is not None and lc.add_error.code == ErrorCode.ADD_CANCELLED


def test_stop_during_add_ends_the_add_stopped() -> None:
    lc = adding()
    lc.handle(t.StopRequested())
    lc.handle(t.Fetched("abc"))
    effects = lc.handle(t.Prepared(entry(), PLUGIN_DIR, []))
    assert lc.state == S.STOPPED and not lc.adding and lc.add_error is None
    (persist,) = of(effects, t.Persist)
    assert persist.entry.desired_state == "stopped" and not of(effects, t.Spawn)


def test_a_failed_add_tells_its_whole_story() -> None:
    lc = adding()
    seen = states(lc.handle(t.Fetched("abc")))
    error = IochostError(ErrorCode.VALIDATION_FAILED, "plugin 'p' failed validation with 1 error(s)")
    effects = lc.handle(t.PrepareFailed(error))
    seen += states(effects)
    assert of(effects, t.Teardown)
    seen += states(lc.handle(t.TornDown()))
    assert seen == ["validating", "failed", "deleted"]
    assert lc.add_error is error and "failed validation" in (lc.last_error or "")


def test_a_start_that_never_completes_is_a_failure_with_backoff() -> None:
    lc = starting()
    effects = lc.handle(t.Spawned(lc.gen, 100, LIMITS))
    assert of(effects, t.Later) == [t.Later(60.0, t.StartOverdue(lc.gen))]
    worker(lc, m.Ready(pid=100, pvs=["IOCHOST:P:STATUS"]))
    worker(lc, m.Heartbeat(busy_in="initialize", busy_for=30.0))
    assert lc.state == S.STARTING and lc.degraded  # PVs are up, but it is not running
    (kill,) = of(lc.handle(t.StartOverdue(lc.gen)), t.Kill)
    assert "initialize() still running" in kill.reason
    effects = exited(lc, -9)
    assert lc.state == S.CRASHED and "initialize()" in (lc.last_error or "") and of(effects, t.Later)


def test_an_adds_first_start_that_fails_fails_the_add_with_its_log() -> None:
    lc = adding("validating")
    lc.handle(t.Prepared(entry(), PLUGIN_DIR, []))
    lc.handle(t.Spawned(lc.gen, 100, LIMITS))
    lc.handle(t.StartOverdue(lc.gen))
    effects = lc.handle(t.WorkerExited(lc.gen, -9, 0.0, ["Traceback ..."]))
    assert lc.state == S.FAILED and of(effects, t.Teardown)
    assert lc.add_error is not None and lc.add_error.code == ErrorCode.WORKER_START_FAILED
    assert lc.add_error.details["log_tail"] == ["Traceback ..."]


def test_a_plugin_that_cannot_load_fails_without_restarts() -> None:
    lc = starting()
    worker(lc, m.Fatal(message="cannot load plugin: ImportError: x"))
    effects = exited(lc, 2)
    assert lc.state == S.FAILED and not of(effects, t.Later) and "ImportError" in (lc.last_error or "")


def test_no_exit_is_a_crash_once_the_daemon_is_closing() -> None:
    lc = running()
    lc.handle(t.Closing())
    effects = exited(lc, -15)
    assert lc.state == S.STOPPED and not of(effects, t.Later)


def test_restart_stops_then_starts_and_enable_zero_pauses() -> None:
    lc = running()
    worker(lc, m.StatusChanged(status="PAUSED", message="Paused (ENABLE=0)"))
    assert lc.state == S.PAUSED
    lc.handle(t.RestartRequested())
    assert lc.state == S.STOPPING
    effects = exited(lc, 0)
    assert states(effects) == ["stopped", "starting"] and of(effects, t.Spawn)


# -- job runs -------------------------------------------------------------------------------
def test_runs_answer_in_either_order_and_never_wedge() -> None:
    lc = running("job")
    effects = lc.handle(t.RunRequested("rest-1", {"x": 1}))
    assert of(effects, t.Send) == [t.Send(lc.gen, m.RunJob(run_id="rest-1", parameters={"x": 1}))]
    worker(lc, m.RunAccepted(run_id="epics-1", origin="epics"))  # an operator's RUN=1 got there first
    (answer,) = of(worker(lc, m.RunRejected(run_id="rest-1", active_run_id="epics-1")), t.RunAnswer)
    assert answer.error is not None and answer.error.code == ErrorCode.EXECUTION_LOCKED
    worker(lc, m.RunFinished(run_id="epics-1", outcome="succeeded", result={"success": True}))
    assert lc.runs.active is None
    lc.handle(t.RunRequested("rest-2", {}))
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
            lc.handle(t.RunRequested(f"r{i}", {}))
        for message in script:
            worker(lc, message)
        assert lc.runs.active is None
        assert all(run.state == "succeeded" for run in lc.runs.all())


def test_a_worker_exit_answers_every_waiting_run_request() -> None:
    lc = running("job")
    lc.handle(t.RunRequested("r1", {}))
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
        lc.handle(t.CancelRequested("r0"))
    assert mismatch.value.code == ErrorCode.RUN_NOT_FOUND
    effects = lc.handle(t.CancelRequested("r1"))
    assert of(effects, t.Send) == [t.Send(lc.gen, m.CancelRun(run_id="r1"))]
    (kill,) = of(lc.handle(t.CancelOverdue(lc.gen, "r1")), t.Kill)
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


# -- upgrading in place -------------------------------------------------------------------------
STAGED_DIR = Path("/data/tmp/upgrade-p/new")  # where the new revision is validated
OLD_COMMIT, NEW_COMMIT = "a" * 40, "b" * 40


def serving_at_old_commit() -> PluginLifecycle:
    lc = running()
    lc.entry = lc.entry.model_copy(update={"commit": OLD_COMMIT})
    return lc


def new_revision(lc: PluginLifecycle) -> t.Prepared:
    return t.Prepared(lc.entry.model_copy(update={"commit": NEW_COMMIT, "parameters": {"gain": 2}}), STAGED_DIR,
                      ["IOCHOST:P:STATUS", "IOCHOST:P:GAIN"])


def upgraded_and_started(lc: PluginLifecycle) -> list[t.Effect]:
    """Request, validate, stop the old worker, swap, spawn and initialize the new one."""
    effects = lc.handle(t.UpgradeRequested())
    assert of(effects, t.PrepareUpgrade) and lc.state == S.RUNNING  # the old worker serves meanwhile
    effects = lc.handle(t.UpgradePrepared(new_revision(lc)))
    assert lc.state == S.STOPPING and of(effects, t.StopWorker)
    effects = exited(lc, 0)
    assert of(effects, t.SwapRevision) == [t.SwapRevision(back=False)] and lc.state == S.STOPPED
    effects = lc.handle(t.Swapped(True, PLUGIN_DIR))  # the new revision where the old one was
    assert of(effects, t.Spawn) and lc.state == S.STARTING and lc.plugin_dir == PLUGIN_DIR
    lc.handle(t.Spawned(lc.gen, 200, LIMITS))
    worker(lc, m.Ready(pid=200, pvs=new_revision(lc).pvs))
    return worker(lc, m.Initialized())


def test_an_upgrade_is_kept_after_its_probation_and_only_then_persisted() -> None:
    lc = serving_at_old_commit()
    effects = upgraded_and_started(lc)
    assert lc.state == S.RUNNING and lc.upgrade is not None and not of(effects, t.Persist)
    assert of(effects, t.Later)[-1] == t.Later(TIMINGS.probation, t.ProbationOver(lc.gen))
    effects = lc.handle(t.ProbationOver(lc.gen))
    assert [type(e) for e in effects if isinstance(e, (t.DropStaged, t.Persist))] == [t.DropStaged, t.Persist]
    persisted = of(effects, t.Persist)[0].entry
    assert (persisted.commit, persisted.previous_commit, persisted.parameters) == (NEW_COMMIT, OLD_COMMIT, {"gain": 2})
    assert lc.upgrade is not None  # the caller waits until the previous revision is gone
    effects = lc.handle(t.Dropped())
    assert lc.upgrade is None and lc.upgrade_outcome is None
    assert [u.phase for u in of(effects, t.UpgradeUpdate)] == ["succeeded"]
    record = lc.record()
    assert (record.source.commit, record.previous_commit) == (NEW_COMMIT, OLD_COMMIT)


def test_a_new_revision_that_exits_in_probation_is_rolled_back_to_the_old_one() -> None:
    lc = serving_at_old_commit()
    upgraded_and_started(lc)
    effects = exited(lc, 1)
    assert lc.state == S.FAILED and of(effects, t.SwapRevision) == [t.SwapRevision(back=True)]
    effects = lc.handle(t.Swapped(True, PLUGIN_DIR))
    assert lc.state == S.STARTING and lc.plugin_dir == PLUGIN_DIR and lc.entry.commit == OLD_COMMIT
    lc.handle(t.Spawned(lc.gen, 300, LIMITS))
    worker(lc, m.Ready(pid=300, pvs=["IOCHOST:P:STATUS"]))
    effects = worker(lc, m.Initialized())
    assert lc.state == S.RUNNING and lc.upgrade is None
    assert lc.upgrade_outcome is not None and lc.upgrade_outcome.code == ErrorCode.UPGRADE_FAILED
    assert "rolled back" in lc.upgrade_outcome.message and not of(effects, t.Persist)
    assert lc.record().previous_commit is None


def test_a_new_revision_that_never_starts_is_rolled_back() -> None:
    lc = serving_at_old_commit()
    lc.handle(t.UpgradeRequested())
    lc.handle(t.UpgradePrepared(new_revision(lc)))
    exited(lc, 0)
    lc.handle(t.Swapped(True, PLUGIN_DIR))
    effects = lc.handle(t.SpawnFailed(lc.gen, "no python"))
    assert lc.state == S.FAILED and of(effects, t.SwapRevision) == [t.SwapRevision(back=True)]


def test_an_unchanged_or_invalid_revision_changes_nothing() -> None:
    for answer in (t.UpgradePrepared(None), t.UpgradePrepareFailed(IochostError(ErrorCode.VALIDATION_FAILED, "bad"))):
        lc = serving_at_old_commit()
        pid, gen = lc.pid, lc.gen
        lc.handle(t.UpgradeRequested())
        effects = lc.handle(answer)  # the shell has dropped what it staged before answering
        assert not of(effects, t.StopWorker) and not of(effects, t.SwapRevision)
        assert (lc.state, lc.pid, lc.gen, lc.entry.commit, lc.upgrade) == (S.RUNNING, pid, gen, OLD_COMMIT, None)
        failed = isinstance(answer, t.UpgradePrepareFailed)
        assert (lc.upgrade_outcome is not None) == failed


def test_the_same_revision_from_another_source_only_changes_the_entry() -> None:
    """A mirror's URL (the plugins file): saved, then the caller answered; the worker runs on."""
    lc = serving_at_old_commit()
    pid, gen = lc.pid, lc.gen
    lc.handle(t.UpgradeRequested())
    mirror = lc.entry.model_copy(update={"source": lc.entry.source.model_copy(update={"git_url": "file:///mirror"})})
    effects = lc.handle(t.UpgradePrepared(None, mirror))
    assert [type(e) for e in effects if isinstance(e, (t.DropStaged, t.Persist))] == [t.Persist, t.DropStaged]
    assert of(effects, t.Persist)[0].entry.source.git_url == "file:///mirror" and lc.upgrade is not None
    effects = lc.handle(t.Dropped())
    assert [u.phase for u in of(effects, t.UpgradeUpdate)] == ["unchanged"] and lc.upgrade_outcome is None
    assert (lc.state, lc.pid, lc.gen, lc.entry.commit, lc.upgrade) == (S.RUNNING, pid, gen, OLD_COMMIT, None)
    assert lc.record().source.git_url == "file:///mirror"


def test_a_delete_ends_an_upgrade_and_removes_what_it_kept_once_past_preparing() -> None:
    """Preparing: the shell's thread removes its own staging areas; after that, DropStaged."""
    lc = serving_at_old_commit()
    lc.handle(t.UpgradeRequested())
    assert not of(lc.handle(t.DeleteRequested()), t.DropStaged)
    lc = serving_at_old_commit()
    upgraded_and_started(lc)  # in probation: the previous revision is kept aside
    effects = lc.handle(t.DeleteRequested())
    assert of(effects, t.DropStaged) and of(effects, t.StopWorker) and lc.upgrade is None
    assert lc.upgrade_outcome is not None and "deleted" in lc.upgrade_outcome.message


def test_a_stopped_plugin_is_upgraded_without_starting_it() -> None:
    lc = reach(S.STOPPED)
    lc.handle(t.UpgradeRequested())
    effects = lc.handle(t.UpgradePrepared(new_revision(lc)))
    assert of(effects, t.SwapRevision) and not of(effects, t.StopWorker)
    effects = lc.handle(t.Swapped(True, PLUGIN_DIR))
    assert lc.state == S.STOPPED and of(effects, t.Persist) and not of(effects, t.Spawn)
    lc.handle(t.Dropped())
    assert lc.upgrade is None and lc.upgrade_outcome is None and lc.entry.commit == NEW_COMMIT


def test_an_upgrade_refuses_start_stop_restart_and_a_second_upgrade_but_not_delete() -> None:
    lc = serving_at_old_commit()
    lc.handle(t.UpgradeRequested())
    for request in (t.StopRequested(), t.RestartRequested(), t.UpgradeRequested()):
        with pytest.raises(IochostError) as raised:
            lc.handle(request)
        assert raised.value.code == ErrorCode.INVALID_STATE and "upgraded" in raised.value.message
    effects = lc.handle(t.DeleteRequested())
    assert lc.state == S.STOPPING and lc.upgrade is None
    assert lc.upgrade_outcome is not None and "deleted" in lc.upgrade_outcome.message
    assert of(lc.handle(t.UpgradePrepared(new_revision(lc))), t.DropStaged)  # the late answer is dropped
    assert of(effects, t.StopWorker)


def test_a_spawn_failing_for_want_of_host_resources_is_retried_with_backoff_like_a_crash() -> None:
    lc = starting()
    delays = []
    for _ in range(3):
        effects = lc.handle(t.SpawnFailed(lc.gen, "[Errno 24] Too many open files",
                                            host_fault=ErrorCode.LAUNCHER_UNAVAILABLE, now=5.0))
        assert lc.state == S.CRASHED and "Too many open files" in (lc.last_error or "")
        assert lc.trouble in ("crashed", "crash_looping")  # what /health names meanwhile
        (later,) = of(effects, t.Later)
        delays.append(later.delay)
        assert of(lc.handle(later.event), t.Spawn) == [t.Spawn(lc.gen)]
    assert delays == [1.0, 2.0, 4.0]
    lc.handle(t.Spawned(lc.gen, 101, LIMITS))
    worker(lc, m.Initialized(), now=6.0)
    assert lc.state == S.RUNNING


def test_a_spawn_failure_of_the_plugin_fails_it_and_of_the_host_fails_an_add_as_the_daemons() -> None:
    lc = starting()
    lc.handle(t.SpawnFailed(lc.gen, "no python"))
    assert lc.state == S.FAILED
    for fault, code in ((None, ErrorCode.WORKER_START_FAILED), (ErrorCode.LAUNCHER_UNAVAILABLE,) * 2,
                        (ErrorCode.STORAGE_FULL,) * 2):
        lc = adding("validating")
        lc.handle(t.Prepared(entry(), PLUGIN_DIR, []))
        effects = lc.handle(t.SpawnFailed(lc.gen, "[Errno 11] Resource temporarily unavailable", fault, 1.0))
        assert lc.state == S.FAILED and of(effects, t.Teardown) and not of(effects, t.Later)
        assert lc.add_error is not None and lc.add_error.code is code


def test_host_fault_finds_the_errno_through_the_causes() -> None:
    import errno
    import os

    from iochost.launch.launcher import LaunchError
    from iochost.supervisor.process import host_fault

    expected = {errno.EMFILE: ErrorCode.LAUNCHER_UNAVAILABLE, errno.ENFILE: ErrorCode.LAUNCHER_UNAVAILABLE,
                errno.EAGAIN: ErrorCode.LAUNCHER_UNAVAILABLE, errno.ENOMEM: ErrorCode.LAUNCHER_UNAVAILABLE,
                errno.ENOSPC: ErrorCode.STORAGE_FULL, errno.EDQUOT: ErrorCode.STORAGE_FULL}
    for number, code in expected.items():
        try:
            try:
                raise OSError(number, os.strerror(number))
            except OSError as exc:
                raise LaunchError("no member") from exc
        except LaunchError as wrapped:
            assert host_fault(wrapped) is code
    assert host_fault(OSError(errno.ENOENT, "no python")) is None
    assert host_fault(ValueError("bad spec")) is None
