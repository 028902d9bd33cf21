"""The lifecycle's state is its whole state: every combination the six flags (registered,
adding, delete_requested, restart_requested, closing, stopped_while_adding) and the upgrade's
phase string used to encode, as a named ``Admission``, ``Intent`` and ``UpgradePhase``, driven
by events and checked by value; any order of events stays inside the table's rows; the named
state sets; time handed in with each event (pure: no processes).
"""

from __future__ import annotations

import random

import pytest

from iochost.contract import messages as m
from iochost.errors import ErrorCode, IochostError
from iochost.supervisor import lifecycle_types as t
from iochost.supervisor.lifecycle import PluginLifecycle
from iochost.supervisor.lifecycle_state import Admission, Intent, UpgradePhase
from iochost.supervisor.states import State
from test_lifecycle import (
    EPOCH,
    PLUGIN_DIR,
    adding,
    at,
    entry,
    exited,
    feed,
    fresh,
    new_revision,
    of,
    running,
    serving_at_old_commit,
    states,
    upgraded_and_started,
    worker,
)

S, A, P = State, Admission, UpgradePhase


def test_the_stronger_intent_stands() -> None:
    none, stop, restart, close, delete = (Intent.NONE, Intent.STOP_AFTER_ADD, Intent.RESTART, Intent.CLOSE,
                                          Intent.DELETE)
    assert none.stronger(restart) is restart and restart.stronger(none) is restart
    assert restart.stronger(close) is close and close.stronger(restart) is close
    assert close.stronger(delete) is delete and delete.stronger(close) is delete
    assert delete.stronger(stop) is delete and stop.stronger(delete) is delete


# -- how far it is in ---------------------------------------------------------------------------------
def test_an_add_goes_new_adding_first_start_registered() -> None:
    lc = fresh()
    seen = [lc.admission]
    feed(lc, t.AddRequested())
    seen.append(lc.admission)
    feed(lc, t.Prepared(entry(), PLUGIN_DIR, []))
    seen.append(lc.admission)
    feed(lc, t.Spawned(lc.gen, 100))
    worker(lc, m.Initialized())
    seen.append(lc.admission)
    assert seen == [A.NEW, A.ADDING, A.FIRST_START, A.REGISTERED]
    assert (lc.registered, lc.adding, lc.view().listed) == (True, False, True)


def test_an_add_not_meant_to_run_is_registered_at_once() -> None:
    lc = fresh(desired="stopped")
    feed(lc, t.AddRequested())
    assert (lc.registered, lc.adding, lc.view().listed) == (False, True, False)
    feed(lc, t.Prepared(entry(desired="stopped"), PLUGIN_DIR, []))
    assert (lc.state, lc.admission, lc.transitions[-1].reason) == (S.STOPPED, A.REGISTERED, "auto_start is false")


def test_a_restore_is_registered_from_its_request() -> None:
    lc = fresh()
    feed(lc, t.RestoreRequested())
    assert lc.admission is A.REGISTERED and not lc.adding


def test_stop_during_the_adds_first_start_ends_the_add_stopped() -> None:
    lc = adding("validating")
    feed(lc, t.Prepared(entry(), PLUGIN_DIR, []))
    feed(lc, t.Spawned(lc.gen, 100))
    feed(lc, t.StopRequested())
    assert (lc.state, lc.admission) == (S.STOPPING, A.FIRST_START)
    exited(lc, 0)
    assert (lc.state, lc.admission, lc.intent, lc.add_error) == (S.STOPPED, A.REGISTERED, Intent.NONE, None)


@pytest.mark.parametrize("request_", [t.StartRequested(), t.RestartRequested(), t.UpgradeRequested()],
                         ids=lambda event: type(event).__name__)
