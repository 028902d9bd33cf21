"""The lifecycle's handlers for what its worker process does: spawned or not, its messages,
the watchdog, its exit, crashes and their backoff, and job runs (the ledger decides; see
runs.py). Plain functions of the lifecycle that ``lifecycle.TABLE`` names.
"""

from __future__ import annotations

import logging
from typing import Any

from iochost.contract import messages as m
from iochost.contract.exits import describe_exit
from iochost.errors import ErrorCode, IochostError
from iochost.supervisor import lifecycle_types as t
from iochost.supervisor import upgrade as u
from iochost.supervisor.lifecycle_state import Admission, Intent
from iochost.supervisor.plugin_state import PluginState
from iochost.supervisor.states import State
from iochost.supervisor.view import ERROR_STATUSES, trouble

log = logging.getLogger("iochost.supervisor")

S = State


# -- spawning and stopping ---------------------------------------------------------------------
def spawned(lc: PluginState, event: t.Spawned) -> None:
    lc.pid = event.pid
    if lc.state is S.STOPPING:  # stopped while it was being spawned: now there is a worker to stop
        lc.signal_stop()
    else:
        lc.emit(t.Later(lc.timings.start_timeout, t.StartOverdue(lc.gen)))


def spawn_failed(lc: PluginState, event: t.SpawnFailed) -> None:
    reason = f"cannot start worker: {event.reason}"
    if lc.state is S.STOPPING:  # stopped (or deleted) while it was being spawned
        stopped(lc, reason)
        return
    if u.worker_lost(lc, reason, {"log_tail": []}):
        return
    adding = lc.admission.adding
    if event.host_fault is not None and not adding and lc.intent is not Intent.CLOSE:  # the host's: retried
        crashed(lc, reason)
        return
    lc.move(S.FAILED, reason)
    if adding:  # host_fault: the daemon could not start it (no fds, processes, memory, disk)
        code = event.host_fault or ErrorCode.WORKER_START_FAILED
        lc.add_error = IochostError(code, reason)
        lc.emit(t.Teardown())


def stop_overdue(lc: PluginState, event: t.StopOverdue) -> None:
    assert lc.limits is not None  # armed by ``PluginState.signal_stop``, with this worker's limits
    kill(lc, f"cleanup() did not return within the grace period of {lc.limits.grace_period:g} s")


# -- its messages ------------------------------------------------------------------------------
def ready(lc: PluginState, event: t.FromWorker) -> None:
    message = event.message
    assert isinstance(message, m.Ready)
    lc.pvs, lc.last_heartbeat = message.pvs, lc.now.mono
    lc.emit(t.Online(message.pvs))


def initialized(lc: PluginState, event: t.FromWorker) -> None:
    message = event.message
    assert isinstance(message, m.Initialized)
    if not message.ok:  # the worker runs cleanup() and exits; that exit fails the start (``exited``)
        lc.init_failure = message
        log.error("%s: initialize() raised %s", lc.name, _raised(message))
        return
    lc.started_at, lc.started_mono, lc.last_heartbeat = lc.now.wall, lc.now.mono, lc.now.mono
    if lc.admission is Admission.FIRST_START:  # the add is done
        lc.admission = Admission.REGISTERED
    paused = lc.status == "PAUSED"
    lc.move(S.PAUSED if paused else S.RUNNING, f"pid {lc.pid}, {len(lc.pvs)} PVs")
    u.worker_initialized(lc)


def status_changed(lc: PluginState, event: t.FromWorker) -> None:
    message = event.message
    assert isinstance(message, m.StatusChanged)
    before = trouble(lc)
    lc.status, lc.message = message.status, message.message  # the contract bounds them
    if message.status in ERROR_STATUSES:  # the whole text: the MESSAGE PV keeps 39 characters of it
        lc.last_error = message.message or f"STATUS {message.status}"
    lc.emit(t.StatusUpdate(lc.status, lc.message, before != trouble(lc)))
    if message.status == "PAUSED" and lc.state is S.RUNNING:
        lc.move(S.PAUSED, "ENABLE=0")
    elif message.status != "PAUSED" and lc.state is S.PAUSED:
        lc.move(S.RUNNING, "ENABLE=1")


def message_anywhere(lc: PluginState, event: t.FromWorker) -> None:
    """Messages every state with a worker takes: heartbeats, fatal reports, runs."""
    message = event.message
    if isinstance(message, m.Heartbeat):
        lc.last_heartbeat, lc.busy_in, lc.busy_for = lc.now.mono, message.busy_in, message.busy_for
        lc.cycles = message.cycles
    elif isinstance(message, m.Fatal):
        lc.fatal = message.message
        log.error("%s: %s", lc.name, message.message)
    elif isinstance(message, (m.RunAccepted, m.RunRejected, m.RunFinished)):
        lc.emit(*lc.runs.on_message(message, lc.now.wall))
    elif isinstance(message, (m.Ready, m.Initialized, m.StatusChanged)):
        log.debug("%s: %s in state %s ignored", lc.name, message.type, lc.state.value)


