"""The plugin lifecycle without processes or sockets: event sequences in, effects out.

Every row of ``lifecycle.TABLE`` is exercised (``test_every_table_row``), and the stories
that went wrong in the daemon are replayed step by step: crash and backoff, a hang, a stop
during a start, a delete during an add, a start that never completes, runs whose messages
arrive out of order, grace resolution. Spawn failures (host faults, plugin faults) are in
test_lifecycle_spawn_failures.py; the helpers here are shared by the other test_lifecycle_* modules.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import pytest

from iochost.config import Parameters
from iochost.config.limits import DaemonLimits, WorkerLimits
from iochost.contract import messages as m
from iochost.errors import ErrorCode, IochostError
from iochost.store import PluginSource, RegistryEntry
from iochost.supervisor import lifecycle_types as t
from iochost.supervisor.lifecycle import TABLE, PluginLifecycle
from iochost.supervisor.states import State

S = State
TIMINGS = t.Timings(start_timeout=60.0, heartbeat_timeout=15.0, backoff_initial=1.0, backoff_max=8.0,
                    backoff_reset=60.0, cancel_grace=5.0, probation=3.0, stop_margin=2.0)
EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)
DAEMON_LIMITS = DaemonLimits(grace_period=10.0, memory_limit_mb=None, max_open_files=None)  # the daemon's flags
PARAMETERS = Parameters(grace_period=20.0)  # config.yaml's
LIMITS = WorkerLimits(grace_period=20.0, memory_limit_mb=None, max_open_files=None, watchdog=30.0)  # resolved
PLUGIN_DIR = Path("/plugins/p")


def entry(kind: str = "task", desired: str = "running") -> RegistryEntry:
    now = datetime.now(timezone.utc)
    return RegistryEntry(name="p", kind=kind, class_name="P", source=PluginSource(local_path="/src/p"),  # type: ignore[arg-type]
                         commit=None, module_file="p.py", parameters={}, desired_state=desired,  # type: ignore[arg-type]
                         created_at=now, updated_at=now, options={})


def fresh(kind: str = "task", desired: str = "running") -> PluginLifecycle:
    return PluginLifecycle(entry(kind, desired), "IOCHOST:P", TIMINGS, runs_kept=20, now=at(0.0),
                           daemon_limits=DAEMON_LIMITS)


def at(seconds: float) -> t.Now:
    """The time the tests say an event happens: ``seconds`` after EPOCH, on both clocks."""
    return t.Now(EPOCH + timedelta(seconds=seconds), seconds)


def feed(lc: PluginLifecycle, event: t.Event, now: float = 0.0) -> list[t.Effect]:
    """Hand ``event`` to the lifecycle as the shell does, as happening at ``now`` (seconds)."""
    return lc.handle(event, at(now))


def of(effects: list[t.Effect], kind: type) -> list[Any]:
    return [effect for effect in effects if isinstance(effect, kind)]


def states(effects: list[t.Effect]) -> list[str]:
    return [effect.transition.to_state.value for effect in of(effects, t.Transitioned)]


def worker(lc: PluginLifecycle, message: m.Message, now: float = 0.0) -> list[t.Effect]:
    return feed(lc, t.FromWorker(lc.gen, message), now)


def exited(lc: PluginLifecycle, code: int = 1, now: float = 0.0) -> list[t.Effect]:
    return feed(lc, t.WorkerExited(lc.gen, code), now)


# -- getting a lifecycle into each state ------------------------------------------------------
def starting(kind: str = "task") -> PluginLifecycle:
    lc = fresh(kind)
    feed(lc, t.RestoreRequested())
    effects = feed(lc, t.Restored(PLUGIN_DIR, parameters=PARAMETERS))
    assert of(effects, t.Spawn) == [t.Spawn(1, LIMITS)] and lc.state == S.STARTING
    return lc


def running(kind: str = "task", now: float = 0.0) -> PluginLifecycle:
    lc = starting(kind)
    feed(lc, t.Spawned(lc.gen, 100))
    worker(lc, m.Ready(pid=100, pvs=["IOCHOST:P:STATUS"]), now)
    worker(lc, m.Initialized(), now)
    assert lc.state == S.RUNNING
    return lc


def adding(step: str = "fetching") -> PluginLifecycle:
    lc = fresh()
    feed(lc, t.AddRequested())
    if step == "validating":
        feed(lc, t.Fetched("abc"))
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
        feed(lc, t.StopRequested())
    elif state == S.STOPPED:
        feed(lc, t.StopRequested())
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
        feed(lc, t.StopRequested())
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
        t.Spawned: lambda: t.Spawned(g, 100), t.SpawnFailed: lambda: t.SpawnFailed(g, "no python"),
        t.WorkerExited: lambda: t.WorkerExited(g, 1), t.Tick: t.Tick,
        t.RestartDue: lambda: t.RestartDue(g), t.StartOverdue: lambda: t.StartOverdue(g),
        t.StopOverdue: lambda: t.StopOverdue(g), t.CancelOverdue: lambda: t.CancelOverdue(g, lc.runs.active or ""),
        t.UpgradeRequested: t.UpgradeRequested, t.UpgradePrepared: lambda: t.UpgradePrepared(None),
        t.UpgradePrepareFailed: lambda: t.UpgradePrepareFailed(IochostError(ErrorCode.VALIDATION_FAILED, "bad")),
        t.Swapped: lambda: t.Swapped(True, PLUGIN_DIR), t.ProbationOver: lambda: t.ProbationOver(g),
        t.Dropped: t.Dropped,
        m.Ready: lambda: t.FromWorker(g, m.Ready(pid=100, pvs=[])),
        m.Initialized: lambda: t.FromWorker(g, m.Initialized()),
        m.StatusChanged: lambda: t.FromWorker(g, m.StatusChanged(status="PAUSED")),
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
    feed(lc, sample(event, lc), 100.0)  # a move outside the row's targets raises IllegalTransition
    assert lc.state == state or lc.state in targets


def test_a_request_a_state_does_not_take_is_refused_with_its_state() -> None:
    lc = running()
    with pytest.raises(IochostError) as error:
        feed(lc, t.StartRequested())
    assert error.value.code == ErrorCode.INVALID_STATE and "running" in error.value.message


def test_events_of_a_replaced_worker_are_dropped() -> None:
    lc = running()
    old = lc.gen
    exited(lc, 1)
    feed(lc, t.RestartDue(lc.gen))
    assert lc.gen == old + 1
    assert feed(lc, t.FromWorker(old, m.Initialized())) == [] and lc.state == S.STARTING


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
        assert of(feed(lc, later.event), t.Spawn) == [t.Spawn(lc.gen, LIMITS)] and lc.state == S.STARTING
        feed(lc, t.Spawned(lc.gen, 101))
        worker(lc, m.Initialized(), now=1.0)
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0] and lc.restarts == 5
    (later,) = of(exited(lc, 1, now=1.0 + TIMINGS.backoff_reset), t.Later)  # it ran a minute: fresh start
    assert later.delay == 1.0


def test_a_silent_worker_and_a_stuck_call_are_killed_then_restarted() -> None:
    lc = running(now=0.0)
    assert feed(lc, t.Tick(), 10.0) == []
    (kill,) = of(feed(lc, t.Tick(), 16.0), t.Kill)
    assert "no heartbeat for 16.0 s" in kill.reason
    assert of(feed(lc, t.Tick(), 17.0), t.Kill) == []  # one kill per worker
    exited(lc, -9, now=17.0)
    assert lc.state == S.CRASHED and "no heartbeat" in (lc.last_error or "")

    lc = running(now=0.0)
    worker(lc, m.Heartbeat(busy_in="execute", busy_for=29.0), now=0.0)
    (kill,) = of(feed(lc, t.Tick(), 1.5), t.Kill)
    assert "watchdog: execute() busy for 30.5 s (limit 30 s)" in kill.reason


def test_stop_during_start_stops_the_worker_once_it_exists() -> None:
    lc = starting()
    effects = feed(lc, t.StopRequested())
    assert lc.state == S.STOPPING and of(effects, t.StopWorker) == []  # no worker yet to stop
    assert lc.entry.desired_state == "stopped" and of(effects, t.Persist)
    assert of(feed(lc, t.Spawned(lc.gen, 100)), t.StopWorker) == [t.StopWorker(lc.gen, 20.0)]
    assert worker(lc, m.Initialized()) == [] and lc.state == S.STOPPING  # too late to count
    exited(lc, 0)
    assert lc.state == S.STOPPED


def test_a_daemon_stop_during_a_restores_start_times_cleanup_with_the_plugins_grace() -> None:
    """The daemon stops (SIGTERM) while a restored worker is being spawned: its grace (20 s,
    config.yaml) was resolved at its spawn; the stop is sent, and its one kill deadline armed
    (20 s + the margin), once the worker exists, never with the daemon's default grace."""
    lc = starting()  # restored, its worker being spawned
    effects = feed(lc, t.Closing()) + feed(lc, t.StopRequested(keep_desired=True))
    effects += feed(lc, t.Spawned(lc.gen, 100))
    assert of(effects, t.Later) == [t.Later(20.0 + TIMINGS.stop_margin, t.StopOverdue(lc.gen))]
    assert of(effects, t.StopWorker) == [t.StopWorker(lc.gen, 20.0)]
    (kill,) = of(feed(lc, t.StopOverdue(lc.gen)), t.Kill)
    assert kill.reason == "cleanup() did not return within the grace period of 20 s"
    exited(lc, -9)
    assert lc.state == S.STOPPED and lc.entry.desired_state == "running"


