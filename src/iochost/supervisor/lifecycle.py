"""One plugin's lifecycle as a sans-I/O state machine: events in, effects out.

Everything the daemon knows about a plugin's state (``plugin_state.PluginState``) changes
only in ``handle``: no processes, sockets, timers, files or clocks (the shell does those,
reports back with events and says when each is handled), so every transition is unit-tested
by feeding events (tests/test_lifecycle.py). ``TABLE`` below is the one transition table:
(state, event) -> handler and the states the handler may move to; an event a state does not
list is dropped (from a worker or a timer) or refused (a request: INVALID_STATE).
docs/reference/lifecycle.md is drawn from it (``python -m iochost.supervisor.lifecycle_doc``).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from iochost.contract import messages as m
from iochost.errors import ErrorCode, IochostError
from iochost.store import DESIRED_RUNNING, DESIRED_STOPPED
from iochost.supervisor import lifecycle_types as t
from iochost.supervisor import upgrade as u
from iochost.supervisor import view as v
from iochost.supervisor import worker_events as w
from iochost.supervisor.lifecycle_state import Admission, Intent
from iochost.supervisor.plugin_state import PluginState
from iochost.supervisor.public import PluginRecord, Trouble
from iochost.supervisor.states import ADDING, IDLE, LIVE, UP, State

log = logging.getLogger("iochost.supervisor")

S = State


class IllegalTransition(RuntimeError):
    """A bug, not a user error: a handler moved to a state its table row does not allow."""


# Requests that start a worker or a revision: an upgrade in progress refuses them (it decides
# when the worker stops and starts), and so does an add that failed (it is being torn down).
_STARTS = (t.StartRequested, t.RestartRequested, t.UpgradeRequested)


class PluginLifecycle(PluginState):
    """The state of one plugin (``PluginState``) and the rules that change it: ``handle``
    feeds each event to the handler ``TABLE`` names for the state it finds."""

    _shown: v.PluginView | None = None  # the view made after the last event (``view``)
    _shown_version = -1

    # -- the one entry point -----------------------------------------------------------------
    def handle(self, event: t.Event, now: t.Now) -> list[t.Effect]:
        """Apply one event that happened at ``now``; the effects the shell must carry out, in order."""
        self._version += 1  # whatever the event changes, the view made before it is old
        self.now = now
        gen = getattr(event, "gen", None)
        if gen is not None and gen != self.gen:
            return []  # from a worker (or a timer of one) that has been replaced
        key = type(event.message) if isinstance(event, t.FromWorker) else type(event)
        row = TABLE.get((self.state, key))
        refused = self.refusal(event)
        if refused is not None:
            raise refused
        if row is None:
            if isinstance(event, t.FromWorker):
                w.message_anywhere(self, event)
            return self._flush()
        handler, targets = row
        before = self.state
        handler(self, event)
        if self.state != before and self.state not in targets:
            raise IllegalTransition(f"{key.__name__} moved {self.name} {before.value} -> {self.state.value}")
        return self._flush()

    def refusal(self, event: t.Event) -> IochostError | None:
        """The INVALID_STATE ``handle`` would raise for this request now, or None: the
        supervisor asks before it saves what the request changes."""
        if self.upgrade is not None and (isinstance(event, _STARTS)
                                         or isinstance(event, t.StopRequested) and not event.keep_desired):
            return IochostError(ErrorCode.INVALID_STATE, f"{self.name!r} is being upgraded; "
                                f"cannot {_verb(event)} it now")
        if self.admission.adding and self.state in IDLE and isinstance(event, _STARTS):
            return IochostError(ErrorCode.INVALID_STATE, f"{self.name!r} failed to be added and is being removed; "
                                f"cannot {_verb(event)} it")
        if isinstance(event, t.REQUESTS) and (self.state, type(event)) not in TABLE:
            return IochostError(ErrorCode.INVALID_STATE, f"{self.name!r} is {self.state.value}; "
                                f"cannot {_verb(event)} it now")
        return None

    # -- what readers see ------------------------------------------------------------------------
    def view(self) -> v.PluginView:
        """The plugin as readers outside the supervisor see it: frozen, and the same object
        until the next event, since ``handle`` is the only way anything in it changes."""
        if self._shown is None or self._shown_version != self._version:
            self._shown, self._shown_version = v.view(self), self._version
        return self._shown

    def record(self) -> PluginRecord:
        """The plugin as the API shows it (dashboards poll the list: the same object until the next event)."""
        return self.view().record

    @property
    def trouble(self) -> Trouble | None:
        """Why /health names this plugin, or None (``view.trouble``)."""
        return v.trouble(self)

    @property
    def degraded(self) -> bool:
        """The daemon is ``degraded`` while any plugin is (``trouble`` says why)."""
        return self.trouble is not None

    # -- adding, restoring, deleting ---------------------------------------------------------
    def _add(self, event: t.AddRequested) -> None:
        self.admission = Admission.ADDING
        source = self.entry.source
        self.move(S.FETCHING, source.git_url or source.local_path or "")
        self.emit(t.Prepare())

    def _fetched(self, event: t.Fetched) -> None:
        self.move(S.VALIDATING, f"commit {event.commit}" if event.commit else "local")

    def _prepared(self, event: t.Prepared) -> None:
        if self.intent is Intent.DELETE:
            self.add_error = _cancelled(self.name)
            self.emit(t.Teardown())
            return
        desired = self.entry.desired_state  # a stop during the add has set it
        self.entry = event.entry.model_copy(update={"desired_state": desired})
        self.plugin_dir, self.pvs, self.admission = event.plugin_dir, event.pvs, Admission.FIRST_START
        self.parameters = event.parameters
        self.learn_pv_prefix(event.pv_prefix)
        self.emit(t.Persist(self.entry))
        if desired == DESIRED_RUNNING:
            self.spawn("")
            return
        self.admission = Admission.REGISTERED
        stopped = self.intent is Intent.STOP_AFTER_ADD
        if stopped:
            self.intent = Intent.NONE
        self.move(S.STOPPED, "stop requested" if stopped else "auto_start is false")

    def _prepare_failed(self, event: t.PrepareFailed) -> None:
        self.add_error = _cancelled(self.name) if self.intent is Intent.DELETE else event.error
        self.move(S.FAILED, self.add_error.message)
        self.emit(t.Teardown())

    def _restore(self, event: t.RestoreRequested) -> None:
        self.admission = Admission.REGISTERED
        self.emit(t.Restore())

    def _restored(self, event: t.Restored) -> None:
        self.plugin_dir, self.parameters = event.plugin_dir, event.parameters
        self.learn_pv_prefix(event.pv_prefix)
        if self.intent is Intent.STOP_AFTER_ADD:  # the desired state says it already
            self.intent = Intent.NONE
        if self.intent is Intent.DELETE:
            self.emit(t.Teardown())
        elif self.entry.desired_state == DESIRED_STOPPED:
            self.move(S.STOPPED, "restored; desired state stopped")
        else:
            self.spawn("")

    def _restore_failed(self, event: t.RestoreFailed) -> None:
        self.move(S.FAILED, f"cannot restore: {event.reason}")
        if self.intent is Intent.DELETE:
            self.emit(t.Teardown())

    def _delete(self, event: t.DeleteRequested) -> None:
        self.want(Intent.DELETE)
        if self.state in ADDING or self.upgrade is not None:  # its clone, install or probe: ended, not waited out
            self.emit(t.EndErrands())
        if self.upgrade is not None:  # over for good; its staging areas go with it
            u.abandon(self, f"{self.name!r} was deleted during its upgrade")
        if self.state in LIVE - {S.STOPPING}:
            self.stop_worker("delete requested")
        elif self.state not in ADDING | {S.STOPPING}:
            self.emit(t.Teardown())

    def _torn_down(self, event: t.TornDown) -> None:
        adding = self.admission.adding
        if adding and self.add_error is None:
            self.add_error = _cancelled(self.name)
        deleted = adding and self.intent is Intent.DELETE
        self.move(S.DELETED, "deleted while being added" if deleted else "")
        self.emit(t.Forget())

    def _closing(self, event: t.Closing) -> None:
        self.want(Intent.CLOSE)
        if self.upgrade is not None:  # the next start's store puts the previous revision back
            u.abandon(self, f"the daemon shut down during the upgrade of {self.name!r}")

    # -- starting and stopping -----------------------------------------------------------------
    def _start(self, event: t.StartRequested | t.RestartRequested) -> None:
        self._set_desired(DESIRED_RUNNING)
        self.restarts, self.backoff = 0, None
        self.spawn("")

    def _restart(self, event: t.RestartRequested) -> None:
        self._set_desired(DESIRED_RUNNING)
        self.want(Intent.RESTART)
        self.stop_worker("restart requested")

    def _stop(self, event: t.StopRequested) -> None:
        if not event.keep_desired:
            self._set_desired(DESIRED_STOPPED)
        if self.intent is Intent.RESTART:
            self.intent = Intent.NONE
        if self.state in LIVE - {S.STOPPING}:
            self.stop_worker("stop requested")
        elif self.state in ADDING:
            self.want(Intent.STOP_AFTER_ADD)  # the add (or restore) ends stopped
        elif self.state in (S.CRASHED, S.FAILED):
            self.gen += 1  # a pending RestartDue is now stale
            self.move(S.STOPPED, "stop requested")


def _cancelled(name: str) -> IochostError:
    return IochostError(ErrorCode.ADD_CANCELLED, f"plugin {name!r} was deleted while it was being added")


def _verb(event: object) -> str:
    return type(event).__name__.removesuffix("Requested").lower()


P = PluginLifecycle
Handler = Callable[[PluginLifecycle, Any], None]
Row = tuple[Handler, frozenset[State]]
ANY = set(State) - {S.DELETED}


def _rows(states: frozenset[State] | set[State], event: type, handler: Handler,
          targets: set[State]) -> dict[tuple[State, type], Row]:
    return {(state, event): (handler, frozenset(targets)) for state in states}


# The transition table: (state, event) -> (handler, states it may move to). One row per
# (state, event) the state takes; docs/reference/lifecycle.md is drawn from it.
STOPPABLE = LIVE - {S.STOPPING}  # a worker runs (or starts) and no stop is under way
TABLE: dict[tuple[State, type], Row] = {
    **_rows({S.PENDING}, t.AddRequested, P._add, {S.FETCHING}),
    **_rows({S.FETCHING}, t.Fetched, P._fetched, {S.VALIDATING}),
    **_rows({S.FETCHING, S.VALIDATING}, t.Prepared, P._prepared, {S.STARTING, S.STOPPED}),
    **_rows({S.FETCHING, S.VALIDATING}, t.PrepareFailed, P._prepare_failed, {S.FAILED}),
    **_rows({S.PENDING}, t.RestoreRequested, P._restore, set()),
    **_rows({S.PENDING}, t.Restored, P._restored, {S.STARTING, S.STOPPED}),
    **_rows({S.PENDING}, t.RestoreFailed, P._restore_failed, {S.FAILED}),
    **_rows(IDLE, t.StartRequested, P._start, {S.STARTING}),
    **_rows(IDLE, t.RestartRequested, P._start, {S.STARTING}),
    **_rows(STOPPABLE, t.RestartRequested, P._restart, {S.STOPPING}),
    **_rows(ADDING | {S.STOPPING, S.STOPPED}, t.StopRequested, P._stop, set()),
    **_rows(STOPPABLE, t.StopRequested, P._stop, {S.STOPPING}),
    **_rows({S.CRASHED, S.FAILED}, t.StopRequested, P._stop, {S.STOPPED}),
    **_rows(ANY - STOPPABLE, t.DeleteRequested, P._delete, set()),
    **_rows(STOPPABLE, t.DeleteRequested, P._delete, {S.STOPPING}),
    **_rows(ANY, t.TornDown, P._torn_down, {S.DELETED}),
    **_rows(ANY, t.Closing, P._closing, set()),
    **_rows({S.STARTING, S.STOPPING}, t.Spawned, w.spawned, set()),
    **_rows({S.STARTING}, t.SpawnFailed, w.spawn_failed, {S.FAILED, S.CRASHED}),
    **_rows({S.STOPPING}, t.SpawnFailed, w.spawn_failed, {S.STOPPED, S.STARTING}),
    **_rows({S.STARTING}, m.Ready, w.ready, set()),
    **_rows({S.STARTING}, m.Initialized, w.initialized, {S.RUNNING, S.PAUSED}),
    **_rows({S.STARTING, S.STOPPING}, m.StatusChanged, w.status_changed, set()),
    **_rows({S.RUNNING}, m.StatusChanged, w.status_changed, {S.PAUSED}),
    **_rows({S.PAUSED}, m.StatusChanged, w.status_changed, {S.RUNNING}),
    **_rows({S.STARTING}, t.StartOverdue, w.start_overdue, set()),
    **_rows({S.STOPPING}, t.StopOverdue, w.stop_overdue, set()),
    **_rows(UP, t.Tick, w.tick, set()),
    **_rows(STOPPABLE, t.WorkerExited, w.exited, {S.STOPPED, S.CRASHED, S.FAILED}),
    **_rows({S.STOPPING}, t.WorkerExited, w.exited, {S.STOPPED, S.STARTING}),
    **_rows({S.CRASHED}, t.RestartDue, w.restart_due, {S.STARTING}),
    **_rows({S.RUNNING}, t.RunRequested, w.run, set()),
    **_rows(UP, t.CancelRequested, w.cancel, set()),
    **_rows(LIVE, t.CancelOverdue, w.cancel_overdue, set()),
    **_rows(UP | IDLE, t.UpgradeRequested, u.requested, set()),
    **_rows(ANY - STOPPABLE, t.UpgradePrepared, u.prepared, set()),
    **_rows(STOPPABLE, t.UpgradePrepared, u.prepared, {S.STOPPING}),
    **_rows(ANY, t.UpgradePrepareFailed, u.prepare_failed, set()),
    **_rows(IDLE, t.Swapped, u.swapped, {S.STARTING}),
    **_rows(UP, t.ProbationOver, u.probation_over, set()),
    **_rows(ANY, t.Dropped, u.dropped, set()),
}
