"""Keeps the daemon's own IOC (``daemon_ioc.py`` says what it serves) in step with the
plugins: starts its worker, owns its table's rows, and sends it the values that changed."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any, Callable

from iochost.config.pvnames import plugin_pv_prefix
from iochost.contract import messages
from iochost.settings import Settings
from iochost.shortages import OUT_OF_SPACE
from iochost.supervisor import lifecycle_types as t
from iochost.supervisor.daemon_ioc import (
    CONTROL_MSG,
    SYSTEM_NAME,
    RowTable,
    daemon_pv_values,
    row_values,
    short_text,
    system_entry,
    write_system_plugin,
)
from iochost.supervisor.lifecycle import PluginLifecycle
from iochost.supervisor.plugin_table import PluginTable
from iochost.supervisor.shell import Shell, clock
from iochost.supervisor.slots import PluginSlot
from iochost.supervisor.states import State

log = logging.getLogger("iochost.supervisor")

SYSTEM_RETRY_MAX = 30.0  # seconds between tries to write the daemon IOC's files on a full disk


class DaemonIOCSync:
    """The daemon IOC's worker (``table.system``), its plugin table and its pushed values.

    Bursts of transitions are coalesced into one ``set_pvs`` per loop turn, holding only the
    values that changed since that worker started (a new worker starts from config.yaml's)."""

    def __init__(self, settings: Settings, table: PluginTable, degraded: Callable[[], bool]) -> None:
        self.settings = settings
        self.table = table
        self._degraded = degraded
        self._rows = RowTable(settings.epics_table_rows)
        self._control_message = ""  # CONTROL_MSG: the outcome of the last control request
        self._pushed: dict[str, Any] = {}  # the values the status IOC has, to send only changes
        self._pushed_to: object | None = None  # ... of that worker process
        self._push_pending = False

    async def start(self, shell: Shell, started_at: datetime, timings: t.Timings) -> None:
        """Start {PREFIX}:IOCHOST:*, its records generated from the settings; a failure is
        logged, never fatal to the daemon. A data dir with no room for its files (a full
        disk) is retried with backoff until it has: the daemon recovers by itself."""
        delay = 1.0
        while True:
            try:
                plugin_dir = await asyncio.to_thread(write_system_plugin, self.settings)
                break
            except OSError as exc:
                if exc.errno not in OUT_OF_SPACE:
                    raise
                log.error("the daemon's own IOC cannot be written to %s: %s; retried in %g s",
                          self.settings.data_dir / "system", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, SYSTEM_RETRY_MAX)
        lc = PluginLifecycle(system_entry(started_at, plugin_dir),
                             plugin_pv_prefix(self.settings.prefix, SYSTEM_NAME), timings, self.settings.runs_kept,
                             clock(), shell.daemon_limits)
        self.table.system = PluginSlot(lc)
        shell.feed(self.table.system, t.Restored(plugin_dir))

    def table_rows(self) -> dict[str, int]:
        """Plugin name -> its row n in the daemon IOC's table (``{PREFIX}:IOCHOST:ROWnnn:*``)."""
        return self._rows.rows()

    def appear(self, name: str) -> None:
        """A plugin's slot appeared: it takes a row (pushed with the next ``schedule_push``)."""
        self._rows.appear(name)

    def release(self, name: str) -> None:
        """A plugin was forgotten (deleted): its row is free (pushed with the next ``schedule_push``)."""
        self._rows.release(name)

    def report_control(self, message: str) -> None:
        """The outcome of the last control request, for CONTROL_MSG."""
        self._control_message = message
        self.schedule_push()

    def schedule_push(self) -> None:
        """Coalesce bursts of transitions into one set_pvs per loop turn."""
        if not self._push_pending:
            self._push_pending = True
            asyncio.get_running_loop().call_soon(self._push)

    def _push(self) -> None:
        self._push_pending = False
        system = self.table.system
        if system is None or system.worker is None or system.lc.state != State.RUNNING:
            return
        if system.worker is not self._pushed_to:  # a new status IOC starts from config.yaml's values
            self._pushed, self._pushed_to = {}, system.worker
        slots = self.table.slots.values()
        values = daemon_pv_values([(slot.name, slot.lc.state) for slot in slots], self._degraded())
        plugins = {slot.name: (slot.lc.entry.kind, slot.lc.state) for slot in slots}
        values.update(row_values(self._rows.rows(), plugins, self._rows.size))
        if self.settings.epics_control:
            values[CONTROL_MSG] = short_text(self._control_message)
        changed = {name: value for name, value in values.items() if self._pushed.get(name, object()) != value}
        if changed:
            system.worker.send(messages.SetPVs(values=changed))
            self._pushed.update(changed)