def test_a_stop_before_a_new_revisions_spawn_waits_for_its_own_grace() -> None:
    """An upgrade whose new revision's config.yaml gives another grace: a stop before its
    worker is spawned is timed with the new worker's grace, not the previous worker's."""
    lc = running()  # PARAMETERS: grace 20 s
    feed(lc, t.UpgradeRequested())
    feed(lc, t.UpgradePrepared(t.Prepared(lc.entry, PLUGIN_DIR, [], parameters=Parameters(grace_period=45.0))))
    exited(lc, 0)
    (spawn,) = of(feed(lc, t.Swapped(True, PLUGIN_DIR)), t.Spawn)
    assert spawn.limits.grace_period == 45.0
    effects = feed(lc, t.Closing()) + feed(lc, t.StopRequested(keep_desired=True))
    assert of(effects, t.StopWorker) == []  # no worker yet to stop
    effects += feed(lc, t.Spawned(lc.gen, 101))
    assert of(effects, t.Later) == [t.Later(45.0 + TIMINGS.stop_margin, t.StopOverdue(lc.gen))]
    assert of(effects, t.StopWorker) == [t.StopWorker(lc.gen, 45.0)]


def test_limits_are_resolved_once_at_each_spawn_request_then_parameters_then_daemon() -> None:
    """The lifecycle resolves a worker's limits (config.limits' order) when it spawns it and
    hands them to the shell on ``Spawn``: the spec and the stop's timing use the same ones."""
    def spawned_limits(parameters: Parameters | None, options: dict[str, Any]) -> WorkerLimits:
        lc = fresh()
        lc.entry = lc.entry.model_copy(update={"options": options})
        feed(lc, t.RestoreRequested())
        (spawn,) = of(feed(lc, t.Restored(PLUGIN_DIR, parameters=parameters)), t.Spawn)
        assert lc.limits == spawn.limits
        return spawn.limits

    assert spawned_limits(PARAMETERS, {}) == LIMITS
    assert spawned_limits(PARAMETERS, {"grace_period": 40.0}).grace_period == 40.0  # the request's option
    assert spawned_limits(None, {}).grace_period == DAEMON_LIMITS.grace_period  # config.yaml not read
    assert spawned_limits(Parameters(interval=10.0, memory_limit_mb=256), {}) == WorkerLimits(
        grace_period=10.0, memory_limit_mb=256, max_open_files=None, watchdog=100.0)