def test_a_failed_add_being_torn_down_takes_no_start_restart_or_upgrade(request_: t.Event) -> None:
    lc = adding()
    feed(lc, t.PrepareFailed(IochostError(ErrorCode.VALIDATION_FAILED, "bad")))
    assert (lc.state, lc.admission) == (S.FAILED, A.ADDING)  # its Teardown is under way
    assert lc.refusal(request_) is not None
    with pytest.raises(IochostError) as refused:
        feed(lc, request_)
    assert refused.value.code == ErrorCode.INVALID_STATE and lc.state == S.FAILED and lc.plugin_dir is None


# -- what was asked and is not done yet --------------------------------------------------------------
@pytest.mark.parametrize("step", ["fetching", "validating"])
def test_stop_during_an_add_is_remembered_until_it_ends_stopped(step: str) -> None:
    lc = adding(step)
    feed(lc, t.StopRequested())
    assert (lc.state.value, lc.admission, lc.intent) == (step, A.ADDING, Intent.STOP_AFTER_ADD)
    effects = feed(lc, t.Prepared(entry(), PLUGIN_DIR, []))
    assert (lc.state, lc.admission, lc.intent) == (S.STOPPED, A.REGISTERED, Intent.NONE)
    assert lc.transitions[-1].reason == "stop requested" and not of(effects, t.Spawn)


def test_delete_during_fetch_wins_over_a_stop_asked_before_or_after() -> None:
    for first, then in ((t.DeleteRequested(), t.StopRequested()), (t.StopRequested(), t.DeleteRequested())):
        lc = adding("fetching")
        feed(lc, first)
        feed(lc, then)
        assert (lc.state, lc.admission, lc.intent) == (S.FETCHING, A.ADDING, Intent.DELETE)
        effects = feed(lc, t.Prepared(entry(), PLUGIN_DIR, []))
        assert of(effects, t.Teardown) and not of(effects, t.Persist) and lc.admission is A.ADDING
        assert states(feed(lc, t.TornDown())) == ["deleted"]
        assert lc.transitions[-1].reason == "deleted while being added"


def test_restart_while_stopping_starts_a_new_worker_once_the_old_one_exits() -> None:
    lc = running()
    feed(lc, t.RestartRequested())
    assert (lc.state, lc.intent, lc.restart_requested) == (S.STOPPING, Intent.RESTART, True)
    effects = exited(lc, 0)
    assert states(effects) == ["stopped", "starting"] and of(effects, t.Spawn) and lc.intent is Intent.NONE


def test_a_stop_while_a_restart_stops_the_worker_cancels_the_restart() -> None:
    lc = running()
    feed(lc, t.RestartRequested())
    feed(lc, t.StopRequested())
    assert (lc.state, lc.intent) == (S.STOPPING, Intent.NONE)
    effects = exited(lc, 0)
    assert states(effects) == ["stopped"] and not of(effects, t.Spawn)


@pytest.mark.parametrize("order", ["restart_then_close", "close_then_restart"])
def test_the_daemons_shutdown_ends_a_restart_whichever_came_first(order: str) -> None:
    lc = running()
    for event in ((t.RestartRequested(), t.Closing()) if order == "restart_then_close"
                  else (t.Closing(), t.RestartRequested())):
        feed(lc, event)
    assert (lc.state, lc.intent, lc.closing, lc.restart_requested) == (S.STOPPING, Intent.CLOSE, True, False)
    effects = exited(lc, 0)
    assert states(effects) == ["stopped"] and not of(effects, t.Spawn)


def test_an_unasked_exit_while_the_daemon_shuts_down_is_no_crash() -> None:
    lc = running()
    feed(lc, t.Closing())
    effects = exited(lc, 1)
    assert lc.state == S.STOPPED and not of(effects, t.Later) and lc.restarts == 0


def test_delete_while_the_daemon_shuts_down_still_tears_down() -> None:
    lc = running()
    feed(lc, t.Closing())
    feed(lc, t.DeleteRequested())
    assert (lc.intent, lc.delete_requested, lc.closing) == (Intent.DELETE, True, False)
    assert of(exited(lc, 0), t.Teardown)


