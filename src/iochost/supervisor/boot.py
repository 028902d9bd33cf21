"""What the daemon does once at start, after the shell is up: bring back the registry's
plugins in iocmng's start-up order, add the examples, apply the plugins file; then ready."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Awaitable, Callable, Coroutine

from iochost.errors import ErrorCode, IochostError
from iochost.settings import Settings
from iochost.store import DESIRED_RUNNING, DESIRED_STOPPED, PluginSource, Registry, RegistryEntry
from iochost.store.declared import DeclaredNames
from iochost.supervisor import lifecycle_types as t
from iochost.supervisor.adding import AddRequest, Declared, boot_order, declared_change
from iochost.supervisor.operations import PluginOperations
from iochost.supervisor.plugin_table import PluginTable
from iochost.supervisor.shell import Shell
from iochost.supervisor.slots import PluginSlot
from iochost.supervisor.states import UNSETTLED

log = logging.getLogger("iochost.supervisor")


def _error_lines(exc: IochostError) -> str:
    """A failed add's validation errors, one ``; file:line message`` each, for the daemon's log."""
    return "".join(f"; {e.get('file') or ''}:{e.get('line') or ''} {e.get('message')}"
                   for e in exc.details.get("errors") or [])


class Boot:
    """The restore at start and ``ready`` once it is done.

    ``declared``: the plugins file, applied once the registry is restored."""

    def __init__(self, settings: Settings, table: PluginTable, operations: PluginOperations,
                 declared: Declared | None) -> None:
        self.settings = settings
        self.table = table
        self.operations = operations
        self.declared = declared
        self.ready = False  # the registry's plugins are restored and the examples added
        self._ready_event = asyncio.Event()
        self._listening: asyncio.Event | None = None  # set by hold_restore(): restore waits for it

    def hold_restore(self) -> Callable[[], None]:
        """Keep the restore (and the daemon's status IOC) waiting until the returned function
        is called: ``iochost serve`` calls it once its socket listens, so forks and iocInits
        of a large registry do not compete with the API's own startup for the CPU."""
        self._listening = asyncio.Event()
        return self._listening.set

    async def until_ready(self) -> None:
        """Until ``ready``: for work that should not compete with the restore for the CPU."""
        await self._ready_event.wait()

    def entries(self, registry: Registry) -> list[RegistryEntry]:
        """Blocking: the registry's entries as this start brings them back: a plugin the plugins
        file declares takes the file's ``auto_start_on_boot`` and ``autostart_order`` (the file is
        read at every start, as iocmng reads it; saved so the record shows them), and one
        added with ``auto_start_on_boot: false`` that the file does not declare comes back
        stopped (iocmng reloads only the plugins persisted for boot)."""
        requests = {request.name: request for request in self.declared.requests} if self.declared else {}
        entries = []
        for entry in registry.entries():
            request = requests.get(entry.name)
            if request is not None:
                boot = {"auto_start_on_boot": request.auto_start_on_boot, "autostart_order": request.autostart_order}
                if (entry.auto_start_on_boot, entry.autostart_order) != tuple(boot.values()):
                    entry = entry.model_copy(update=boot)
                    try:
                        registry.put(entry)
                    except IochostError as exc:  # the file says it again at the next start
                        log.error("plugins file: %s: its start-up fields are not saved: %s", entry.name, exc.message)
            elif entry.auto_start_on_boot is False and entry.desired_state == DESIRED_RUNNING:
                log.info("%s: not started (auto_start_on_boot false); start it over REST", entry.name)
                entry = entry.model_copy(update={"desired_state": DESIRED_STOPPED})
            entries.append(entry)
        return entries

    async def bring_back_all(self, shell: Shell, slots: list[PluginSlot],
                             start_system: Callable[[], Coroutine[None, None, None]]) -> None:
        """Restore the registry's plugins, two per core at a time (half of a start is EPICS
        sleeping 0.5 s inside iocInit, the rest the plugin's import and records: CPU), then
        add the examples; then ``ready``."""
        if self._listening is not None:
            await self._listening.wait()
        shell.spawn_task(start_system(), "iochost-system")
        gate = asyncio.Semaphore(2 * (os.cpu_count() or 2))

        async def restore(slot: PluginSlot) -> None:
            try:
                async with gate:
                    shell.feed(slot, t.RestoreRequested())
                    await slot.until(lambda lc: lc.state not in UNSETTLED)
            finally:  # deleted before its restore ran: the next in boot order does not wait for it
                slot.claim_done()

        async def add_new(request: AddRequest) -> None:
            async with gate:
                try:
                    await self.operations.add(request)
                except IochostError as exc:
                    log.error("plugins file: %s (new) not applied: %s %s%s", request.name, exc.code.value,
                              exc.message, _error_lines(exc))
                else:
                    log.info("plugins file: %s added", request.name)

        # iocmng's start-up order: each autostart_order starts once the lower ones settled
        # (running, stopped or failed), the plugins without one last; within one order the
        # starts run side by side, launched by name. The file's new entries take their place.
        new = [request for request in self.declared.requests if request.name not in self.table.slots] \
            if self.declared is not None else []
        # The restores claim their PV names one after the other in that order (``PluginSlot.claim_after``):
        # of two registered plugins whose names clash, the first keeps them, whichever checkout is ready first.
        groups: dict[int | None, list[tuple[tuple[int, int, str], Callable[[], Awaitable[None]]]]] = {}
        previous: PluginSlot | None = None
        for slot in sorted(slots, key=lambda slot: boot_order(slot.lc.entry.autostart_order, slot.name)):
            entry = slot.lc.entry
            slot.claimed = asyncio.get_running_loop().create_future()
            slot.claim_after = previous.claimed if previous is not None else None
            groups.setdefault(entry.autostart_order, []).append(
                (boot_order(entry.autostart_order, entry.name), functools.partial(restore, slot)))
            previous = slot
        for request in new:
            groups.setdefault(request.autostart_order, []).append(
                (boot_order(request.autostart_order, request.name), functools.partial(add_new, request)))
        for order in sorted(groups, key=lambda order: boot_order(order, "")):
            starts = sorted(groups[order], key=lambda item: item[0])
            await asyncio.gather(*(start() for _, start in starts))
        if self.settings.examples is not None:
            await self._add_examples(self.settings.examples)
        if self.declared is not None:
            await self._apply_declared(self.declared, applied={request.name for request in new})
        self.ready = True
        self._ready_event.set()
        log.info("restore finished: %d plugin(s) from the registry", len(slots))
        await asyncio.to_thread(shell.services.store.warm_up)

    async def _add_examples(self, folder: Path) -> None:
        async def add(plugin_dir: Path) -> None:
            request = AddRequest(name=plugin_dir.name, source=PluginSource(local_path=str(plugin_dir.resolve())),
                                 trusted=True)
            try:
                await self.operations.add(request)
            except IochostError as exc:
                log.error("example %s not loaded: %s %s", plugin_dir.name, exc.code.value, exc.message)

        await asyncio.gather(*(add(plugin_dir) for plugin_dir in sorted(folder.iterdir())
                               if (plugin_dir / "config.yaml").is_file() and plugin_dir.name not in self.table.slots))

    async def _apply_declared(self, declared: Declared, applied: frozenset[str] | set[str] = frozenset()) -> None:
        """The plugins file: add what the registry lacks; upgrade in place every plugin whose
        entry changed, or whose name an operator's plugin has (its autosaved values, keyed by
        name, stay); leave the rest (plugins added over REST, an operator's stop). A plugin
        whose entry left the file since it was last applied is kept or deleted as
        ``plugins_file_removed`` says. Each entry on its own: one failing stops no other.
        ``applied``: the new entries the start-up order added (or tried to) already."""
        names = DeclaredNames(self.settings.declared_path)
        before = await asyncio.to_thread(names.load)
        operations = self.operations

        async def apply(request: AddRequest) -> None:
            if request.name in applied:
                return
            slot = self.table.slots.get(request.name)
            change = "new" if slot is None else declared_change(slot.lc.entry, request)
            taken_over = slot is not None and request.name not in before  # added over REST (or released)
            if change is None:
                if taken_over:
                    log.info("plugins file: %s taken over as it is", request.name)
                return
            if taken_over:
                change = f"taken over: {change}"
            try:
                if slot is None:
                    await operations.add(request)
                    log.info("plugins file: %s added", request.name)
                    return
                try:
                    await operations.upgrade_to(slot, replace(request, kind=slot.lc.entry.kind))
                except IochostError as exc:
                    if exc.code is not ErrorCode.WRONG_KIND:
                        raise
                    log.warning("plugins file: %s: %s; replacing it (delete, then add)", request.name, exc.message)
                    await operations.remove(request.name)
                    await operations.add(request)
                    log.info("plugins file: %s replaced (%s)", request.name, change)
                    return
                log.info("plugins file: %s upgraded in place (%s)", request.name, change)
            except IochostError as exc:
                log.error("plugins file: %s (%s) not applied: %s %s%s", request.name, change, exc.code.value,
                          exc.message, _error_lines(exc))

        await asyncio.gather(*(apply(request) for request in declared.requests))
        declared_now = declared.names
        if declared_now is None:
            log.warning("plugins file: an entry without a readable name was left out; no plugin counts as "
                        "having left the file this time")
            await self._save_declared(names, before | {request.name for request in declared.requests})
            return
        kept = set(declared_now)
        for name in sorted(before - declared_now):
            if name not in self.table.slots:
                continue
            if self.settings.plugins_file_removed == "keep":
                log.info("plugins file: %s left the file; kept (plugins_file_removed keep): managed over REST "
                         "from now on", name)
                continue
            try:
                await operations.remove(name)
            except IochostError as exc:
                kept.add(name)  # still the file's: tried again at the next start
                log.error("plugins file: %s left the file; not deleted: %s %s", name, exc.code.value, exc.message)
            else:
                log.info("plugins file: %s left the file; deleted (plugins_file_removed delete)", name)
        await self._save_declared(names, kept)

    @staticmethod
    async def _save_declared(names: DeclaredNames, declared: set[str]) -> None:
        try:
            await asyncio.to_thread(names.save, declared)
        except OSError as exc:  # the plugins applied stay; which ones left the file is known at the next start
            log.error("plugins file: cannot save the declared names to %s: %s", names.path, exc)