# -- the watchdog --------------------------------------------------------------------------------
def tick(lc: PluginState, event: t.Tick) -> None:
    """The watchdog: a plugin call busy too long, or a worker gone silent, is killed."""
    if lc.kill_reason is not None or lc.limits is None:
        return
    silent = lc.now.mono - lc.last_heartbeat
    busy = None if lc.busy_for is None else lc.busy_for + silent
    if busy is not None and busy > lc.limits.watchdog:
        kill(lc, f"watchdog: {lc.busy_in}() busy for {busy:.1f} s (limit {lc.limits.watchdog:g} s)")
    elif silent > lc.timings.heartbeat_timeout:
        kill(lc, f"no heartbeat for {silent:.1f} s")


def start_overdue(lc: PluginState, event: t.StartOverdue) -> None:
    busy = f": {lc.busy_in}() still running" if lc.busy_in else ("" if lc.pvs else ": no READY from the worker")
    kill(lc, f"did not start within {lc.timings.start_timeout:g} s{busy}")


def kill(lc: PluginState, reason: str) -> None:
    if lc.kill_reason is None:
        lc.kill_reason = reason
        log.error("%s: %s; killing pid %s", lc.name, reason, lc.pid)
        lc.emit(t.Kill(lc.gen, reason))


# -- its exit ---------------------------------------------------------------------------------------
def exited(lc: PluginState, event: t.WorkerExited) -> None:
    memory = lc.limits.memory_limit_mb if lc.limits else None
    failure = lc.init_failure
    if failure is not None:  # what the caller of an add or upgrade reads: the plugin's traceback
        reason = f"initialize() raised {_raised(failure)}"
        details: dict[str, Any] = {"exception": {"type": failure.exception, "message": failure.message},
                                   "log_tail": failure.traceback.splitlines()}
    else:
        reason = lc.kill_reason or lc.fatal or describe_exit(event.code, memory)
        details = {"log_tail": event.log_tail}
    was_starting = lc.state is S.STARTING
    lc.pid, lc.busy_in, lc.busy_for = None, None, None
    lc.emit(t.Offline(), *lc.runs.worker_gone(f"the worker exited: {reason}", lc.now.wall))
    if lc.state is S.STOPPING:
        stopped(lc, f"exit code {event.code}")
    elif u.worker_lost(lc, reason, details):
        pass
    elif lc.admission.adding:  # the add's first start failed: the add fails, nothing stays
        lc.add_error = IochostError(ErrorCode.WORKER_START_FAILED, f"{lc.name!r} did not start: {reason}",
                                    **details)
        lc.move(S.FAILED, reason)
        lc.emit(t.Teardown())
    elif lc.intent is Intent.CLOSE:
        lc.move(S.STOPPED, f"daemon shutting down; {reason}")
    elif lc.fatal is not None:
        lc.move(S.FAILED, lc.fatal)  # a plugin that cannot load won't load next time
    else:
        crashed(lc, reason if not was_starting else f"start failed: {reason}")


def stopped(lc: PluginState, reason: str) -> None:
    lc.move(S.STOPPED, reason)
    if u.worker_stopped(lc):
        return
    if lc.intent is Intent.DELETE:
        lc.emit(t.Teardown())
    elif lc.intent is Intent.RESTART:
        lc.intent = Intent.NONE
        lc.restarts, lc.backoff = 0, None
        lc.spawn("restart requested")
    elif lc.admission is Admission.FIRST_START:  # stopped during the add's first start: the add ends stopped
        lc.admission = Admission.REGISTERED


def crashed(lc: PluginState, reason: str) -> None:
    timings, now = lc.timings, lc.now.mono
    uptime = now - (lc.started_mono if lc.started_mono is not None else now)
    if lc.backoff is None or uptime >= timings.backoff_reset:
        lc.backoff = timings.backoff_initial
    delay, lc.backoff = lc.backoff, min(lc.backoff * 2, timings.backoff_max)
    lc.restarts += 1
    lc.started_mono = None
    lc.move(S.CRASHED, reason)
    log.error("%s crashed: %s; restart #%d in %.1f s", lc.name, reason, lc.restarts, delay)
    lc.emit(t.Later(delay, t.RestartDue(lc.gen)))


def restart_due(lc: PluginState, event: t.RestartDue) -> None:
    lc.restarts_total += 1
    lc.spawn(f"restart #{lc.restarts}")


# -- job runs (the ledger decides; see runs.py) -----------------------------------------------
def run(lc: PluginState, event: t.RunRequested) -> None:
    lc.emit(*lc.runs.request(lc.gen, event.run_id, event.parameters))


def cancel(lc: PluginState, event: t.CancelRequested) -> None:
    lc.emit(*lc.runs.cancel(lc.gen, event.run_id, lc.timings.cancel_grace))


def cancel_overdue(lc: PluginState, event: t.CancelOverdue) -> None:
    if lc.runs.active == event.run_id:
        kill(lc, f"run {event.run_id} ignored cancel for {lc.timings.cancel_grace:g} s")


def _raised(failure: m.Initialized) -> str:
    """``KeyError: 'scal'``: what initialize() raised, as Python prints it."""
    return f"{failure.exception}: {failure.message}" if failure.message else failure.exception
