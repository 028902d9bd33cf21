"""Run a plugin's code on its own thread and keep the default PVs in step with it.

Record callbacks arrive on the cothread dispatcher, supervisor commands on the channel
thread; both only *queue* work here, so plugin code runs on one thread, never
concurrently with itself. A separate heartbeat thread reports how long the current call
has been busy: that is how a plugin stuck in ``execute()`` is seen from outside.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import traceback
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from iochost.sdk import JobBase, JobCancelled, JobResult, TaskBase
from iochost.sdk.base import PluginBase
from iochost.sdk.status import JobStatus, TaskStatus
from iochost.config import Parameters
from iochost.contract import messages
from iochost.declarative.functions import get_registry
from iochost.config.calls import still_unregistered
from iochost.worker.autosave import state_problem
from iochost.worker.channel import Channel
from iochost.worker.limits import exit_out_of_memory

if TYPE_CHECKING:  # records imports softioc; the launch template preloads this module without it
    from iochost.worker.autosave import Autosaver
    from iochost.worker.records import PVTable
    from iochost.worker.wiring import Wiring

log = logging.getLogger("iochost.worker")

_STOP = ("stop",)


class PluginHost:
    """Owns the plugin thread; the worker's main thread only starts and stops it."""

    def __init__(
        self,
        plugin: TaskBase | JobBase,
        table: PVTable,
        parameters: Parameters,
        channel: Channel,
        heartbeat_interval: float = 1.0,
        autosaver: Autosaver | None = None,
        plugin_dir: Path | None = None,
    ) -> None:
        self.plugin = plugin
        self.plugin_dir = plugin_dir  # its files' frames are the "plugin's own" in a reported traceback
        self.autosaver = autosaver  # restore() before initialize(), snapshot() before cleanup()
        self.heartbeat_interval = heartbeat_interval
        self.table = table
        self.parameters = parameters
        self.channel = channel
        self.events: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.stop_requested = threading.Event()
        self.finished = threading.Event()
        self.on_stop: Callable[[], None] = lambda: None  # wakes the worker's main loop (any thread)
        self.halted = False  # an error that only a restart clears
        self.internal_error: str | None = None  # a bug of the host, not of the plugin
        self.init_failed = False  # initialize() raised: the worker runs cleanup() and exits
        self.busy_in: str | None = None
        self.busy_since: float | None = None
        self._run_lock = threading.Lock()
        self.active_run: str | None = None
        self.stop_grace: float | None = None  # from the supervisor's Stop: overrides the spec's
        self.wiring: Wiring | None = None  # links, transforms and rules (iocmng 2.7), if the config has any
        self._thread = threading.Thread(target=self._main, name="iochost-plugin", daemon=True)

    # -- entry points from other threads -------------------------------------------
    def start(self) -> None:
        self._thread.start()
        threading.Thread(target=self._heartbeat, name="iochost-heartbeat", daemon=True).start()

    def request_stop(self) -> None:
        if not self.stop_requested.is_set():
            self.stop_requested.set()
            self.on_stop()
            if isinstance(self.plugin, JobBase):
                self.plugin._cancel.set()
            self.events.put(_STOP)

    def on_pv_write(self, name: str, value: Any) -> None:
        """Record callback (cothread dispatcher): queue it for the plugin thread."""
        if isinstance(self.plugin, JobBase) and name == "RUN":
            if value:
                run_id = f"epics-{uuid.uuid4().hex[:12]}"
                if not self.submit_run(run_id, {}, origin="epics"):
                    self.table.set_pv("MESSAGE", f"Busy: run {self.active_run} active")
            return
        self.events.put(("write", name, value))

    def on_command(self, command: object) -> None:
        """A supervisor command (channel thread)."""
        if isinstance(command, messages.RunJob):
            self.submit_run(command.run_id, command.parameters, origin="api")
        elif isinstance(command, messages.CancelRun):
            self.cancel_run(command.run_id)
        elif isinstance(command, messages.Stop):
            if command.grace is not None:
                self.stop_grace = command.grace
            self.request_stop()
        elif isinstance(command, messages.SetPVs):
            for name, value in command.values.items():
                self.table.set_pv(name, value)

    def submit_run(self, run_id: str, parameters: dict[str, Any], origin: str) -> bool:
        """Admit a job run unless one is active; one run at a time per job.

        The answer (accepted or rejected) is sent while the run lock is held, so the
        supervisor receives admissions and finishes in the order they happened, whichever
        thread (cothread for RUN=1, the channel for REST) asked."""
        if not isinstance(self.plugin, JobBase):
            log.error("run %s requested but %s is a task", run_id, self.plugin.name)
            self.channel.send(messages.RunRejected(run_id=run_id, active_run_id=""))
            return False
        with self._run_lock:
            if self.active_run is not None or self.stop_requested.is_set():
                self.channel.send(messages.RunRejected(run_id=run_id, active_run_id=self.active_run or ""))
                return False
            self.active_run = run_id
            self.plugin._cancel.clear()  # here, not when the run begins: a cancel may come first
            self.channel.send(messages.RunAccepted(run_id=run_id, origin=origin))  # type: ignore[arg-type]
        self.events.put(("run", run_id, parameters, origin))
        return True

    def cancel_run(self, run_id: str) -> None:
        if isinstance(self.plugin, JobBase) and self.active_run == run_id:
            self.plugin._cancel.set()

    # -- the plugin thread ---------------------------------------------------------------
    def _main(self) -> None:
        try:
            self._initializing_status()
            self._restore()
            initialized, outcome = self._guarded("initialize", self.plugin.initialize,
                                                 "; the worker runs cleanup() and exits")
            if initialized and self.wiring is not None:  # iocmng lets initialize() register functions
                outcome = still_unregistered(self.wiring.config, get_registry())
                initialized = outcome is None
                if outcome is not None:
                    log.error("%s; the worker runs cleanup() and exits", outcome)
            if not initialized:
                self._initialize_failed(outcome)
                self._call("cleanup", self.plugin.cleanup)
                return
            self._ready_status()
            if self.wiring is not None:
                self.wiring.start(enabled=getattr(self.plugin, "enabled", True))
            self.channel.send(messages.Initialized(ok=True))
            if isinstance(self.plugin, TaskBase):
                self._task_loop(self.plugin)
            else:
                self._job_loop(self.plugin)
            if self.wiring is not None:
                self.wiring.close()
            self._snapshot()
            self._call("cleanup", self.plugin.cleanup)
            if isinstance(self.plugin, TaskBase):
                self.plugin.running = False
                self._status(TaskStatus.END, "Stopped")
        except BaseException:  # noqa: BLE001 - plugin errors are caught in _call; this is ours
            self.internal_error = traceback.format_exc()
            log.critical("plugin thread died; the worker exits so the supervisor restarts it:\n%s",
                         self.internal_error)
            self.stop_requested.set()
        finally:
            self.finished.set()
            self.on_stop()

    def _guarded(self, what: str, function: Callable[[], Any], after: str = "") -> tuple[bool, Any]:
        """Run plugin code, seen busy by the heartbeat: (True, its result), or (False, the
        exception) logged with ``after`` (what follows from it); at its memory limit the
        process exits, it cannot carry on."""
        self.busy_in, self.busy_since = what, time.monotonic()
        try:
            return True, function()
        except MemoryError:
            exit_out_of_memory(f"{what}()")
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - plugin code may raise anything
            log.error("%s() raised%s:\n%s", what, after, traceback.format_exc())
            return False, exc
        finally:
            self.busy_in, self.busy_since = None, None

    def _call(self, what: str, function: Callable[[], Any]) -> bool:
        """Run plugin code; an exception becomes ERROR/FAILED + MESSAGE, never a crash."""
        ok, outcome = self._guarded(what, function)
        if not ok:
            self._error_status(outcome)
        return ok

    def _error_status(self, exc: BaseException) -> None:
        """STATUS ERROR (a task) or FAILED (a job), MESSAGE "Type: message" (the record keeps
        its start, the supervisor the whole text)."""
        error = TaskStatus.ERROR if isinstance(self.plugin, TaskBase) else JobStatus.FAILED
        self._status(error, f"{type(exc).__name__}: {exc}")

    def _initialize_failed(self, exc: BaseException) -> None:
        """One rule for every kind and every start: the supervisor hears what raised, with
        the plugin's frames (the add or upgrade fails with them; a restart is retried with
        backoff), and the worker stops: a plugin that did not initialise never runs."""
        self._error_status(exc)
        self.init_failed = True
        self.channel.send(messages.Initialized(
            ok=False, exception=type(exc).__name__, message=str(exc),
            traceback=plugin_traceback(exc, self.plugin_dir)))
        self.request_stop()

    def _restore(self) -> None:
        """Hand the saved snapshot to ``restore()``; a failure is logged, and initialize() runs."""
        state = self.autosaver.state if self.autosaver is not None else None
        if state is None:
            return
        ok, _ = self._guarded("restore", lambda: self.plugin.restore(state),
                              "; the plugin starts without its saved state")
        if ok:
            log.info("restore(): state of the last stop handed to the plugin")

    def _snapshot(self) -> None:
        """Save what ``snapshot()`` returns with the autosaved PVs; a failure or a result that is
        not a JSON object is logged, and the state saved before is kept."""
        saver = self.autosaver
        if saver is None or type(self.plugin).snapshot is PluginBase.snapshot:
            return
        ok, state = self._guarded("snapshot", self.plugin.snapshot, "; the state saved before is kept")
        if not ok:
            return
        problem = state_problem(state)
        if problem is not None:
            log.error("%s; the state saved before is kept", problem)
            return
        saver.set_state(state)

    def _status(self, status: TaskStatus | JobStatus, message: str) -> None:
        self.table.set_status(int(status), message)

    def _initializing_status(self) -> None:
        initial = JobStatus.IDLE if isinstance(self.plugin, JobBase) else TaskStatus.INIT
        self._status(initial, "Initializing")

    def _ready_status(self) -> None:
        plugin = self.plugin
        if isinstance(plugin, JobBase):
            self._status(JobStatus.IDLE, "Ready")
        elif not plugin.enabled:
            self._status(TaskStatus.PAUSED, "Paused (ENABLE=0)")
        elif plugin.mode == "triggered":
            self._status(TaskStatus.INIT, "Ready for trigger")
        else:
            self._status(TaskStatus.RUN, "Running")

    def _task_loop(self, task: TaskBase) -> None:
        task.running = True
        periodic = task.mode in ("continuous", "reactive")  # reactive: counts cycles, no execute()
        interval = self.parameters.interval
        next_due = time.monotonic()
        while not self.stop_requested.is_set():
            now = time.monotonic()
            if periodic and now >= next_due:
                if task.enabled and not self.halted:
                    self._cycle(task)
                next_due += interval
                now = time.monotonic()  # after the cycle, or an overrun is never seen
                if next_due < now:  # fell behind: skip the missed cycles; the wait until
                    next_due = now + interval  # the next one serves the queued events
                continue
            try:
                event = self.events.get(timeout=(next_due - now) if periodic else None)
            except queue.Empty:
                continue
            if event is _STOP:
                break
            self._task_event(task, event)

    def _cycle(self, task: TaskBase) -> None:
        """One period: links polled, transforms and rules applied, then ``execute()``."""
        wiring = self.wiring
        if wiring is not None:
            wiring.poll()
            if task.mode == "continuous" and not self._call("rules", wiring.evaluate):
                return
        if task.mode == "continuous":
            self._execute(task, task.execute)
        else:
            self._count_cycle(task)

    def _task_event(self, task: TaskBase, event: tuple[Any, ...]) -> None:
        what, name, value = event
        wiring = self.wiring
        if what == "conn" and wiring is not None:
            wiring.on_connection(name, value)
        elif what == "link" and wiring is not None:
            old, changed = wiring.on_link_value(name, value)
            if changed and (task.mode == "reactive" or wiring.links.ports[name].trigger):
                new = wiring.get_pv(name)  # in the input's type, as the link's value was converted
                self._call("on_input_changed", lambda: task.on_input_changed(name, new, old))
                if task.mode == "reactive" and task.enabled and not self.halted:
                    self._call("rules", wiring.evaluate)
        elif name == "ENABLE":
            task.enabled = bool(value)
            if wiring is not None:
                wiring.set_enabled(task.enabled)  # paused before PAUSED shows
            if not self.halted:
                self._ready_status()
        elif name == "RUN":
            if value and task.enabled and not self.halted:
                self._status(TaskStatus.RUN, "Running (triggered)")
                if wiring is not None and not self._call("rules", wiring.evaluate):
                    return
                if self._execute(task, task.triggered):
                    self._status(TaskStatus.INIT, "Ready for trigger")
            self.table.set_pv("RUN", 0)
        elif name in ("CLEAR", "RESET"):
            if value:
                self._clear_or_reset(task, name)
            self.table.set_pv(name, 0)
        else:
            if wiring is not None:
                wiring.on_operator_write(name, value)
            self._call("on_input", lambda: task.on_input(name, value))

    def _clear_or_reset(self, task: TaskBase, which: str) -> None:
        """CLEAR releases latched outputs; RESET also restarts CYCLE_COUNT and re-reads every
        link (iocmng 2.7)."""
        if self.wiring is not None:
            self.wiring.clear(retry_dead=which == "CLEAR")
        if which == "RESET":
            task.cycle_count = 0
            self.table.set_pv("CYCLE_COUNT", 0)
            if self.wiring is not None:
                self.wiring.poll(force=True)
            self.table.set_pv("MESSAGE", "Task reset")

    def _count_cycle(self, task: TaskBase) -> None:
        task.cycle_count += 1
        self.table.set_pv("CYCLE_COUNT", task.cycle_count)

    def _execute(self, task: TaskBase, function: Callable[[], None]) -> bool:
        recovering = self.table.status_name() == "ERROR"
        ok = self._call("execute", function)
        if ok:
            self._count_cycle(task)
            if recovering and task.mode == "continuous":
                self._status(TaskStatus.RUN, "Running (recovered)")
        elif task.mode == "continuous" and not self.parameters.retry_on_error:
            self.halted = True
        return ok

    def _job_loop(self, job: JobBase) -> None:
        while True:
            event = self.events.get()
            if event is _STOP:
                return
            if event[0] == "run":
                self._run_job(job, *event[1:])
            else:
                _, name, value = event
                self._call("on_input", lambda: job.on_input(name, value))

    def _run_job(self, job: JobBase, run_id: str, parameters: dict[str, Any], origin: str) -> None:
        base_parameters = job.parameters
        job.parameters = {**base_parameters, **parameters}
        self._status(JobStatus.RUNNING, f"Running {run_id[:12]}")
        outcome, result = "failed", JobResult(success=False, message="did not run")
        self.busy_in, self.busy_since = "execute", time.monotonic()
        try:
            returned = job.execute()
            if not isinstance(returned, JobResult):
                result = JobResult(False, {}, f"execute() returned {type(returned).__name__}, not JobResult")
            else:
                result = returned
                outcome = "succeeded" if result.success else "failed"
            if job.cancel_requested and not result.success:
                outcome = "cancelled"  # a run that returned success did finish: it is not cancelled
        except JobCancelled:
            outcome, result = "cancelled", JobResult(False, {}, "Cancelled")
        except MemoryError:
            exit_out_of_memory("execute()")  # as in _call: at its limit the process cannot carry on
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - plugin code may raise anything
            log.error("execute() raised:\n%s", traceback.format_exc())
            result = JobResult(False, {}, f"{type(exc).__name__}: {exc}")
        finally:
            self.busy_in, self.busy_since = None, None
            job.parameters = base_parameters
        status = JobStatus.SUCCESS if outcome == "succeeded" else JobStatus.FAILED
        self._status(status, result.message or outcome.capitalize())
        payload = json.loads(json.dumps(result.to_dict(), default=repr))
        self.table.set_pv("RUN", 0)
        with self._run_lock:  # finished before the next run can be admitted, in this order
            self.channel.send(messages.RunFinished(run_id=run_id, outcome=outcome, result=payload))  # type: ignore[arg-type]
            self.active_run = None

    def _heartbeat(self) -> None:
        while not self.finished.wait(self.heartbeat_interval):
            since = self.busy_since
            self.channel.send(
                messages.Heartbeat(
                    busy_in=self.busy_in,
                    busy_for=None if since is None else round(time.monotonic() - since, 3),
                    cycles=getattr(self.plugin, "cycle_count", 0),
                )
            )


def plugin_traceback(exc: BaseException, plugin_dir: Path | None) -> str:
    """``exc``'s traceback with the plugin's own frames only (files under ``plugin_dir``), for
    chained exceptions too: not the host's call into it nor library internals, so what an
    operator reads first is the plugin's line. The whole traceback is in the plugin's log."""
    report = traceback.TracebackException.from_exception(exc)
    if plugin_dir is not None:
        root = plugin_dir.resolve()
        seen: set[int] = set()
        pending = [report]
        while pending:
            part = pending.pop()
            if id(part) in seen:
                continue
            seen.add(id(part))
            part.stack = traceback.StackSummary.from_list(
                [frame for frame in part.stack if _inside(frame.filename, root)])
            pending += [chained for chained in (part.__cause__, part.__context__) if chained is not None]
    return "".join(report.format())


def _inside(filename: str, root: Path) -> bool:
    try:
        return Path(filename).resolve().is_relative_to(root)
    except (OSError, ValueError):
        return False