def test_stop_uses_the_grace_period_the_worker_was_started_with() -> None:
    lc = running()  # LIMITS: grace 20 s, from config.yaml or the request
    effects = feed(lc, t.StopRequested())
    assert of(effects, t.StopWorker) == [t.StopWorker(lc.gen, 20.0)]
    assert of(effects, t.Later) == [t.Later(22.0, t.StopOverdue(lc.gen))]
    (kill,) = of(feed(lc, t.StopOverdue(lc.gen)), t.Kill)
    assert "grace period of 20 s" in kill.reason


def test_delete_during_add_cancels_it_and_keeps_nothing() -> None:
    lc = adding()
    # its clone, install or probe is ended, not waited out; the add answers once that step returns
    assert feed(lc, t.DeleteRequested()) == [t.EndErrands()] and lc.state == S.FETCHING
    feed(lc, t.Fetched("abc"))
    effects = feed(lc, t.Prepared(entry(), PLUGIN_DIR, []))
    assert of(effects, t.Teardown) and not of(effects, t.Persist) and not of(effects, t.Spawn)
    effects = feed(lc, t.TornDown())
    assert states(effects) == ["deleted"] and of(effects, t.Forget)
    assert lc.add_error is not None and lc.add_error.code == ErrorCode.ADD_CANCELLED


def test_delete_during_the_adds_first_start_stops_then_tears_down() -> None:
    lc = adding("validating")
    feed(lc, t.Prepared(entry(), PLUGIN_DIR, []))
    feed(lc, t.Spawned(lc.gen, 100))
    effects = feed(lc, t.DeleteRequested())
    assert lc.state == S.STOPPING and of(effects, t.StopWorker) and not of(effects, t.EndErrands)
    assert of(exited(lc, 0), t.Teardown) and lc.state == S.STOPPED
    feed(lc, t.TornDown())
    assert lc.state == S.DELETED and lc.add_error is not None and lc.add_error.code == ErrorCode.ADD_CANCELLED