# -- each upgrade phase, and what interrupts it -------------------------------------------------------
def upgrading_at(phase: UpgradePhase) -> PluginLifecycle:
    lc = serving_at_old_commit()
    if phase in (P.PROBATION, P.KEEPING, P.ROLLING_BACK, P.RESTARTING_OLD):
        upgraded_and_started(lc)
        if phase is P.KEEPING:
            feed(lc, t.ProbationOver(lc.gen))
        elif phase in (P.ROLLING_BACK, P.RESTARTING_OLD):
            exited(lc, 1)
            if phase is P.RESTARTING_OLD:
                feed(lc, t.Swapped(True, PLUGIN_DIR))
                feed(lc, t.Spawned(lc.gen, 300))
    else:
        feed(lc, t.UpgradeRequested())
        if phase is not P.PREPARING:
            feed(lc, t.UpgradePrepared(new_revision(lc)))
        if phase is P.STARTING:
            exited(lc, 0)
            feed(lc, t.Swapped(True, PLUGIN_DIR))
            feed(lc, t.Spawned(lc.gen, 200))
    assert lc.upgrade is not None and lc.upgrade.phase is phase
    return lc


# The state each phase holds the plugin in (its worker: the old one, none, or the new one).
PHASE_STATES = {P.PREPARING: S.RUNNING, P.SWITCHING: S.STOPPING, P.STARTING: S.STARTING, P.PROBATION: S.RUNNING,
                P.KEEPING: S.RUNNING, P.ROLLING_BACK: S.FAILED, P.RESTARTING_OLD: S.STARTING}


@pytest.mark.parametrize("phase", list(UpgradePhase), ids=lambda phase: phase.value)
def test_each_upgrade_phase_holds_its_state(phase: UpgradePhase) -> None:
    assert upgrading_at(phase).state == PHASE_STATES[phase]


@pytest.mark.parametrize("phase", list(UpgradePhase), ids=lambda phase: phase.value)
def test_a_delete_ends_the_upgrade_in_any_phase_and_drops_what_it_staged(phase: UpgradePhase) -> None:
    lc = upgrading_at(phase)
    effects = feed(lc, t.DeleteRequested())
    assert lc.upgrade is None and lc.intent is Intent.DELETE
    assert lc.upgrade_outcome is not None and "deleted" in lc.upgrade_outcome.message
    # a preparing upgrade's own thread removes its areas when it returns
    assert bool(of(effects, t.DropStaged)) == (phase is not P.PREPARING)
    assert [update.phase for update in of(effects, t.UpgradeUpdate)] == ["failed"]


@pytest.mark.parametrize("phase", list(UpgradePhase), ids=lambda phase: phase.value)
def test_the_daemons_shutdown_ends_the_upgrade_in_any_phase_and_leaves_its_areas(phase: UpgradePhase) -> None:
    lc = upgrading_at(phase)
    effects = feed(lc, t.Closing())
    assert lc.upgrade is None and lc.intent is Intent.CLOSE and not of(effects, t.DropStaged)
    assert lc.upgrade_outcome is not None and "shut down" in lc.upgrade_outcome.message
    if lc.state in (S.RUNNING, S.STARTING):  # its worker stops and nothing restarts
        feed(lc, t.StopRequested(keep_desired=True))
    if lc.state == S.STOPPING:
        effects = exited(lc, 0)
        assert lc.state == S.STOPPED and not of(effects, t.Spawn) and not of(effects, t.SwapRevision)


