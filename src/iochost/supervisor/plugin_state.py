"""What one plugin's lifecycle holds, and the toolkit its handlers change it with.

``PluginState`` is the whole state of a plugin as the daemon knows it: ``state``
(``states.State``), how far it is in (``admission``), what is still to be done
(``intent``), the upgrade in progress (``upgrade``), and its current worker's. The handlers
(``lifecycle``, ``worker_events``, ``upgrade``) change it only through ``move``, ``emit``,
``spawn`` and ``stop_worker``; ``lifecycle.PluginLifecycle`` adds the one entry point,
``handle``, and the table that picks the handler. Nothing here reads a clock: the time an
event happened comes in with it (``now``).
"""

from __future__ import annotations

from collections import deque
from datetime import datetime
from pathlib import Path

from iochost.config.limits import DaemonLimits, WorkerLimits, resolve_limits
from iochost.config.parameters import Parameters
from iochost.contract import messages as m
from iochost.errors import IochostError
from iochost.store import DesiredState, RegistryEntry
from iochost.supervisor import lifecycle_types as t
from iochost.supervisor.lifecycle_state import Admission, Intent, Upgrade
from iochost.supervisor.public import Transition
from iochost.supervisor.runs import RunLedger
from iochost.supervisor.states import State

S = State
TRANSITIONS_KEPT = 50


class PluginState:
    """One plugin's state and the handlers' toolkit (the module's docstring says more)."""

    def __init__(self, entry: RegistryEntry, pv_prefix: str, timings: t.Timings, runs_kept: int,
                 now: t.Now, daemon_limits: DaemonLimits, plugin_dir: Path | None = None) -> None:
        self.entry = entry
        self.pv_prefix = pv_prefix
        self.pv_prefix_known = False  # read from its config.yaml (add, upgrade, restore): PV clashes compare these
        self.timings = timings
        self.daemon_limits = daemon_limits  # for what the plugin's parameters leave to the daemon
        self.plugin_dir = plugin_dir
        self.parameters: Parameters | None = None  # its checkout's, with the entry's overrides; None: unread
        self.now = now  # when the event being handled happened (the shell says)
        self.state = S.PENDING
        self.admission = Admission.NEW
        self.intent = Intent.NONE
        self.transitions: deque[Transition] = deque(maxlen=TRANSITIONS_KEPT)
        self._version = 0  # events handled: ``view()`` is rebuilt only after one
        self.runs = RunLedger(entry.name, runs_kept)
        self.add_error: IochostError | None = None  # why the add failed, for its caller
        self.upgrade: Upgrade | None = None
        self.upgrade_outcome: IochostError | None = None  # how the last upgrade ended, for its caller
        self.gen = 0  # spawn counter: events of an older worker are stale
        self.pid: int | None = None
        self.limits: WorkerLimits | None = None  # the current worker's: resolved once, at its spawn
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

    # -- read-only names of the typed state, for the supervisor --------------------------------
    @property
    def registered(self) -> bool:
        """The registry holds it (after an add's validation, or restored)."""
        return self.admission.registered

    @property
    def adding(self) -> bool:
        """An add is in progress: its failure removes the plugin."""
        return self.admission.adding

    @property
    def delete_requested(self) -> bool:
        return self.intent is Intent.DELETE

    @property
    def restart_requested(self) -> bool:
        return self.intent is Intent.RESTART

    @property
    def closing(self) -> bool:
        """The daemon shuts down (and this plugin is not being deleted)."""
        return self.intent is Intent.CLOSE

    def with_desired(self, desired: DesiredState, at: datetime) -> RegistryEntry:
        """The entry as a request for ``desired`` made at ``at``
        leaves it: what the supervisor saves before it feeds the request (``_set_desired``
        makes the same change)."""
        if self.entry.desired_state == desired:
            return self.entry
        return self.entry.model_copy(update={"desired_state": desired, "updated_at": at})

    # -- the handlers' toolkit -------------------------------------------------------------------
    def emit(self, *effects: t.Effect) -> None:
        self._out.extend(effects)

    def move(self, new: State, reason: str = "") -> None:
        old, self.state = self.state, new
        if new in (S.FAILED, S.CRASHED) and reason:
            self.last_error = reason
        self._record(old, new, reason)

    def spawn(self, reason: str) -> None:
        """Start a new worker, under limits resolved here, once: the spec and the stop's timing
        both use them (request options -> parameters -> daemon settings, ``config.limits``)."""
        self.gen += 1
        self.pid = self.fatal = self.kill_reason = None  # all of the previous worker
        self.busy_in = self.busy_for = self.init_failure = None
        self.cycles = 0
        self.limits = resolve_limits(self.parameters or Parameters(), self.daemon_limits,
                                     self.entry.options.get("grace_period"))
        self.move(S.STARTING, reason)
        self.emit(t.Spawn(self.gen, self.limits))

    def stop_worker(self, reason: str) -> None:
        self.move(S.STOPPING, reason)
        self.emit(t.Offline())
        if self.pid is not None:  # else it is being spawned: ``spawned`` stops it with its own grace
            self.signal_stop()

    def signal_stop(self) -> None:
        """Stop the current worker and time it with the grace it was started with (config.yaml
        or the request may give it more than the daemon's default): resolved at its spawn, the
        same limits its spec carries. Sent once it is spawned: before, there is no worker to stop."""
        assert self.limits is not None
        grace = self.limits.grace_period
        self.emit(t.StopWorker(self.gen, grace), t.Later(grace + self.timings.stop_margin, t.StopOverdue(self.gen)))

    def learn_pv_prefix(self, pv_prefix: str | None) -> None:
        if pv_prefix:
            self.pv_prefix, self.pv_prefix_known = pv_prefix, True

    def want(self, intent: Intent) -> None:
        """Ask for ``intent``; a stronger one pending stands (``Intent.stronger``)."""
        self.intent = self.intent.stronger(intent)

    def _flush(self) -> list[t.Effect]:
        out, self._out = self._out, []
        return out

    def _record(self, old: State | None, new: State, reason: str) -> None:
        transition = Transition(at=self.now.wall, from_state=old, to_state=new, reason=reason)
        self.transitions.append(transition)
        self.emit(t.Transitioned(transition))

    def _set_desired(self, desired: DesiredState) -> None:
        if self.entry.desired_state != desired:
            self.entry = self.with_desired(desired, self.now.wall)
            if self.admission.registered:
                self.emit(t.Persist(self.entry))