def test_stop_during_add_ends_the_add_stopped() -> None:
    lc = adding()
    feed(lc, t.StopRequested())
    feed(lc, t.Fetched("abc"))
    effects = feed(lc, t.Prepared(entry(), PLUGIN_DIR, []))
    assert lc.state == S.STOPPED and not lc.adding and lc.add_error is None
    (persist,) = of(effects, t.Persist)
    assert persist.entry.desired_state == "stopped" and not of(effects, t.Spawn)


def test_a_failed_add_tells_its_whole_story() -> None:
    lc = adding()
    seen = states(feed(lc, t.Fetched("abc")))
    error = IochostError(ErrorCode.VALIDATION_FAILED, "plugin 'p' failed validation with 1 error(s)")
    effects = feed(lc, t.PrepareFailed(error))
    seen += states(effects)
    assert of(effects, t.Teardown)
    seen += states(feed(lc, t.TornDown()))
    assert seen == ["validating", "failed", "deleted"]
    assert lc.add_error is error and "failed validation" in (lc.last_error or "")


def test_a_start_that_never_completes_is_a_failure_with_backoff() -> None:
    lc = starting()
    effects = feed(lc, t.Spawned(lc.gen, 100))
    assert of(effects, t.Later) == [t.Later(60.0, t.StartOverdue(lc.gen))]
    worker(lc, m.Ready(pid=100, pvs=["IOCHOST:P:STATUS"]))
    worker(lc, m.Heartbeat(busy_in="initialize", busy_for=30.0))
    assert lc.state == S.STARTING and lc.degraded  # PVs are up, but it is not running
    (kill,) = of(feed(lc, t.StartOverdue(lc.gen)), t.Kill)
    assert "initialize() still running" in kill.reason
    effects = exited(lc, -9)
    assert lc.state == S.CRASHED and "initialize()" in (lc.last_error or "") and of(effects, t.Later)


def test_an_adds_first_start_that_fails_fails_the_add_with_its_log() -> None:
    lc = adding("validating")
    feed(lc, t.Prepared(entry(), PLUGIN_DIR, []))
    feed(lc, t.Spawned(lc.gen, 100))
    feed(lc, t.StartOverdue(lc.gen))
    effects = feed(lc, t.WorkerExited(lc.gen, -9, ["Traceback ..."]))
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
    feed(lc, t.Closing())
    effects = exited(lc, -15)
    assert lc.state == S.STOPPED and not of(effects, t.Later)


def test_restart_stops_then_starts_and_enable_zero_pauses() -> None:
    lc = running()
    worker(lc, m.StatusChanged(status="PAUSED", message="Paused (ENABLE=0)"))
    assert lc.state == S.PAUSED
    feed(lc, t.RestartRequested())
    assert lc.state == S.STOPPING
    effects = exited(lc, 0)
    assert states(effects) == ["stopped", "starting"] and of(effects, t.Spawn)


# -- upgrading in place -------------------------------------------------------------------------
STAGED_DIR = Path("/data/tmp/upgrade-p/new")  # where the new revision is validated
OLD_COMMIT, NEW_COMMIT = "a" * 40, "b" * 40


def serving_at_old_commit() -> PluginLifecycle:
    lc = running()
    lc.entry = lc.entry.model_copy(update={"commit": OLD_COMMIT})
    return lc


def new_revision(lc: PluginLifecycle) -> t.Prepared:
    """A revision whose config.yaml gives its workers 45 s of grace (the old one's: 20 s)."""
    return t.Prepared(lc.entry.model_copy(update={"commit": NEW_COMMIT, "parameters": {"gain": 2}}), STAGED_DIR,
                      ["IOCHOST:P:STATUS", "IOCHOST:P:GAIN"], parameters=Parameters(grace_period=45.0))


def upgraded_and_started(lc: PluginLifecycle) -> list[t.Effect]:
    """Request, validate, stop the old worker, swap, spawn and initialize the new one."""
    effects = feed(lc, t.UpgradeRequested())
    assert of(effects, t.PrepareUpgrade) and lc.state == S.RUNNING  # the old worker serves meanwhile
    effects = feed(lc, t.UpgradePrepared(new_revision(lc)))
    assert lc.state == S.STOPPING and of(effects, t.StopWorker)
    effects = exited(lc, 0)
    assert of(effects, t.SwapRevision) == [t.SwapRevision(back=False)] and lc.state == S.STOPPED
    effects = feed(lc, t.Swapped(True, PLUGIN_DIR))  # the new revision where the old one was
    assert of(effects, t.Spawn) and lc.state == S.STARTING and lc.plugin_dir == PLUGIN_DIR
    feed(lc, t.Spawned(lc.gen, 200))
    worker(lc, m.Ready(pid=200, pvs=new_revision(lc).pvs))
    return worker(lc, m.Initialized())