# What an unasked exit of the phase's worker leads to: (state, phase after, an effect it emits).
EXIT_OUTCOMES = {
    P.PREPARING: (S.CRASHED, P.PREPARING, t.Later),  # the old worker crashed: restarted as ever
    P.SWITCHING: (S.STOPPED, P.SWITCHING, t.SwapRevision),  # stopping anyway: the swap goes on
    P.STARTING: (S.FAILED, P.ROLLING_BACK, t.SwapRevision),
    P.PROBATION: (S.FAILED, P.ROLLING_BACK, t.SwapRevision),
    P.KEEPING: (S.CRASHED, P.KEEPING, t.Later),  # kept: the new revision crashes like any
    P.RESTARTING_OLD: (S.CRASHED, None, t.Later),  # the previous revision did not come back either
}


@pytest.mark.parametrize("phase", list(EXIT_OUTCOMES), ids=lambda phase: phase.value)
def test_an_unasked_exit_in_each_upgrade_phase(phase: UpgradePhase) -> None:
    lc = upgrading_at(phase)
    state, after, effect = EXIT_OUTCOMES[phase]
    effects = exited(lc, 1)
    assert lc.state == state and (lc.upgrade.phase if lc.upgrade else None) is after and of(effects, effect)
    if after is None:
        assert lc.upgrade_outcome is not None and "rolled back" in lc.upgrade_outcome.message


def test_an_upgrade_phase_with_no_worker_takes_no_exit() -> None:
    lc = upgrading_at(P.ROLLING_BACK)
    assert exited(lc, 1) == [] and lc.upgrade is not None and lc.upgrade.phase is P.ROLLING_BACK


# -- any order of events -----------------------------------------------------------------------------
# What the supervisor feeds: the requests, the shutdown (Closing, then a stop that keeps the
# desired state) and the watchdog's tick.
REQUESTS: list[list[t.Event]] = [
    [t.StartRequested()], [t.StopRequested()], [t.RestartRequested()], [t.DeleteRequested()],
    [t.UpgradeRequested()], [t.Closing(), t.StopRequested(keep_desired=True)], [t.RunRequested("r1", {})],
    [t.CancelRequested("r1")], [t.Tick()],
]
MESSAGES: list[m.Message] = [
    m.Ready(pid=100, pvs=["IOCHOST:P:STATUS"]), m.Initialized(), m.Initialized(ok=False, exception="KeyError"),
    m.StatusChanged(status="PAUSED"), m.StatusChanged(status="RUN"), m.StatusChanged(status="ERROR"),
    m.Heartbeat(busy_in="execute", busy_for=100.0), m.Fatal(message="cannot load"),
    m.RunAccepted(run_id="r1", origin="api"), m.RunFinished(run_id="r1", outcome="succeeded", result={}),
]


def answers(lc: PluginLifecycle, effect: t.Effect, rng: random.Random) -> list[t.Event]:
    """What the shell may answer to ``effect``, one of its outcomes picked at random."""
    failed = IochostError(ErrorCode.VALIDATION_FAILED, "bad")
    if isinstance(effect, t.Later):
        return [effect.event]
    if isinstance(effect, t.Prepare):
        return rng.choice([[t.Fetched("abc"), t.Prepared(entry(), PLUGIN_DIR, [])], [t.PrepareFailed(failed)]])
    if isinstance(effect, t.Restore):
        return [rng.choice([t.Restored(PLUGIN_DIR), t.RestoreFailed("gone")])]
    if isinstance(effect, t.Spawn):
        fault = rng.choice([None, ErrorCode.LAUNCHER_UNAVAILABLE])
        return [rng.choice([t.Spawned(effect.gen, 100), t.SpawnFailed(effect.gen, "EMFILE", fault)])]
    if isinstance(effect, (t.StopWorker, t.Kill)):
        return [t.WorkerExited(effect.gen, 0)]
    if isinstance(effect, t.Teardown):
        return [t.TornDown()]
    if isinstance(effect, t.PrepareUpgrade):
        return [rng.choice([t.UpgradePrepared(new_revision(lc)), t.UpgradePrepared(None),
                            t.UpgradePrepareFailed(failed)])]
    if isinstance(effect, t.SwapRevision):
        return [rng.choice([t.Swapped(True, PLUGIN_DIR), t.Swapped(True, PLUGIN_DIR), t.Swapped(False, reason="x")])]
    if isinstance(effect, t.DropStaged):
        return [t.Dropped()]
    return []


