"""What readers outside the supervisor see of one plugin: a frozen ``PluginView``.

The lifecycle makes a new view after each event it handles (``PluginState.view``) and
hands out the same object until the next one, so the API, the metrics and the displays read
a consistent copy and can change nothing. ``trouble`` is the one rule for why /health names a
plugin (and /metrics counts it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import get_args

from iochost.sdk.status import JobStatus, TaskStatus
from iochost.store import DESIRED_RUNNING, RegistryEntry
from iochost.supervisor.plugin_state import PluginState
from iochost.supervisor.public import PluginRecord, SourceInfo, Trouble
from iochost.supervisor.states import UP, State

S = State
ERROR_STATUSES = frozenset({TaskStatus.ERROR.name, JobStatus.FAILED.name})  # STATUS of a plugin in error
TROUBLES: tuple[Trouble, ...] = get_args(Trouble)  # every reason /health may name a plugin for


@dataclass(frozen=True)
class PluginView:
    """One plugin as it was after the last event its lifecycle handled.

    ``kind``, ``created_at`` (a plugin deleted and added again is another plugin),
    ``desired_state`` and ``parameters`` are the entry's."""

    name: str
    state: State
    entry: RegistryEntry  # what the registry keeps (the lifecycle replaces it, never changes it)
    pv_prefix: str
    plugin_dir: Path | None  # its checkout's plugin folder; None until an add or restore puts it in place
    listed: bool  # registered, and not in an add still under way: the displays show it
    trouble: Trouble | None
    pid: int | None
    restarts_total: int  # automatic restarts ever (a Prometheus counter)
    runs_finished: Mapping[str, int]  # a job's ended runs per outcome, ever
    record: PluginRecord  # what the REST API answers


def trouble(lc: PluginState) -> Trouble | None:
    """Why /health names this plugin (one of ``TROUBLES``), or None: it failed; it crashed
    (and waits for or makes its automatic restart), crash_looping from its second crash in a
    row; its live worker's STATUS is ERROR/FAILED; or it should run and is not running
    (starting, stopping). An add in progress is none of these: its caller hears how it ends."""
    if lc.state is S.FAILED:
        return "failed"
    if lc.state is S.CRASHED or lc.state is S.STARTING and lc.restarts:
        return "crash_looping" if lc.restarts > 1 else "crashed"
    adding = lc.admission.adding
    if lc.status in ERROR_STATUSES and lc.state in (S.STARTING, S.RUNNING, S.PAUSED) and not adding:
        return "status_error"
    if lc.entry.desired_state == DESIRED_RUNNING and lc.state not in UP and not adding:
        return "not_running"
    return None


def record(lc: PluginState) -> PluginRecord:
    """The plugin as the API shows it."""
    entry, source = lc.entry, lc.entry.source
    task = entry.kind == "task"
    return PluginRecord(
        name=entry.name, kind=entry.kind, class_name=entry.class_name,
        source=SourceInfo(git_url=source.git_url, local_path=source.local_path, branch=source.branch,
                          commit=entry.commit, path=source.path),
        previous_commit=entry.previous_commit, state=lc.state, desired_state=entry.desired_state,
        status=lc.status, message=lc.message, pid=lc.pid, restarts=lc.restarts,
        pv_prefix=lc.pv_prefix, pvs=lc.pvs, parameters=entry.parameters, created_at=entry.created_at,
        started_at=lc.started_at, last_error=lc.last_error, transitions=list(lc.transitions),
        warnings=entry.warnings, running=lc.state in UP if task else None, cycle_count=lc.cycles if task else None,
    )


def view(lc: PluginState) -> PluginView:
    entry = lc.entry
    return PluginView(
        name=entry.name, state=lc.state, entry=entry, pv_prefix=lc.pv_prefix, plugin_dir=lc.plugin_dir,
        listed=lc.admission.registered and not lc.admission.adding, trouble=trouble(lc), pid=lc.pid,
        restarts_total=lc.restarts_total, runs_finished=MappingProxyType(dict(lc.runs.finished_total)),
        record=record(lc),
    )
