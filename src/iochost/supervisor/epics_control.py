"""START / STOP / RESTART from the daemon's own IOC (``--epics-control``): an operator's
write to a control PV runs the REST API's own operation; the outcome goes to CONTROL_MSG,
the log and the event stream (origin ``epics``)."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Awaitable, Callable

from iochost.contract import messages
from iochost.errors import IochostError
from iochost.settings import Settings
from iochost.supervisor.daemon_ioc import CONTROL_VERBS, control_target
from iochost.supervisor.daemon_ioc_sync import DaemonIOCSync
from iochost.supervisor.event_bus import EventBus
from iochost.supervisor.plugin_table import PluginTable
from iochost.supervisor.public import PluginRecord, StreamEvent
from iochost.supervisor.shell import Shell
from iochost.supervisor.slots import PluginSlot

log = logging.getLogger("iochost.supervisor")

Operation = Callable[[str], Awaitable[PluginRecord]]


class EpicsControl:
    """Takes control requests from the daemon IOC's worker only, and carries them out with
    ``operations`` (action -> the operation on a plugin name)."""

    def __init__(self, settings: Settings, table: PluginTable, shell: Callable[[], Shell],
                 operations: dict[str, Operation], daemon_ioc: DaemonIOCSync, bus: EventBus) -> None:
        self.settings = settings
        self.table = table
        self._shell = shell
        self._operations = operations
        self._daemon_ioc = daemon_ioc
        self._bus = bus

    def on_control(self, slot: PluginSlot, request: messages.ControlRequest) -> None:
        """A control request from a worker: only the daemon's own IOC may send one (any
        plugin can write to its own pipe)."""
        if slot is not self.table.system:
            log.warning("%s: control request (%s %r) from a plugin's worker ignored: only the daemon's own "
                        "IOC sends them", slot.name, request.action, request.plugin)
            return
        if not self.settings.epics_control:
            log.warning("control request (%s %r) ignored: --epics-control is off", request.action, request.plugin)
            return
        self._shell().spawn_task(self._control(request), f"iochost-control-{request.action}")

    async def _control(self, request: messages.ControlRequest) -> None:
        """Carry out an operator's START / STOP / RESTART with the REST API's own operations;
        the outcome goes to CONTROL_MSG, the log and the event stream (origin ``epics``)."""
        action = request.action
        try:
            name = control_target(request.plugin)
        except IochostError as exc:  # the whole name or nothing: never a cut or forged one
            log.warning("epics: %s refused: %s %s", action, exc.code.value, exc.message)
            self._report(action, request.plugin, "failed", exc.message, exc.code.value)
            return
        operation = self._operations[action]
        doing, done = CONTROL_VERBS[action]
        log.info("epics: %s %s requested", action, name)
        self._report(action, name, "requested", f"{doing} {name}")
        try:
            record = await operation(name)
        except IochostError as exc:
            log.warning("epics: %s %s refused: %s %s", action, name, exc.code.value, exc.message)
            self._report(action, name, "failed", exc.message, exc.code.value)
        else:
            log.info("epics: %s %s done: %s", action, name, record.state.value)
            self._report(action, name, "done", f"{done} {name}")

    def _report(self, action: str, name: str, phase: str, message: str, code: str | None = None) -> None:
        self._daemon_ioc.report_control(message)
        self._bus.publish(StreamEvent(type="control", plugin=name, at=datetime.now(timezone.utc), data={
            "action": action, "origin": "epics", "phase": phase, "message": message, "code": code}))
