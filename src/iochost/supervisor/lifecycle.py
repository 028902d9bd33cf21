"""One plugin's lifecycle as a sans-I/O state machine: events in, effects out.

Everything the daemon knows about a plugin's state lives here and changes only in
``handle``: no processes, sockets, timers or files (the shell does those and reports back
with events), so every transition is unit-tested by feeding events (tests/test_lifecycle.py).
``TABLE`` below is the one transition table: (state, event) -> handler and the states the
handler may move to; an event a state does not list is dropped (from a worker or a timer)
or refused (a request: INVALID_STATE).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, get_args

from iochost.config.limits import WorkerLimits
from iochost.contract import messages as m
from iochost.contract.exits import describe_exit
from iochost.errors import ErrorCode, IochostError
from iochost.sdk.status import JobStatus, TaskStatus
from iochost.store import RegistryEntry
from iochost.supervisor import lifecycle_types as t
from iochost.supervisor.models import PluginRecord, SourceInfo, Transition, Trouble
from iochost.supervisor.runs import RunLedger
from iochost.supervisor.states import LIVE, State

log = logging.getLogger("iochost.supervisor")

S = State
TRANSITIONS_KEPT = 50
ERROR_STATUSES = frozenset({TaskStatus.ERROR.name, JobStatus.FAILED.name})  # STATUS of a plugin in error
TROUBLES: tuple[Trouble, ...] = get_args(Trouble)  # every reason /health may name a plugin for
ADDING = frozenset({S.PENDING, S.FETCHING, S.VALIDATING})
UP = frozenset({S.RUNNING, S.PAUSED})


def _now() -> datetime:
    return datetime.now(timezone.utc)


class IllegalTransition(RuntimeError):
    """A bug, not a user error: a handler moved to a state its table row does not allow."""


# Requests an upgrade in progress refuses: it decides when the worker stops and starts.
_NOT_WHILE_UPGRADING = (t.StartRequested, t.RestartRequested, t.UpgradeRequested)


@dataclass
class Upgrade:
    """An upgrade in progress: the revision it replaces (to roll back to) and where it is.

    phase: preparing (the old worker serves while the new revision is staged and
    validated) -> switching (the old worker stops, the new revision is swapped in) ->
    starting -> probation (the new worker runs; exiting now rolls back) -> keeping (the
    previous revision is dropped) -> done; or rolling_back (the previous revision is
    swapped back) -> restarting_old -> done.
    """

    old_entry: RegistryEntry
    old_pvs: list[str]
    old_pv_prefix: str = ""
    phase: str = "preparing"
    new: t.Prepared | None = None
    resume: bool = True  # start the new revision (the plugin is meant to run)
    error: IochostError | None = None  # why it is rolling back


class PluginLifecycle:
    """The state of one plugin and the rules that change it."""

    def __init__(self, entry: RegistryEntry, pv_prefix: str, timings: t.Timings, runs_kept: int,
                 plugin_dir: Path | None = None) -> None:
        self.entry = entry
        self.pv_prefix = pv_prefix
        self.pv_prefix_known = False  # read from its config.yaml (add, upgrade, restore): PV clashes compare these
        self.timings = timings
        self.plugin_dir = plugin_dir
        self.state = S.PENDING
        self.transitions: deque[Transition] = deque(maxlen=TRANSITIONS_KEPT)
        self._version = 0  # events handled: ``record()`` is rebuilt only after one
        self._shown: PluginRecord | None = None
        self._shown_version = -1
        self.runs = RunLedger(entry.name, runs_kept)
        self.registered = False  # the registry holds it (after an add's validation, or restored)
        self.adding = False  # an add is in progress: its failure removes the plugin
        self.add_error: IochostError | None = None  # why the add failed, for its caller
        self.delete_requested = False
        self.restart_requested = False
        self.closing = False
        self.stopped_while_adding = False
        self.upgrade: Upgrade | None = None
        self.upgrade_outcome: IochostError | None = None  # how the last upgrade ended, for its caller
        self.gen = 0  # spawn counter: events of an older worker are stale
        self.pid: int | None = None
        self.limits: WorkerLimits | None = None
        self.pvs: list[str] = []
        self.status: str | None = None
        self.message: str | None = None
        self.restarts = 0  # crashes in a row: the backoff's count, reset by an operator's start
        self.restarts_total = 0  # automatic restarts ever, never reset (a Prometheus counter reads it)
        self.backoff: float | None = None
        self.started_at: datetime | None = None
        self.started_mono: float | None = None
        self.last_error: str | None = None
        self.fatal: str | None = None  # the worker says it cannot load: no restart helps
        self.kill_reason: str | None = None  # why we killed the current worker
        self.init_failure: m.Initialized | None = None  # the current worker's initialize() raised: it exits
        self.last_heartbeat = 0.0
        self.busy_in: str | None = None
        self.busy_for: float | None = None
        self.cycles = 0  # a task's cycles as its worker's last heartbeat said; a new worker starts from 0
        self._out: list[t.Effect] = []
        self._record(None, S.PENDING, "added")

    @property
    def name(self) -> str:
        return self.entry.name

    # -- the one entry point -----------------------------------------------------------------
    def handle(self, event: t.Event) -> list[t.Effect]:
        """Apply one event; the effects the shell must carry out, in order."""
        self._version += 1  # whatever the event changes, the record made before it is old
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
                self._worker_message_anywhere(event)
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
        if self.upgrade is not None and (isinstance(event, _NOT_WHILE_UPGRADING)
                                         or isinstance(event, t.StopRequested) and not event.keep_desired):
            return IochostError(ErrorCode.INVALID_STATE, f"{self.name!r} is being upgraded; "
                                f"cannot {_verb(event)} it now")
        if isinstance(event, t.REQUESTS) and (self.state, type(event)) not in TABLE:
            return IochostError(ErrorCode.INVALID_STATE, f"{self.name!r} is {self.state.value}; "
                                f"cannot {_verb(event)} it now")
        return None

    def with_desired(self, desired: str) -> RegistryEntry:
        """The entry as a request for ``desired`` ("running" or "stopped") leaves it: what the
        supervisor saves before it feeds the request (``_set_desired`` makes the same change)."""
        if self.entry.desired_state == desired:
            return self.entry
        return self.entry.model_copy(update={"desired_state": desired, "updated_at": _now()})

    def _flush(self) -> list[t.Effect]:
        out, self._out = self._out, []
        return out

    def _emit(self, *effects: t.Effect) -> None:
        self._out.extend(effects)

    def _move(self, new: State, reason: str = "") -> None:
        old, self.state = self.state, new
        if new in (S.FAILED, S.CRASHED) and reason:
            self.last_error = reason
        self._record(old, new, reason)

    def _record(self, old: State | None, new: State, reason: str) -> None:
        transition = Transition(at=_now(), from_state=old, to_state=new, reason=reason)
        self.transitions.append(transition)
        self._emit(t.Transitioned(transition))

    # -- adding, restoring, deleting ---------------------------------------------------------
    def _add(self, event: t.AddRequested) -> None:
        self.adding = True
        source = self.entry.source
        self._move(S.FETCHING, source.git_url or source.local_path or "")
        self._emit(t.Prepare())

    def _fetched(self, event: t.Fetched) -> None:
        self._move(S.VALIDATING, f"commit {event.commit}" if event.commit else "local")

    def _prepared(self, event: t.Prepared) -> None:
        if self.delete_requested:
            self.add_error = _cancelled(self.name)
            self._emit(t.Teardown())
            return
        desired = self.entry.desired_state  # a stop during the add has set it
        self.entry = event.entry.model_copy(update={"desired_state": desired})
        self.plugin_dir, self.pvs, self.registered = event.plugin_dir, event.pvs, True
        self._learn_pv_prefix(event.pv_prefix)
        self._emit(t.Persist(self.entry))
        if desired == "running":
            self._spawn("")
        else:
            self.adding = False
            self._move(S.STOPPED, "stop requested" if self.stopped_while_adding else "auto_start is false")

    def _prepare_failed(self, event: t.PrepareFailed) -> None:
        self.add_error = _cancelled(self.name) if self.delete_requested else event.error
        self._move(S.FAILED, self.add_error.message)
        self._emit(t.Teardown())

    def _restore(self, event: t.RestoreRequested) -> None:
        self.registered = True
        self._emit(t.Restore())

    def _learn_pv_prefix(self, pv_prefix: str | None) -> None:
        if pv_prefix:
            self.pv_prefix, self.pv_prefix_known = pv_prefix, True

    def _restored(self, event: t.Restored) -> None:
        self.plugin_dir = event.plugin_dir
        self._learn_pv_prefix(event.pv_prefix)
        if self.delete_requested:
            self._emit(t.Teardown())
        elif self.entry.desired_state == "stopped":
            self._move(S.STOPPED, "restored; desired state stopped")
        else:
            self._spawn("")

    def _restore_failed(self, event: t.RestoreFailed) -> None:
        self._move(S.FAILED, f"cannot restore: {event.reason}")
        if self.delete_requested:
            self._emit(t.Teardown())

    def _delete(self, event: t.DeleteRequested) -> None:
        self.delete_requested = True
        if self.upgrade is not None:  # over for good; its staging areas go with it
            if self.upgrade.phase != "preparing":  # (a preparing one's thread removes its own)
                self._emit(t.DropStaged())
            self._end_upgrade("failed", IochostError(ErrorCode.UPGRADE_FAILED,
                                                     f"{self.name!r} was deleted during its upgrade"))
        if self.state in LIVE - {S.STOPPING}:
            self._stop_worker("delete requested")
        elif self.state not in ADDING | {S.STOPPING}:
            self._emit(t.Teardown())

    def _torn_down(self, event: t.TornDown) -> None:
        if self.adding and self.add_error is None:
            self.add_error = _cancelled(self.name)
        self._move(S.DELETED, "deleted while being added" if self.adding and self.delete_requested else "")
        self._emit(t.Forget())

    # -- starting and stopping -----------------------------------------------------------------
    def _start(self, event: t.StartRequested | t.RestartRequested) -> None:
        self._set_desired("running")
        self.restarts, self.backoff = 0, None
        self._spawn("")

    def _restart(self, event: t.RestartRequested) -> None:
        self._set_desired("running")
        self.restart_requested = True
        self._stop_worker("restart requested")

    def _spawn(self, reason: str) -> None:
        self.gen += 1
        self.pid = self.limits = self.fatal = self.kill_reason = None  # all of the previous worker
        self.busy_in = self.busy_for = self.init_failure = None
        self.cycles = 0
        self._move(S.STARTING, reason)
        self._emit(t.Spawn(self.gen))

    def _spawned(self, event: t.Spawned) -> None:
        self.pid, self.limits = event.pid, event.limits
        if self.state == S.STOPPING:  # stopped while it was being spawned: now there is a worker to stop
            self._signal_stop()
        else:
            self._emit(t.Later(self.timings.start_timeout, t.StartOverdue(self.gen)))

    def _spawn_failed(self, event: t.SpawnFailed) -> None:
        reason = f"cannot start worker: {event.reason}"
        if self.state == S.STOPPING:  # stopped (or deleted) while it was being spawned
            self._stopped(reason)
            return
        if self._upgrade_failed(reason, {"log_tail": []}):
            return
        if event.host_fault is not None and not self.adding and not self.closing:  # the host's: retried
            self._crashed(reason, event.now)
            return
        self._move(S.FAILED, reason)
        if self.adding:  # host_fault: the daemon could not start it (no fds, processes, memory, disk)
            code = event.host_fault or ErrorCode.WORKER_START_FAILED
            self.add_error = IochostError(code, reason)
            self._emit(t.Teardown())

    def _stop(self, event: t.StopRequested) -> None:
        if not event.keep_desired:
            self._set_desired("stopped")
        self.restart_requested = False
        if self.state in LIVE - {S.STOPPING}:
            self._stop_worker("stop requested")
        elif self.state in ADDING:
            self.stopped_while_adding = True  # the add (or restore) ends stopped
        elif self.state in (S.CRASHED, S.FAILED):
            self.gen += 1  # a pending RestartDue is now stale
            self._move(S.STOPPED, "stop requested")

    def _stop_worker(self, reason: str) -> None:
        self._move(S.STOPPING, reason)
        self._emit(t.Offline())
        if self.pid is not None:  # else it is being spawned: ``_spawned`` stops it with its own grace
            self._signal_stop()

    def _signal_stop(self) -> None:
        """Stop the current worker and time it with the grace it was started with: its
        limits are known only once it is spawned (config.yaml or the request may give it
        more than the daemon's default), so no stop is timed before."""
        assert self.limits is not None
        grace = self.limits.grace_period
        self._emit(t.StopWorker(self.gen, grace),
                   t.Later(grace + self.timings.stop_margin, t.StopOverdue(self.gen)))

    def _stop_overdue(self, event: t.StopOverdue) -> None:
        assert self.limits is not None  # armed by ``_signal_stop``, with this worker's limits
        self._kill(f"cleanup() did not return within the grace period of {self.limits.grace_period:g} s")

    def _closing(self, event: t.Closing) -> None:
        self.closing = True
        if self.upgrade is not None:  # the next start's store puts the previous revision back
            self._end_upgrade("failed", IochostError(ErrorCode.UPGRADE_FAILED,
                                                     f"the daemon shut down during the upgrade of {self.name!r}"))

    def _set_desired(self, desired: str) -> None:
        if self.entry.desired_state != desired:
            self.entry = self.with_desired(desired)
            if self.registered:
                self._emit(t.Persist(self.entry))

    # -- the worker -------------------------------------------------------------------------
    def _ready(self, event: t.FromWorker) -> None:
        message = event.message
        assert isinstance(message, m.Ready)
        self.pvs, self.last_heartbeat = message.pvs, event.now
        self._emit(t.Online(message.pvs))

    def _initialized(self, event: t.FromWorker) -> None:
        message = event.message
        assert isinstance(message, m.Initialized)
        if not message.ok:  # the worker runs cleanup() and exits; that exit fails the start (``_exited``)
            self.init_failure = message
            log.error("%s: initialize() raised %s", self.name, _raised(message))
            return
        self.started_at, self.started_mono, self.last_heartbeat = _now(), event.now, event.now
        self.adding = False
        paused = self.status == "PAUSED"
        self._move(S.PAUSED if paused else S.RUNNING, f"pid {self.pid}, {len(self.pvs)} PVs")
        up = self.upgrade
        if up is not None and up.phase == "starting":
            up.phase = "probation"
            self._emit(t.Later(self.timings.probation, t.ProbationOver(self.gen)))
        elif up is not None and up.phase == "restarting_old":
            self._end_upgrade("rolled_back", up.error)

    def _status_changed(self, event: t.FromWorker) -> None:
        message = event.message
        assert isinstance(message, m.StatusChanged)
        trouble = self.trouble
        self.status, self.message = message.status, message.message  # the contract bounds them
        if message.status in ERROR_STATUSES:  # the whole text: the MESSAGE PV keeps 39 characters of it
            self.last_error = message.message or f"STATUS {message.status}"
        self._emit(t.StatusUpdate(self.status, self.message, trouble != self.trouble))
        if message.status == "PAUSED" and self.state == S.RUNNING:
            self._move(S.PAUSED, "ENABLE=0")
        elif message.status != "PAUSED" and self.state == S.PAUSED:
            self._move(S.RUNNING, "ENABLE=1")

    def _worker_message_anywhere(self, event: t.FromWorker) -> None:
        """Messages every state with a worker takes: heartbeats, fatal reports, runs."""
        message = event.message
        if isinstance(message, m.Heartbeat):
            self.last_heartbeat, self.busy_in, self.busy_for = event.now, message.busy_in, message.busy_for
            self.cycles = message.cycles
        elif isinstance(message, m.Fatal):
            self.fatal = message.message
            log.error("%s: %s", self.name, message.message)
        elif isinstance(message, (m.RunAccepted, m.RunRejected, m.RunFinished)):
            self._emit(*self.runs.on_message(message, _now()))
        elif isinstance(message, (m.Ready, m.Initialized, m.StatusChanged)):
            log.debug("%s: %s in state %s ignored", self.name, message.type, self.state.value)

    def _tick(self, event: t.Tick) -> None:
        """The watchdog: a plugin call busy too long, or a worker gone silent, is killed."""
        if self.kill_reason is not None or self.limits is None:
            return
        busy = None if self.busy_for is None else self.busy_for + (event.now - self.last_heartbeat)
        silent = event.now - self.last_heartbeat
        if busy is not None and busy > self.limits.watchdog:
            self._kill(f"watchdog: {self.busy_in}() busy for {busy:.1f} s (limit {self.limits.watchdog:g} s)")
        elif silent > self.timings.heartbeat_timeout:
            self._kill(f"no heartbeat for {silent:.1f} s")

    def _start_overdue(self, event: t.StartOverdue) -> None:
        busy = f": {self.busy_in}() still running" if self.busy_in else (
            "" if self.pvs else ": no READY from the worker")
        self._kill(f"did not start within {self.timings.start_timeout:g} s{busy}")

    def _kill(self, reason: str) -> None:
        if self.kill_reason is None:
            self.kill_reason = reason
            log.error("%s: %s; killing pid %s", self.name, reason, self.pid)
            self._emit(t.Kill(self.gen, reason))

    def _exited(self, event: t.WorkerExited) -> None:
        memory = self.limits.memory_limit_mb if self.limits else None
        failure = self.init_failure
        if failure is not None:  # what the caller of an add or upgrade reads: the plugin's traceback
            reason = f"initialize() raised {_raised(failure)}"
            details: dict[str, Any] = {"exception": {"type": failure.exception, "message": failure.message},
                                       "log_tail": failure.traceback.splitlines()}
        else:
            reason = self.kill_reason or self.fatal or describe_exit(event.code, memory)
            details = {"log_tail": event.log_tail}
        was_starting = self.state == S.STARTING
        self.pid, self.busy_in, self.busy_for = None, None, None
        self._emit(t.Offline(), *self.runs.worker_gone(f"the worker exited: {reason}", _now()))
        if self.state == S.STOPPING:
            self._stopped(f"exit code {event.code}")
        elif self._upgrade_failed(reason, details):
            pass
        elif self.adding:  # the add's first start failed: the add fails, nothing stays
            self.add_error = IochostError(ErrorCode.WORKER_START_FAILED, f"{self.name!r} did not start: {reason}",
                                          **details)
            self._move(S.FAILED, reason)
            self._emit(t.Teardown())
        elif self.closing:
            self._move(S.STOPPED, f"daemon shutting down; {reason}")
        elif self.fatal is not None:
            self._move(S.FAILED, self.fatal)  # a plugin that cannot load won't load next time
        else:
            self._crashed(reason if not was_starting else f"start failed: {reason}", event.now)

    def _stopped(self, reason: str) -> None:
        self._move(S.STOPPED, reason)
        if self.upgrade is not None and self.upgrade.phase == "switching":
            self._emit(t.SwapRevision())
        elif self.delete_requested:
            self._emit(t.Teardown())
        elif self.restart_requested and not self.closing:
            self.restart_requested = False
            self.restarts, self.backoff = 0, None
            self._spawn("restart requested")
        elif self.adding:  # stopped during the add's first start: the add ends stopped
            self.adding = False

    def _crashed(self, reason: str, now: float) -> None:
        timings = self.timings
        uptime = now - (self.started_mono if self.started_mono is not None else now)
        if self.backoff is None or uptime >= timings.backoff_reset:
            self.backoff = timings.backoff_initial
        delay, self.backoff = self.backoff, min(self.backoff * 2, timings.backoff_max)
        self.restarts += 1
        self.started_mono = None
        self._move(S.CRASHED, reason)
        log.error("%s crashed: %s; restart #%d in %.1f s", self.name, reason, self.restarts, delay)
        self._emit(t.Later(delay, t.RestartDue(self.gen)))

    def _restart_due(self, event: t.RestartDue) -> None:
        self.restarts_total += 1
        self._spawn(f"restart #{self.restarts}")

    # -- upgrading in place ----------------------------------------------------------------------
    def _upgrade(self, event: t.UpgradeRequested) -> None:
        self.upgrade = Upgrade(old_entry=self.entry, old_pvs=self.pvs, old_pv_prefix=self.pv_prefix)
        self.upgrade_outcome = None
        self._emit(t.UpgradeUpdate("started", self.entry.commit, None), t.PrepareUpgrade())

    def _upgrade_prepared(self, event: t.UpgradePrepared) -> None:
        up = self.upgrade
        if up is None or up.phase != "preparing":  # deleted or shut down meanwhile
            self._emit(t.DropStaged())
            return
        if event.prepared is None:  # the shell dropped what it fetched before answering
            if event.entry is None:
                self._end_upgrade("unchanged", None)
                return
            # the same revision from another source: the entry is saved, then the caller answered
            self.entry = event.entry.model_copy(update={"desired_state": self.entry.desired_state,
                                                        "updated_at": _now()})
            up.phase = "keeping"
            self._emit(t.Persist(self.entry), t.DropStaged())
            return
        up.new, up.phase = event.prepared, "switching"
        up.resume = self.entry.desired_state == "running"
        commit = event.prepared.entry.commit
        self._emit(t.UpgradeUpdate("validated", self.entry.commit, commit))
        if self.state in LIVE - {S.STOPPING}:
            self._stop_worker(f"upgrade to {_short(commit)}")
        elif self.state != S.STOPPING:  # no worker: swap now (a pending restart is stale)
            self.gen += 1
            self._emit(t.SwapRevision())

    def _upgrade_prepare_failed(self, event: t.UpgradePrepareFailed) -> None:
        if self.upgrade is not None and self.upgrade.phase == "preparing":  # nothing is left staged
            self._end_upgrade("failed", event.error)

    def _swapped(self, event: t.Swapped) -> None:
        up = self.upgrade
        if up is None:
            return
        if not event.ok:  # the file system refused a rename: the upgrade ends where it stands
            self._end_upgrade("failed", IochostError(ErrorCode.UPGRADE_FAILED,
                                                     f"swapping the revisions of {self.name!r} failed: {event.reason}"))
            return
        desired = self.entry.desired_state
        if up.phase == "switching":
            assert up.new is not None
            self.entry = up.new.entry.model_copy(update={
                "desired_state": desired, "previous_commit": up.old_entry.commit, "updated_at": _now()})
            self.plugin_dir, self.pvs = event.plugin_dir, up.new.pvs
            self._learn_pv_prefix(up.new.pv_prefix)
            if up.resume:
                up.phase = "starting"
                self.restarts, self.backoff = 0, None
                self._spawn(f"upgrade to {_short(self.entry.commit)}")
            else:
                self._keep_upgrade(up)
        elif up.phase == "rolling_back":
            self.entry = up.old_entry.model_copy(update={"desired_state": desired})
            self.plugin_dir, self.pvs = event.plugin_dir, up.old_pvs
            self._learn_pv_prefix(up.old_pv_prefix)
            up.phase = "restarting_old"
            self.restarts, self.backoff = 0, None
            self._spawn(f"rolled back to {_short(self.entry.commit)}")

    def _probation_over(self, event: t.ProbationOver) -> None:
        if self.upgrade is not None and self.upgrade.phase == "probation":
            self._keep_upgrade(self.upgrade)

    def _keep_upgrade(self, up: Upgrade) -> None:
        """The commit point: the previous revision is dropped first, then the registry names
        the new one (a crash between the two restores the new checkout at the old commit).
        The caller is answered once the drop is done: nothing of the old revision is left."""
        up.phase = "keeping"
        self._emit(t.DropStaged(), t.Persist(self.entry))

    def _dropped(self, event: t.Dropped) -> None:
        if self.upgrade is not None and self.upgrade.phase == "keeping":
            self._end_upgrade("succeeded" if self.upgrade.new is not None else "unchanged", None)

    def _upgrade_failed(self, reason: str, details: dict[str, Any]) -> bool:
        """The worker of an upgrade is gone unasked: roll back (new revision) or give up
        (the previous one, rolled back to, did not come back either). True: handled.
        ``details`` go into the caller's error: ``log_tail``, and ``exception`` if initialize() raised."""
        up = self.upgrade
        if up is None or up.phase not in ("starting", "probation", "restarting_old"):
            return False
        if up.phase == "restarting_old":
            self._end_upgrade("rolled_back", up.error)
            return False  # and the usual crash handling restarts the previous revision
        when = "did not start" if up.phase == "starting" else f"exited within its {self.timings.probation:g} s probation"
        commit, old = _short(self.entry.commit), _short(up.old_entry.commit)
        up.error = IochostError(ErrorCode.UPGRADE_FAILED,
                                f"the new revision {commit} of {self.name!r} {when}: {reason}; rolled back to {old}",
                                reason=reason, **details)
        up.phase = "rolling_back"
        self._move(S.FAILED, f"upgrade to {commit} failed: {reason}")
        self._emit(t.SwapRevision(back=True))
        return True

    def _end_upgrade(self, phase: str, error: IochostError | None) -> None:
        up, self.upgrade = self.upgrade, None
        self.upgrade_outcome = error
        to = up.new.entry.commit if up is not None and up.new is not None else None
        self._emit(t.UpgradeUpdate(phase, up.old_entry.commit if up else None, to,
                                   error.message if error else ""))

    # -- job runs (the ledger decides; see runs.py) -----------------------------------------------
    def _run(self, event: t.RunRequested) -> None:
        self._emit(*self.runs.request(self.gen, event.run_id, event.parameters))

    def _cancel(self, event: t.CancelRequested) -> None:
        self._emit(*self.runs.cancel(self.gen, event.run_id, self.timings.cancel_grace))

    def _cancel_overdue(self, event: t.CancelOverdue) -> None:
        if self.runs.active == event.run_id:
            self._kill(f"run {event.run_id} ignored cancel for {self.timings.cancel_grace:g} s")

    # -- what clients see -----------------------------------------------------------------------
    @property
    def trouble(self) -> Trouble | None:
        """Why /health names this plugin (one of ``TROUBLES``), or None: it failed; it crashed
        (and waits for or makes its automatic restart), crash_looping from its second crash in a
        row; its live worker's STATUS is ERROR/FAILED; or it should run and is not running
        (starting, stopping). An add in progress is none of these: its caller hears how it ends."""
        if self.state == S.FAILED:
            return "failed"
        if self.state == S.CRASHED or self.state == S.STARTING and self.restarts:
            return "crash_looping" if self.restarts > 1 else "crashed"
        if self.status in ERROR_STATUSES and self.state in (S.STARTING, S.RUNNING, S.PAUSED) and not self.adding:
            return "status_error"
        if self.entry.desired_state == "running" and self.state not in UP and not self.adding:
            return "not_running"
        return None

    @property
    def degraded(self) -> bool:
        """The daemon is ``degraded`` while any plugin is (``trouble`` says why)."""
        return self.trouble is not None

    def record(self) -> PluginRecord:
        """The plugin as the API shows it; the same object until the next event, since
        ``handle`` is the only way anything in it changes (dashboards poll the list)."""
        if self._shown is not None and self._shown_version == self._version:
            return self._shown
        entry, source = self.entry, self.entry.source
        self._shown_version = self._version
        self._shown = PluginRecord(
            name=entry.name, kind=entry.kind, class_name=entry.class_name,
            source=SourceInfo(git_url=source.git_url, local_path=source.local_path, branch=source.branch,
                              commit=entry.commit, path=source.path),
            previous_commit=entry.previous_commit, state=self.state, desired_state=entry.desired_state,
            status=self.status, message=self.message, pid=self.pid, restarts=self.restarts,
            pv_prefix=self.pv_prefix, pvs=self.pvs, parameters=entry.parameters, created_at=entry.created_at, started_at=self.started_at,
            last_error=self.last_error, transitions=list(self.transitions), warnings=entry.warnings,
            running=self.state in UP if entry.kind == "task" else None,
            cycle_count=self.cycles if entry.kind == "task" else None,
        )
        return self._shown


def _raised(failure: m.Initialized) -> str:
    """``KeyError: 'scal'``: what initialize() raised, as Python prints it."""
    return f"{failure.exception}: {failure.message}" if failure.message else failure.exception


def _short(commit: str | None) -> str:
    return commit[:12] if commit else "the local copy"


def _cancelled(name: str) -> IochostError:
    return IochostError(ErrorCode.ADD_CANCELLED, f"plugin {name!r} was deleted while it was being added")


def _verb(event: object) -> str:
    return type(event).__name__.removesuffix("Requested").lower()


P = PluginLifecycle
Handler = Callable[[PluginLifecycle, Any], None]
WORKER = frozenset({S.STARTING, S.RUNNING, S.PAUSED, S.STOPPING})  # states with a worker process
IDLE = frozenset({S.STOPPED, S.CRASHED, S.FAILED})


def _rows(states: frozenset[State] | set[State], event: type, handler: Handler,
          targets: set[State]) -> dict[tuple[State, type], tuple[Handler, frozenset[State]]]:
    return {(state, event): (handler, frozenset(targets)) for state in states}


# The transition table: (state, event) -> (handler, states it may move to).
TABLE: dict[tuple[State, type], tuple[Handler, frozenset[State]]] = {
    **_rows({S.PENDING}, t.AddRequested, P._add, {S.FETCHING}),
    **_rows({S.FETCHING}, t.Fetched, P._fetched, {S.VALIDATING}),
    **_rows({S.FETCHING, S.VALIDATING}, t.Prepared, P._prepared, {S.STARTING, S.STOPPED}),
    **_rows({S.FETCHING, S.VALIDATING}, t.PrepareFailed, P._prepare_failed, {S.FAILED}),
    **_rows({S.PENDING}, t.RestoreRequested, P._restore, set()),
    **_rows({S.PENDING}, t.Restored, P._restored, {S.STARTING, S.STOPPED}),
    **_rows({S.PENDING}, t.RestoreFailed, P._restore_failed, {S.FAILED}),
    **_rows(IDLE, t.StartRequested, P._start, {S.STARTING}),
    **_rows(IDLE, t.RestartRequested, P._start, {S.STARTING}),
    **_rows({S.STARTING, S.RUNNING, S.PAUSED}, t.RestartRequested, P._restart, {S.STOPPING}),
    **_rows(set(State) - {S.DELETED}, t.StopRequested, P._stop, {S.STOPPING, S.STOPPED}),
    **_rows(set(State) - {S.DELETED}, t.DeleteRequested, P._delete, {S.STOPPING}),
    **_rows(set(State) - {S.DELETED}, t.TornDown, P._torn_down, {S.DELETED}),
    **_rows(set(State) - {S.DELETED}, t.Closing, P._closing, set()),
    **_rows({S.STARTING}, t.Spawned, P._spawned, set()),
    **_rows({S.STOPPING}, t.Spawned, P._spawned, set()),
    **_rows({S.STARTING, S.STOPPING}, t.SpawnFailed, P._spawn_failed,
          {S.FAILED, S.STOPPED, S.STARTING, S.CRASHED}),
    **_rows({S.STARTING}, m.Ready, P._ready, set()),
    **_rows({S.STARTING}, m.Initialized, P._initialized, {S.RUNNING, S.PAUSED}),
    **_rows(WORKER, m.StatusChanged, P._status_changed, {S.RUNNING, S.PAUSED}),
    **_rows({S.STARTING}, t.StartOverdue, P._start_overdue, set()),
    **_rows({S.STOPPING}, t.StopOverdue, P._stop_overdue, set()),
    **_rows(UP, t.Tick, P._tick, set()),
    **_rows(WORKER, t.WorkerExited, P._exited, {S.STOPPED, S.STARTING, S.CRASHED, S.FAILED}),
    **_rows({S.CRASHED}, t.RestartDue, P._restart_due, {S.STARTING}),
    **_rows({S.RUNNING}, t.RunRequested, P._run, set()),
    **_rows(UP, t.CancelRequested, P._cancel, set()),
    **_rows(WORKER, t.CancelOverdue, P._cancel_overdue, set()),
    **_rows(UP | IDLE, t.UpgradeRequested, P._upgrade, set()),
    **_rows(set(State) - {S.DELETED}, t.UpgradePrepared, P._upgrade_prepared, {S.STOPPING}),
    **_rows(set(State) - {S.DELETED}, t.UpgradePrepareFailed, P._upgrade_prepare_failed, set()),
    **_rows(IDLE, t.Swapped, P._swapped, {S.STARTING}),
    **_rows(UP, t.ProbationOver, P._probation_over, set()),
    **_rows(set(State) - {S.DELETED}, t.Dropped, P._dropped, set()),
}
