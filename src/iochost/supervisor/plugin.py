"""One plugin as the supervisor manages it: desired state, lifecycle state, its worker."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from iochost.store import RegistryEntry
from iochost.supervisor.models import PluginRecord, SourceInfo, Transition
from iochost.supervisor.process import WorkerProcess
from iochost.supervisor.runs import RunLedger
from iochost.supervisor.states import State, check_transition

TRANSITIONS_KEPT = 50


class ManagedPlugin:
    """Everything the supervisor tracks about one plugin; mutated only on the event loop."""

    def __init__(
        self,
        entry: RegistryEntry,
        pv_prefix: str,
        plugin_dir: Path | None,
        module_file: str | None,
        runs_kept: int,
        on_transition: Callable[["ManagedPlugin", Transition], None],
    ) -> None:
        self.entry = entry
        self.pv_prefix = pv_prefix
        self.plugin_dir = plugin_dir
        self.module_file = module_file
        self.state = State.PENDING
        self.transitions: deque[Transition] = deque(maxlen=TRANSITIONS_KEPT)
        self._on_transition = on_transition
        self.lock = asyncio.Lock()  # one lifecycle operation at a time
        self.adding = False  # an add in progress owns failures: no restart, no crash record
        self.worker: WorkerProcess | None = None
        self.ready: asyncio.Future[None] | None = None
        self.restart_task: asyncio.Task[None] | None = None
        self.fatal: str | None = None
        self.kill_reason: str | None = None
        self.pvs: list[str] = []
        self.status: str | None = None
        self.message: str | None = None
        self.restarts = 0
        self.backoff: float | None = None
        self.started_at: datetime | None = None
        self.started_mono: float | None = None
        self.last_error: str | None = None
        self.last_heartbeat = 0.0
        self.busy_in: str | None = None
        self.busy_for: float | None = None
        self.watchdog = 30.0
        self.runs = RunLedger(entry.name, runs_kept)
        self._record_transition(None, State.PENDING, "added")

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def visible(self) -> bool:
        """Whether clients see it yet: an add still fetching or validating may vanish."""
        return not (self.adding and self.state in (State.PENDING, State.FETCHING, State.VALIDATING))

    def move(self, new: State, reason: str = "") -> None:
        """The only way state changes: checked against the table, recorded, published."""
        check_transition(self.state, new)
        old, self.state = self.state, new
        if new in (State.FAILED, State.CRASHED) and reason:
            self.last_error = reason
        self._record_transition(old, new, reason)

    def _record_transition(self, old: State | None, new: State, reason: str) -> None:
        transition = Transition(at=datetime.now(timezone.utc), from_state=old, to_state=new, reason=reason)
        self.transitions.append(transition)
        self._on_transition(self, transition)

    def heartbeat_busy_for(self) -> float | None:
        """How long the current plugin call has been busy, extrapolated since the last beat."""
        if self.busy_for is None:
            return None
        return self.busy_for + (time.monotonic() - self.last_heartbeat)

    def record(self) -> PluginRecord:
        entry = self.entry
        source = entry.source
        return PluginRecord(
            name=entry.name,
            kind=entry.kind,
            class_name=entry.class_name,
            source=SourceInfo(
                git_url=source.git_url, local_path=source.local_path, branch=source.branch,
                commit=entry.commit, path=source.path,
            ),
            state=self.state,
            desired_state=entry.desired_state,
            status=self.status,
            message=self.message,
            pid=self.worker.pid if self.worker else None,
            restarts=self.restarts,
            pv_prefix=self.pv_prefix,
            pvs=self.pvs,
            parameters=entry.parameters,
            created_at=entry.created_at,
            started_at=self.started_at,
            last_error=self.last_error,
            transitions=list(self.transitions),
        )