@pytest.mark.parametrize("seed", range(4))
def test_any_order_the_shell_may_answer_in_keeps_every_move_inside_its_table_row(seed: int) -> None:
    """Requests, worker messages, unasked exits and the shell's answers to the effects (in any
    order, late ones included): no handler moves to a state its row does not list
    (``IllegalTransition`` is raised), and the typed state stays consistent with the state."""
    rng = random.Random(seed)
    for walk in range(150):
        lc, pending = fresh(rng.choice(["task", "job"])), list[t.Event]()
        for effect in feed(lc, rng.choice([t.AddRequested(), t.RestoreRequested()])):
            pending += answers(lc, effect, rng)
        for step in range(60):
            roll = rng.random()
            if pending and roll < 0.5:
                events = [pending.pop(rng.randrange(len(pending)))]
            elif roll < 0.7:
                events = rng.choice(REQUESTS)
            elif roll < 0.95 or lc.pid is None:
                events = [t.FromWorker(lc.gen, rng.choice(MESSAGES))]
            else:
                events = [t.WorkerExited(lc.gen, rng.choice([1, -9]))]  # unasked
            for event in events:
                try:
                    effects = feed(lc, event, now=float(step))
                except IochostError:
                    continue  # a request the state refuses
                for effect in effects:
                    pending += answers(lc, effect, rng)
            assert lc.admission is not A.ADDING or lc.plugin_dir is None, (walk, step)  # nothing in place yet
            assert lc.upgrade is None or lc.admission is A.REGISTERED, (walk, step)
            assert (lc.upgrade is not None and lc.upgrade.phase is P.ROLLING_BACK) <= (lc.state == S.FAILED)
            if lc.state == S.DELETED:
                break


# -- the state sets, and time ----------------------------------------------------------------------
def test_the_state_sets_partition_the_states_as_their_names_say() -> None:
    from iochost.supervisor.states import ADDING, IDLE, LISTED, LIVE, SETTLED, UNSETTLED, UP

    assert ADDING | LIVE | IDLE | {S.DELETED} == set(State)  # every state is in exactly one of these
    assert not ADDING & LIVE and not LIVE & IDLE and not ADDING & IDLE
    assert UP < LIVE and LIVE - UP == {S.STARTING, S.STOPPING}
    assert SETTLED == UP | IDLE | {S.DELETED} and UNSETTLED < ADDING | LIVE
    assert list(LISTED) == [state for state in State if state != S.DELETED]  # /health and /metrics count these


def test_time_comes_in_with_each_event_and_the_lifecycle_reads_no_clock() -> None:
    """Every time the lifecycle records is the one it was handed: transitions, the start, runs,
    the entry's update, the backoff's uptime."""
    lc = fresh("job")
    assert lc.transitions[0].at == EPOCH  # made at at(0)
    feed(lc, t.RestoreRequested(), 1.0)
    feed(lc, t.Restored(PLUGIN_DIR), 2.0)
    feed(lc, t.Spawned(lc.gen, 100), 3.0)
    worker(lc, m.Initialized(), now=4.0)
    assert [transition.at for transition in lc.transitions] == [EPOCH, at(2.0).wall, at(4.0).wall]
    assert (lc.started_at, lc.started_mono) == (at(4.0).wall, 4.0)
    (update,) = of(worker(lc, m.RunAccepted(run_id="r1", origin="epics"), now=5.0), t.RunUpdate)
    assert update.run.started_at == at(5.0).wall
    feed(lc, t.StopRequested(), 6.0)
    assert lc.entry.updated_at == at(6.0).wall
