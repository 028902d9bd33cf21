"""Run a plugin's code on its own thread and keep the default PVs in step with it.

Record callbacks arrive on the cothread dispatcher, supervisor commands on the channel
thread; both only *queue* work here, so plugin code runs on one thread, never
concurrently with itself. A separate heartbeat thread reports how long the current call
has been busy: that is how a plugin stuck in ``execute()`` is seen from outside.
"""

from __future__ import annotations

import functools
import json
import logging
import queue
import threading
import time
import traceback
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from iochost.config import Parameters
from iochost.config.calls import still_unregistered
from iochost.contract import messages
from iochost.rule_language.functions import get_registry
from iochost.sdk import JobBase, JobCancelled, JobResult, TaskBase, hosting
from iochost.sdk.base import PluginBase
from iochost.sdk.status import JobStatus, TaskStatus
from iochost.worker.autosave import state_problem
from iochost.worker.channel import Channel
from iochost.worker.plugin_events import (
    PluginEvent,
    PVWritten,
    RunAdmitted,
    StopPlugin,
)
from iochost.worker.plugin_traceback import plugin_traceback
from iochost.worker.rlimits import exit_out_of_memory
from iochost.worker.task_loop import TaskLoop

if TYPE_CHECKING:  # records imports softioc; the launch template preloads this module without it
    from iochost.worker.autosave import Autosaver
    from iochost.worker.records import PVTable
    from iochost.worker.wiring import Wiring

log = logging.getLogger("iochost.worker")

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
        self.events: queue.Queue[PluginEvent] = queue.Queue()
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
                hosting.cancel_run(self.plugin)
            self.events.put(StopPlugin())

    def on_pv_write(self, name: str, value: Any) -> None:
        """Record callback (cothread dispatcher): queue it for the plugin thread."""
        if isinstance(self.plugin, JobBase) and name == "RUN":
            if value:
                run_id = f"epics-{uuid.uuid4().hex[:12]}"
                if not self.submit_run(run_id, {}, origin="epics"):
                    self.table.set_pv("MESSAGE", f"Busy: run {self.active_run} active")
            return
        self.events.put(PVWritten(name, value))

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
            hosting.rearm_cancel(self.plugin)  # here, not when the run begins: a cancel may come first
            self.channel.send(messages.RunAccepted(run_id=run_id, origin=origin))  # type: ignore[arg-type]
        self.events.put(RunAdmitted(run_id, parameters, origin))
        return True

    def cancel_run(self, run_id: str) -> None:
        if isinstance(self.plugin, JobBase) and self.active_run == run_id:
            hosting.cancel_run(self.plugin)

    # -- the plugin thread ---------------------------------------------------------------
    def _main(self) -> None:
        try:
            self._initializing_status()
            self._restore_snapshot()
            initialized, outcome = self._guarded("initialize", self.plugin.initialize,
                                                 "; the worker runs cleanup() and exits")
            if initialized and self.wiring is not None:  # iocmng lets initialize() register functions
                outcome = still_unregistered(self.wiring.config, get_registry())
                initialized = outcome is None
                if outcome is not None:
                    log.error("%s; the worker runs cleanup() and exits", outcome)
            if not initialized:
                self._initialize_failed(outcome)
                self.call_plugin("cleanup", self.plugin.cleanup)
                return
            self.show_ready()
            if self.wiring is not None:
                self.wiring.start(enabled=getattr(self.plugin, "enabled", True))
            self.channel.send(messages.Initialized(ok=True))
            if isinstance(self.plugin, TaskBase):
                TaskLoop(self, self.plugin).run()
            else:
                self._job_loop(self.plugin)
            if self.wiring is not None:
                self.wiring.close()
            self._save_snapshot()
            self.call_plugin("cleanup", self.plugin.cleanup)
            if isinstance(self.plugin, TaskBase):
                self.plugin.running = False
                self.set_status(TaskStatus.END, "Stopped")
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

    def call_plugin(self, what: str, function: Callable[[], Any]) -> bool:
        """Run plugin code; an exception becomes ERROR/FAILED + MESSAGE, never a crash."""
        ok, outcome = self._guarded(what, function)
        if not ok:
            self._error_status(outcome)
        return ok

    def _error_status(self, exc: BaseException) -> None:
        """STATUS ERROR (a task) or FAILED (a job), MESSAGE "Type: message" (the record keeps
        its start, the supervisor the whole text)."""
        error = TaskStatus.ERROR if isinstance(self.plugin, TaskBase) else JobStatus.FAILED
        self.set_status(error, f"{type(exc).__name__}: {exc}")

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

    def _restore_snapshot(self) -> None:
        """Hand the saved snapshot to ``restore()``; a failure is logged, and initialize() runs."""
        state = self.autosaver.state if self.autosaver is not None else None
        if state is None:
            return
        ok, _ = self._guarded("restore", lambda: self.plugin.restore(state),
                              "; the plugin starts without its saved state")
        if ok:
            log.info("restore(): state of the last stop handed to the plugin")

    def _save_snapshot(self) -> None:
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

    def set_status(self, status: TaskStatus | JobStatus, message: str) -> None:
        """STATUS and MESSAGE, as the plugin and the supervisor see them."""
        self.table.set_status(int(status), message)

    def _initializing_status(self) -> None:
        initial = JobStatus.IDLE if isinstance(self.plugin, JobBase) else TaskStatus.INIT
        self.set_status(initial, "Initializing")

    def show_ready(self) -> None:
        """The STATUS of a plugin waiting for work: a job idle, a task paused, triggered or running."""
        plugin = self.plugin
        if isinstance(plugin, JobBase):
            self.set_status(JobStatus.IDLE, "Ready")
        elif not plugin.enabled:
            self.set_status(TaskStatus.PAUSED, "Paused (ENABLE=0)")
        elif plugin.mode == "triggered":
            self.set_status(TaskStatus.INIT, "Ready for trigger")
        else:
            self.set_status(TaskStatus.RUN, "Running")

    def _job_loop(self, job: JobBase) -> None:
        while True:
            event = self.events.get()
            if isinstance(event, StopPlugin):
                return
            if isinstance(event, RunAdmitted):
                self._run_job(job, event.run_id, event.parameters, event.origin)
            elif isinstance(event, PVWritten):
                self.call_plugin("on_input", functools.partial(job.on_input, event.name, event.value))
            else:
                log.error("a job got %r, which only a task's links send; ignored", event)

    def _run_job(self, job: JobBase, run_id: str, parameters: dict[str, Any], origin: str) -> None:
        base_parameters = job.parameters
        job.parameters = {**base_parameters, **parameters}
        self.set_status(JobStatus.RUNNING, f"Running {run_id[:12]}")
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
        self.set_status(status, result.message or outcome.capitalize())
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
