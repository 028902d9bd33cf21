"""A task's life on the plugin thread: its periodic cycles (links polled, rules applied,
``execute()``) and the events other threads queued (operator writes, link values and
connections), one at a time, as iocmng 2.7 runs a task."""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Protocol

from iochost.config import Parameters
from iochost.sdk import TaskBase
from iochost.sdk.status import JobStatus, TaskStatus
from iochost.worker.plugin_events import LinkConnection, LinkValue, PluginEvent, PVWritten, StopPlugin

if TYPE_CHECKING:  # both import softioc's builder and the links' libraries: not at import time
    from iochost.worker.records import PVTable
    from iochost.worker.wiring import Wiring

log = logging.getLogger("iochost.worker")


class LoopHost(Protocol):
    """What a task's loop uses of the ``host.PluginHost`` that runs it (the host imports this
    module, so the loop sees the host through this face)."""

    parameters: Parameters
    table: PVTable
    events: queue.Queue[PluginEvent]
    stop_requested: threading.Event
    halted: bool
    wiring: Wiring | None

    def call_plugin(self, what: str, function: Callable[[], Any]) -> bool: ...

    def set_status(self, status: TaskStatus | JobStatus, message: str) -> None: ...

    def show_ready(self) -> None: ...


class TaskLoop:
    """Runs one task for its ``PluginHost``: plugin calls go through the host (busy time,
    errors as STATUS), so the heartbeat and the supervisor see them as any other."""

    def __init__(self, host: LoopHost, task: TaskBase) -> None:
        self.host = host
        self.task = task

    def run(self) -> None:
        """Until the worker stops: periodic cycles (continuous, reactive) and queued events."""
        task = self.task
        task.running = True
        periodic = task.mode in ("continuous", "reactive")  # reactive: counts cycles, no execute()
        interval = self.host.parameters.interval
        next_due = time.monotonic()
        while not self.host.stop_requested.is_set():
            now = time.monotonic()
            if periodic and now >= next_due:
                if task.enabled and not self.host.halted:
                    self._cycle(task)
                next_due += interval
                now = time.monotonic()  # after the cycle, or an overrun is never seen
                if next_due < now:  # fell behind: skip the missed cycles; the wait until
                    next_due = now + interval  # the next one serves the queued events
                continue
            try:
                event = self.host.events.get(timeout=(next_due - now) if periodic else None)
            except queue.Empty:
                continue
            if isinstance(event, StopPlugin):
                break
            self._event(task, event)

    def _cycle(self, task: TaskBase) -> None:
        """One period: links polled, transforms and rules applied, then ``execute()``."""
        wiring = self.host.wiring
        if wiring is not None:
            wiring.poll()
            if task.mode == "continuous" and not self.host.call_plugin("rules", wiring.evaluate):
                return
        if task.mode == "continuous":
            self._execute(task, task.execute)
        else:
            self._count_cycle(task)

    def _event(self, task: TaskBase, event: PluginEvent) -> None:
        wiring = self.host.wiring
        if isinstance(event, LinkConnection):
            if wiring is not None:
                wiring.on_connection(event.name, event.connected)
        elif isinstance(event, LinkValue):
            if wiring is not None:
                self._link_value(task, wiring, event.name, event.value)
        elif isinstance(event, PVWritten):
            self._operator_write(task, event.name, event.value)
        else:
            log.error("a task got %r, which only a job handles; ignored", event)

    def _link_value(self, task: TaskBase, wiring: Wiring, name: str, value: Any) -> None:
        old, changed = wiring.on_link_value(name, value)
        if changed and (task.mode == "reactive" or wiring.links.ports[name].trigger):
            new = wiring.get_pv(name)  # in the input's type, as the link's value was converted
            self.host.call_plugin("on_input_changed", lambda: task.on_input_changed(name, new, old))
            if task.mode == "reactive" and task.enabled and not self.host.halted:
                self.host.call_plugin("rules", wiring.evaluate)

    def _operator_write(self, task: TaskBase, name: str, value: Any) -> None:
        """An operator's put to one of the task's records."""
        wiring = self.host.wiring
        if name == "ENABLE":
            task.enabled = bool(value)
            if wiring is not None:
                wiring.set_enabled(task.enabled)  # paused before PAUSED shows
            if not self.host.halted:
                self.host.show_ready()
        elif name == "RUN":
            if value and task.enabled and not self.host.halted:
                self.host.set_status(TaskStatus.RUN, "Running (triggered)")
                if wiring is not None and not self.host.call_plugin("rules", wiring.evaluate):
                    return
                if self._execute(task, task.triggered):
                    self.host.set_status(TaskStatus.INIT, "Ready for trigger")
            self.host.table.set_pv("RUN", 0)
        elif name in ("CLEAR", "RESET"):
            if value:
                self._clear_or_reset(task, name)
            self.host.table.set_pv(name, 0)
        else:
            if wiring is not None:
                wiring.on_operator_write(name, value)
            self.host.call_plugin("on_input", lambda: task.on_input(name, value))

    def _clear_or_reset(self, task: TaskBase, which: str) -> None:
        """CLEAR releases latched outputs; RESET also restarts CYCLE_COUNT and re-reads every
        link (iocmng 2.7)."""
        if self.host.wiring is not None:
            self.host.wiring.clear(retry_dead=which == "CLEAR")
        if which == "RESET":
            task.cycle_count = 0
            self.host.table.set_pv("CYCLE_COUNT", 0)
            if self.host.wiring is not None:
                self.host.wiring.poll(force=True)
            self.host.table.set_pv("MESSAGE", "Task reset")

    def _count_cycle(self, task: TaskBase) -> None:
        task.cycle_count += 1
        self.host.table.set_pv("CYCLE_COUNT", task.cycle_count)

    def _execute(self, task: TaskBase, function: Callable[[], None]) -> bool:
        recovering = self.host.table.status_name() == "ERROR"
        ok = self.host.call_plugin("execute", function)
        if ok:
            self._count_cycle(task)
            if recovering and task.mode == "continuous":
                self.host.set_status(TaskStatus.RUN, "Running (recovered)")
        elif task.mode == "continuous" and not self.host.parameters.retry_on_error:
            self.host.halted = True
        return ok
