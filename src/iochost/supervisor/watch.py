"""The daemon's periodic watch: every lifecycle's watchdog tick, the sweep for orphans of
dead workers, the report of dropped plugin log lines, and retrying saves the disk refused."""

from __future__ import annotations

import asyncio
import time

from iochost.errors import IochostError
from iochost.supervisor import lifecycle_types as t
from iochost.supervisor.log_forwarding import LogForwarding
from iochost.supervisor.plugin_table import PluginTable
from iochost.supervisor.shell import Shell
from iochost.supervisor.states import UP

WATCH_PERIOD = 0.5
SWEEP_EVERY = 4  # watch periods between sweeps for orphans of dead workers
STORAGE_RECHECK_EVERY = 4  # watch periods between retries of the registry while the data dir refused a write


class Watch:
    """Runs every ``WATCH_PERIOD`` seconds until cancelled (``run`` is the daemon's watchdog task)."""

    def __init__(self, shell: Shell, table: PluginTable, logs: LogForwarding) -> None:
        self.shell = shell
        self.table = table
        self.logs = logs
        self._rechecking_storage = False

    async def run(self) -> None:
        """Tick every lifecycle (its watchdog); sweep orphans of dead workers; report logs dropped."""
        shell = self.shell
        ticks = 0
        while True:
            await asyncio.sleep(WATCH_PERIOD)
            now = time.monotonic()
            ticks += 1
            self.logs.report_dropped(now)
            if ticks % SWEEP_EVERY == 0:
                await asyncio.to_thread(shell.services.containment.sweep)
            if ticks % STORAGE_RECHECK_EVERY == 0 and not self._rechecking_storage and (
                    shell.storage is not None or any(slot.unsaved for slot in self.table.slots.values())):
                self._rechecking_storage = True
                shell.spawn_task(self._recheck_storage(), "iochost-storage-recheck")
            for slot in self.table.supervised():
                if slot.lc.state in UP:
                    shell.feed(slot, t.Tick())

    async def _recheck_storage(self) -> None:
        """While the data dir refused a write: save the refused Persists again, and write
        the registry, so the daemon sees by itself that space is back (no restart, no request)."""
        shell = self.shell
        try:
            for slot in list(self.table.slots.values()):
                await shell.save_again(slot)
            if shell.storage is not None:
                await asyncio.to_thread(shell.services.registry.flush)
                shell.storage_accepted()
        except IochostError as exc:
            shell.storage_refused(exc)
        finally:
            self._rechecking_storage = False
